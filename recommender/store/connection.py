"""Connections to Redis: one client per process with short timeouts and bounded retries (a single server's
pool, or redis-py's cluster client), the request path's own per-thread connections, atomic groups of
writes, and the one place where Redis errors become the domain's StoreUnavailableError.

``REDIS_URL`` selects the kind: ``redis://``, ``rediss://`` or ``unix://`` one server (redis.Redis on one
ConnectionPool); ``redis+cluster://host:port[,host:port...]`` (or ``rediss+cluster://``) a Redis Cluster
reached through any of the listed nodes (redis.cluster.RedisCluster, which follows MOVED and ASK
redirections and refreshes its slot map on them). Everything else in the store is written once for both:
:func:`is_cluster`, :func:`primaries`, :func:`run_atomic` and :class:`ThreadConnections` hide the difference.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

import hiredis
import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AskError, ClusterDownError, ClusterError, MovedError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisClusterException, ResponseError, SlotNotCoveredError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..errors import StoreUnavailableError
from .keys import slot_of

F = TypeVar("F", bound=Callable[..., Any])

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
#: errors that mean "the store cannot answer now": a node unreachable or silent, a reply that is not
#: Redis's, and a cluster that is failing over or resharding (CLUSTERDOWN, TRYAGAIN, a slot no node serves,
#: redirections that never settle). An error reply about the data itself (WRONGTYPE) is none of these.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, InvalidResponse, ClusterDownError, TryAgainError,
               SlotNotCoveredError, ClusterError)


def store_errors(function: F) -> F:
    """Turn Redis being unreachable (connection, timeout, a reply that is not Redis's, a cluster that is
    down, failing over or redirecting without end) into StoreUnavailableError.

    The one place Redis errors are wrapped: every store, job and pointer operation is decorated with it,
    so callers catch one domain type. An error reply (WRONGTYPE on a key someone wrote by hand, say) is
    not unavailability and passes through as redis's ResponseError. The first argument (a store) names
    the server in the message.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        """Call the function; re-raise Redis failures as the domain error."""
        try:
            return function(*args, **kwargs)
        # InvalidResponse too: a URL that points at something that is not Redis (a proxy, another
        # service) leaves the store just as unusable as a closed port
        except UNAVAILABLE as exc:
            address = getattr(args[0], "address", "?") if args else "?"
            raise StoreUnavailableError(
                f"feature store unavailable: Redis at {address} did not answer {function.__name__}() "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    return wrapper  # type: ignore[return-value]


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return isinstance(url, str) and url.startswith(CLUSTER_SCHEMES)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """``[(host, port), ...]`` and the connection options (username, password, ssl) of a cluster URL.

    ``redis+cluster://[user:password@]host:port[,host:port...][/0]``; any node of the cluster will do, more
    are tried in turn when the first is down. TLS: ``rediss+cluster://``.

    Raises
    ------
    ValueError
        Not a cluster URL, no node, a node without a valid port, or a database other than 0.
    """
    if not is_cluster_url(url):
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://host:port[,host:port...]): {url!r}")
    scheme, rest = url.split("://", 1)
    parts = urlsplit("redis://" + rest)
    if parts.path not in ("", "/", "/0") or parts.query or parts.fragment:
        raise ValueError(f"a Redis Cluster URL names nodes only (a cluster has database 0 alone): {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    options: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if scheme.startswith("rediss"):
        options["ssl"] = True
    nodes = []
    for node in hosts.split(","):
        host, sep, port = node.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"every node of a Redis Cluster URL must be host:port, got {node!r} in {url!r}")
        nodes.append((host, int(port)))
    return nodes, options


def connect(url: str, *, socket_timeout: float = 0.5, connect_timeout: float = 0.5, retries: int = 2,
            max_connections: int = 50, health_check_interval: float = 30, **pool_kwargs: Any):
    """A client (``decode_responses=True``) with short timeouts and a bounded exponential-backoff retry.

    Parameters
    ----------
    url : str
        ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix://...`` for one server (a
        :class:`redis.Redis` on one connection pool); ``redis+cluster://host:port[,host:port...]`` for a
        Redis Cluster (a :class:`ClusterClient`: redis-py's RedisCluster, built on first use so that the
        process starts while the cluster is down).
    socket_timeout, connect_timeout : float
        Seconds before a command or a connection attempt fails (then it is retried).
    retries : int
        Retries after the first failure, with exponential backoff from 10 ms capped at 200 ms (on a
        cluster: retries of a command after a connection error, each after refreshing the slot map).
    max_connections : int
        Size limit of the pool (per node on a cluster; one per concurrent request thread is enough).
    health_check_interval : float
        Seconds a pooled connection may idle before it is PINGed ahead of its next command (0 = never).
        The PING has its own retries, so against a server that accepts connections but does not
        answer, a call fails only after about ``(retries + 1) ** 2 * socket_timeout`` (~4.8 s with the
        defaults) instead of ``(retries + 1) * socket_timeout`` with 0; a refused connection fails
        within milliseconds either way.
    **pool_kwargs
        Passed to :meth:`redis.ConnectionPool.from_url` (or the cluster client's nodes), e.g.
        ``protocol=2`` for a server older than Redis 6 (redis-py 8 speaks RESP3 by default).

    Raises
    ------
    ValueError
        A URL redis-py cannot parse, or negative limits.
    """
    if retries < 0 or max_connections < 1 or socket_timeout <= 0 or connect_timeout <= 0 \
            or health_check_interval < 0:
        raise ValueError("retries must be >= 0, max_connections >= 1, timeouts > 0 and "
                         "health_check_interval >= 0")
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.01), retries)
    if is_cluster_url(url):
        nodes, options = parse_cluster_url(url)
        kwargs = dict(decode_responses=True, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                      health_check_interval=health_check_interval, max_connections=max_connections,
                      **options, **pool_kwargs)
        return ClusterClient(nodes, retry, kwargs)
    pool = redis.ConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        # retry_on_timeout is deprecated in redis-py >= 6; listing both errors here is equivalent
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=health_check_interval,
        max_connections=max_connections,
        **pool_kwargs,
    )
    return redis.Redis(connection_pool=pool)


class ClusterClient:
    """redis-py's :class:`~redis.cluster.RedisCluster`, built on first use and rebuilt until that succeeds.

    RedisCluster reads the slot map when it is constructed and raises if no listed node answers; building
    it lazily keeps the contract of the single-server client (a process starts while Redis is down and
    connects when Redis is back). Every attribute is the RedisCluster's; a failed construction raises
    redis's ConnectionError (so :func:`store_errors` reports the store unavailable) and is retried on the
    next use (:meth:`resolve` returns it). ``connection_kwargs`` and ``nodes`` are known without connecting.
    """

    def __init__(self, nodes: list[tuple[str, int]], retry: Retry, kwargs: dict[str, Any]):
        self.nodes = nodes
        self.retry = retry
        self.connection_kwargs = kwargs
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """The startup nodes, for messages."""
        return "cluster " + ",".join(f"{h}:{p}" for h, p in self.nodes)

    @property
    def built(self) -> bool:
        """True once the RedisCluster exists."""
        return self._client is not None

    def resolve(self):
        """The RedisCluster (built now if needed); redis's ConnectionError if no node answers."""
        client = self._client
        if client is not None:
            return client
        from redis.cluster import ClusterNode, RedisCluster

        with self._lock:
            if self._client is None:
                try:
                    # require_full_coverage=False: during a failover a slot may have no master for a few
                    # seconds; the client must keep serving the others (a read of that slot then fails)
                    self._client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self.nodes],
                                                retry=self.retry,
                                                require_full_coverage=False, **self.connection_kwargs)
                except RedisClusterException as exc:
                    raise RedisConnectionError(f"no node of {self.address} answered: {exc}") from exc
            return self._client

    def close(self) -> None:
        """Disconnect every node's pool (the client reconnects on its next use)."""
        if self._client is not None:
            self._client.disconnect_connection_pools()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)


def is_cluster(client: Any) -> bool:
    """True if ``client`` speaks to a Redis Cluster."""
    return isinstance(client, ClusterClient)


def connection_kwargs(client: Any) -> dict[str, Any]:
    """The options every connection of ``client`` is made with (decode_responses, timeouts, protocol, ...)."""
    if is_cluster(client):
        return client.connection_kwargs
    return client.connection_pool.connection_kwargs


def address_of(client: Any) -> str:
    """host:port (or the socket path, or the cluster's startup nodes) of a client's server, for messages."""
    if is_cluster(client):
        return client.address
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def disconnect(client: Any) -> None:
    """Close every pooled connection of ``client`` (it reconnects on its next use)."""
    if is_cluster(client):
        client.close()
    else:
        client.connection_pool.disconnect()


def primaries(client: Any) -> list[redis.Redis]:
    """A client per master: ``[client]`` for one server; each master's own client on a cluster (for
    per-node work: tracking, statistics, tests). Connects a cluster client if needed."""
    if not is_cluster(client):
        return [client]
    cluster = client.resolve()
    return [cluster.get_redis_connection(node) for node in cluster.get_primaries()]


def new_connection(node_client: redis.Redis) -> redis.connection.AbstractConnection:
    """A fresh connection (outside any pool) to the server of a one-server client, with its options."""
    pool = node_client.connection_pool
    return pool.connection_class(**pool.connection_kwargs)


def node_connection(client: Any, host: str, port: int) -> redis.connection.AbstractConnection:
    """A fresh connection (outside any pool) to one node of a cluster client, with the client's options
    (timeouts, credentials, TLS, protocol); the node need not be one the client knows yet."""
    kwargs = dict(connection_kwargs(client))
    kwargs.pop("max_connections", None)
    use_ssl = kwargs.pop("ssl", False)
    cls = redis.connection.SSLConnection if use_ssl else redis.connection.Connection
    return cls(host=host, port=port, **kwargs)


def run_atomic(client: Any, commands: Sequence[tuple]) -> list[Any]:
    """Run raw commands (``("HSET", key, field, value)``, ...) atomically per slot; returns their replies.

    On one server the whole list is one MULTI/EXEC. On a cluster, the commands whose first key shares a
    slot form one MULTI/EXEC each (in the order their slots first appear): atomic per slot, not across
    slots. A command's keys must share a slot. Errors as redis-py raises them (wrap with store_errors).
    """
    if not commands:
        return []
    if not is_cluster(client):
        with client.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute()
    groups: dict[int, list[int]] = {}
    for index, command in enumerate(commands):
        groups.setdefault(slot_of(command[1]), []).append(index)
    replies: list[Any] = [None] * len(commands)
    for indexes in groups.values():
        try:
            with client.pipeline(transaction=True) as pipe:
                for index in indexes:
                    pipe.execute_command(*commands[index])
                for index, reply in zip(indexes, pipe.execute()):
                    replies[index] = reply
        except (RedisConnectionError, RedisTimeoutError):
            # redis-py's cluster transactions re-read the slot map only after several failures of the same
            # pipeline object; without this a dead master's slots would keep failing after its failover
            refresh_slot_map(client)
            raise
    return replies


_last_refresh: dict[int, float] = {}
_refresh_lock = threading.Lock()


def refresh_slot_map(client: Any, min_interval: float = 0.2) -> None:
    """Re-read a cluster client's slot map (CLUSTER SLOTS) after a failure, at most every ``min_interval``
    seconds per client (many threads failing at once read it once); best effort, never raises."""
    if not is_cluster(client):
        return
    now = time.monotonic()
    with _refresh_lock:
        if now - _last_refresh.get(id(client), 0.0) < min_interval:
            return
        _last_refresh[id(client)] = now
    try:
        client.resolve().nodes_manager.initialize()
    except Exception:  # noqa: BLE001 - the caller reports its own failure; the map is refreshed next time
        pass


class LuaScript:
    """A Lua script run with EVALSHA (loaded on NOSCRIPT), on one server or a cluster, alone or pipelined.

    Unlike redis-py's ``register_script`` it needs no connection to be built (a cluster client connects
    lazily) and it runs many calls in one cluster pipeline (one round trip per node), loading the script on
    every master when one answers NOSCRIPT (a new master after a failover, a restarted node). NOSCRIPT means
    the call did not run, so running it again is safe.
    """

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call (routed by its keys, which must share a slot on a cluster)."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)  # on a cluster: every master
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def many(self, client: Any, calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
             connections: "ThreadConnections | None" = None) -> list[Any]:
        """Several calls, pipelined (per node on a cluster); their replies in order. Each call's keys share a
        slot. A call that raised after its retries has its exception in its place (``raise_on_error`` off),
        so the caller decides; NOSCRIPT calls are loaded and run again here.

        On a cluster, with ``connections`` (the store's), each node's calls are first sent pre-packed in one
        write on this thread's connection to it (:meth:`_many_direct`); only the calls that come back
        redirected (a slot moved) or whose node failed go through redis-py's cluster pipeline, which
        follows redirects and retries. A call whose reply was lost runs again there, as on any retry of
        redis-py's pipeline: a guarded log write answers its guard instead; user-side writes (set additions,
        the recent set) and feature hashes are applied again.
        """
        if not calls:
            return []
        if len(calls) == 1:
            keys, args = calls[0]
            try:
                return [self(client, keys, args)]
            except ResponseError as exc:
                if isinstance(exc, UNAVAILABLE):
                    raise
                return [exc]
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        cluster = client.resolve() if is_cluster(client) else None
        if cluster is not None and connections is not None:
            pending = self._many_direct(client, cluster, calls, connections, results)
        for attempt in range(2 if pending else 0):
            with client.pipeline(transaction=False) as pipe:
                for index in pending:
                    keys, args = calls[index]
                    if cluster is None:
                        pipe.evalsha(self.sha, len(keys), *keys, *args)
                    else:  # routed here: redis-py would ask a server (COMMAND GETKEYS) for every call's keys
                        node = cluster.nodes_manager.get_node_from_slot(slot_of(keys[0]))
                        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, target_nodes=node)
                replies = pipe.execute(raise_on_error=False)
            for index, reply in zip(pending, replies):
                results[index] = reply
            pending = [i for i in pending if isinstance(results[i], NoScriptError)]
            if not pending:
                break
            client.script_load(self.source)
        for reply in results:  # unavailability is the store's to report, not a per-call outcome
            if isinstance(reply, UNAVAILABLE):
                raise reply
        return results

    def _many_direct(self, client: Any, cluster: Any, calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
                     connections: "ThreadConnections", results: list[Any]) -> list[int]:
        """Each node's calls packed by hiredis and written on this thread's connection to the node (every
        node written before any is read, so the servers work at once), the replies put in ``results``;
        NOSCRIPT calls loaded and sent again once. redis-py's cluster pipeline encodes and routes every
        command in Python: with one call per user slot that was ~2/3 of a bulk interaction load's client CPU.

        Returns the indices left for the pipeline: redirected (MOVED, which also corrects the slot map; ASK),
        TRYAGAIN, in a slot the map does not cover (the map is then re-read), or unanswered on a node whose
        connection failed (dropped, and the map re-read); the replies read before a failure are kept.
        """
        manager = cluster.nodes_manager
        by_node: dict[str, tuple[Any, list[int]]] = {}
        left: list[int] = []
        for index, (keys, _) in enumerate(calls):
            try:
                node = manager.get_node_from_slot(slot_of(keys[0]))
            except SlotNotCoveredError:
                left.append(index)
                continue
            by_node.setdefault(node.name, (node, []))[1].append(index)
        if left:
            refresh_slot_map(client)
        groups = list(by_node.values())
        for attempt in range(2):
            sent = []
            for node, indices in groups:  # write everything first
                conn = connections.get(node)
                try:
                    conn.send_packed_command(self._packed(calls, indices), check_health=False)
                except (RedisConnectionError, RedisTimeoutError):
                    conn.disconnect()
                    left += indices
                    continue
                except BaseException:
                    conn.disconnect()
                    raise
                sent.append((conn, indices))
            noscript: dict[str, tuple[Any, list[int]]] = {}
            for conn, indices in sent:  # then read each node's replies, in order
                for n, index in enumerate(indices):
                    try:
                        results[index] = conn.read_response()
                    except ResponseError as exc:
                        results[index] = exc
                    except (RedisConnectionError, RedisTimeoutError):
                        conn.disconnect()  # unread replies would be taken for the next call's
                        left += indices[n:]
                        break
                    except BaseException:
                        conn.disconnect()
                        raise
            if left and attempt == 0:
                refresh_slot_map(client)
            for node, indices in groups:
                missing = [i for i in indices if isinstance(results[i], NoScriptError)]
                if missing:
                    noscript[node.name] = (node, missing)
            if not noscript:
                break
            if attempt == 0:
                client.script_load(self.source)  # every master; then those calls once more
            groups = list(noscript.values())
        for index, reply in enumerate(results):
            if isinstance(reply, MovedError):  # the slot has a new owner: correct the map for the pipeline
                manager.move_slot(reply)
            if isinstance(reply, (AskError, TryAgainError, NoScriptError)):  # MovedError is an AskError
                left.append(index)
        return sorted(set(left))

    def _packed(self, calls: Sequence[tuple[Sequence[str], Sequence[Any]]], indices: list[int],
                piece: int = 65536) -> list[bytes]:
        """EVALSHA commands of the calls at ``indices``, RESP-encoded by hiredis (byte for byte what redis-py's
        encoder makes of str, int and float), in pieces of about ``piece`` bytes: the socket timeout applies
        to each piece written, as in redis-py's own pipeline, not to a whole node's batch."""
        pieces: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        for index in indices:
            keys, args = calls[index]
            command = hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
            chunk.append(command)
            size += len(command)
            if size >= piece:
                pieces.append(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            pieces.append(b"".join(chunk))
        return pieces


class ThreadConnections:
    """One connection per calling thread (per node, on a cluster), outside the pool, for the request path's
    pre-packed reads.

    redis-py's pool and pipeline cost ~65 us of client CPU per request read; a connection owned by the
    thread, written with one pre-packed buffer and read reply by reply, costs ~45 us less. Timeouts and
    the retry policy are the pool's.

    On a cluster, :meth:`call` sends the commands (whose keys must share a slot) to the master of that slot
    in redis-py's slot map, in one write: still one round trip. A MOVED reply (the slot moved: resharding,
    failover) updates the map and sends them again to the new owner; ASK replies (the slot is migrating and
    those keys already left) send just those commands on to the target, each after ASKING; a connection
    error refreshes the whole map (CLUSTER SLOTS) before the retry.
    """

    MAX_REDIRECTS = 5

    def __init__(self, client: Any):
        self.client = client
        self.cluster = is_cluster(client)
        kwargs = connection_kwargs(client)
        self.retry = (client.retry if self.cluster else kwargs.get("retry")) \
            or Retry(ExponentialBackoff(cap=0.2, base=0.01), 2)
        self._local = threading.local()
        self._all: weakref.WeakSet = weakref.WeakSet()  # every thread's connections, for close()
        self._all_lock = threading.Lock()  # a WeakSet must not change while close() copies it

    def get(self, node: Any = None) -> redis.connection.AbstractConnection:
        """This thread's own connection (to ``node``, a ClusterNode, on a cluster; created on first use,
        reconnects by itself)."""
        if self._local.__dict__.get("pid") != os.getpid():  # new thread, or a forked child of the creator
            self._local.pid = os.getpid()
            self._local.conns = {}
        conns = self._local.conns
        name = node.name if node is not None else ""
        conn = conns.get(name)
        if conn is None:
            if node is None and self.cluster:
                raise ValueError("a cluster connection needs its node")
            source = self.client if node is None else self.client.get_redis_connection(node)
            conn = conns[name] = new_connection(source)
            with self._all_lock:
                self._all.add(conn)
        return conn

    def for_key(self, key: str) -> redis.connection.AbstractConnection:
        """This thread's connection to the server (the master, on a cluster) that serves ``key``."""
        if not self.cluster:
            return self.get()
        return self.get(self.client.resolve().nodes_manager.get_node_from_slot(slot_of(key)))

    def call(self, commands: Sequence[tuple[str, ...]], slot_key: str | None = None) -> list[Any]:
        """Send commands in one write on this thread's connection and read their replies, with retries.

        ``slot_key`` (a key of the commands) picks the node on a cluster. An error reply raises (redis's
        ResponseError) after every reply was read, so the connection stays usable.
        """
        packed = pack(*commands)
        if not self.cluster:
            conn = self.get()
            return self.retry.call_with_retry(lambda: _read_replies(conn, packed, len(commands)),
                                              _drop_connection(conn))
        slot = slot_of(slot_key if slot_key is not None else commands[0][1])
        state: dict[str, Any] = {}
        return self.retry.call_with_retry(lambda: self._cluster_call(slot, commands, packed, state),
                                          lambda error: self._after_failure(state))

    def _cluster_call(self, slot: int, commands: Sequence[tuple], packed: list[bytes], state: dict) -> list[Any]:
        cluster = self.client.resolve()
        for _ in range(self.MAX_REDIRECTS):
            node = cluster.nodes_manager.get_node_from_slot(slot)
            conn = state["conn"] = self.get(node)
            replies = _read_replies(conn, packed, len(commands), raise_errors=False)
            moved = next((r for r in replies if isinstance(r, MovedError)), None)
            if moved is not None:  # the slot has a new owner: update the map, send everything there
                cluster.nodes_manager.move_slot(moved)
                continue
            asked = [i for i, r in enumerate(replies) if isinstance(r, AskError)]
            if asked:  # a migrating slot: the keys that already left are read on the importing node
                target = replies[asked[0]]
                node = cluster.nodes_manager.get_node(host=target.host, port=target.port)
                if node is None:  # a node this client has not met yet
                    cluster.nodes_manager.initialize()
                    node = cluster.nodes_manager.get_node(host=target.host, port=target.port)
                if node is None:
                    raise TryAgainError(f"ASK to unknown node {target.host}:{target.port}")
                conn = state["conn"] = self.get(node)
                again = [c for i in asked for c in (("ASKING",), commands[i])]
                answers = _read_replies(conn, pack(*again), len(again), raise_errors=False)
                for i, answer in zip(asked, answers[1::2]):
                    replies[i] = answer
                if any(isinstance(r, AskError) for r in replies):
                    continue
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies
        raise ClusterError(f"slot {slot}: still redirected after {self.MAX_REDIRECTS} tries")

    def _after_failure(self, state: dict) -> None:
        """A connection error or timeout: drop the connection and re-read the slot map (at most every 0.2 s
        per process: many threads failing at once read it once)."""
        conn = state.get("conn")
        if conn is not None:
            conn.disconnect()
        refresh_slot_map(self.client)

    def close(self) -> None:
        """Disconnect every thread's connections (each reconnects on its next use)."""
        with self._all_lock:
            conns = list(self._all)
        for conn in conns:
            conn.disconnect()


def _read_replies(conn: redis.connection.AbstractConnection, packed: list[bytes], replies: int,
                  raise_errors: bool = True) -> list[Any]:
    """Send pre-packed commands and read their replies.

    Every reply is read, error replies too (so the connection stays in step); the first error reply is
    raised afterwards, or left in its place with ``raise_errors=False``. Connection and timeout errors
    propagate to the retry (which disconnects); anything else (a parse error) drops the connection.
    """
    try:
        conn.send_packed_command(packed, check_health=False)
        out = []
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except ResponseError as exc:
                out.append(exc)
    except (RedisConnectionError, RedisTimeoutError):
        raise
    except BaseException:
        conn.disconnect()
        raise
    if raise_errors:
        for reply in out:
            if isinstance(reply, ResponseError):
                raise reply
    return out


def _drop_connection(conn: redis.connection.AbstractConnection) -> Callable[[Exception], None]:
    """Failure handler of a retried call: disconnect, so that the next try reconnects."""
    return lambda error: conn.disconnect()


def pack(*commands: Iterable[str]) -> list[bytes]:
    """RESP encoding of several commands as one buffer (arguments are str, encoded as UTF-8)."""
    out = []
    for command in commands:
        command = tuple(command)
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return [b"".join(out)]

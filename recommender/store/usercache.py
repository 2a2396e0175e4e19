"""A per-process cache of user records, kept coherent by Redis (server-assisted client-side caching).

Every ``GET /recommend`` reads the user's features and seen items from Redis. The round trip (client,
kernel and server CPU) was a quarter of the endpoint's cost in scripts/bench_http.py. This cache keeps
recent answers of :meth:`RedisFeatureStore.get_user` in the process and drops an entry as soon as
Redis reports that one of its keys changed:

- One connection per master (one, on a single Redis) runs ``CLIENT TRACKING on REDIRECT <itself> BCAST
  PREFIX <prefix>user:`` and ``SUBSCRIBE __redis__:invalidate``: each master then sends the name of every
  key under the prefix that any client modifies, deletes, expires or evicts on it (the feature hash and
  the seen set of a user both live there), or a null for FLUSHDB/FLUSHALL. Writes by other processes,
  scripts and Lua included; on a cluster, keys moved in or out of a master by a resharding too (the
  migration deletes them on one master and writes them on the other).
- Before each lookup the calling thread applies whatever invalidations are already in those sockets'
  buffers (one ``poll`` of all of them, and a non-blocking ``recv`` of those that have data), and a
  background thread applies them while the process is idle. A write acknowledged to its writer is
  therefore seen by the next request in every process, as long as Redis's invalidation reached the socket
  before that request: on one host this always holds for a request caused by the write's reply (the
  master that executed the write sends it in the same event-loop pass as the reply); across hosts the
  window is the difference of two network paths.
- A fetch stores its answer only if no invalidation of that user (or of everything) arrived while it
  was in flight, so a read that raced a write cannot leave a stale entry behind.
- While any invalidation connection is down, or silent beyond its health check (each is PINGed every
  second), the cache is empty and bypassed: every lookup goes to Redis, as without a cache. On a Redis
  Cluster the background thread also reads the slot map (CLUSTER SLOTS) every second: when the set of
  masters changes (a failover, a master added or removed) tracking is torn down and set up again on the
  new masters, the cache empty and bypassed in between; when only slots move between tracked masters (a
  resharding) the cache is emptied. Entries also expire after ``ttl`` seconds, a bound on staleness should
  everything else fail (e.g. an old master that lost its slots yet stays reachable from this process
  while another process writes to the new owner before this one's next slot-map read).

Needs Redis >= 6 (CLIENT TRACKING). redis-py's own client-side cache needs Redis >= 7.4 and RESP3.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import hiredis
from cachetools import TTLCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..features import check_id
from .connection import connection_kwargs, is_cluster, new_connection, node_connection
from .feature_store import RedisFeatureStore, UserRecord

log = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"
PING = b"*1\r\n$4\r\nPING\r\n"


@dataclass
class _Tracker:
    """One invalidation connection (to one master)."""

    name: str  # host:port, for messages
    conn: Any  # the redis-py connection that owns the socket (auth, TLS, reconnects)
    sock: socket.socket
    reader: Any
    last_heard: float


class UserCache:
    """``get_user`` with a per-process cache in front of a :class:`RedisFeatureStore`.

    Parameters
    ----------
    store : RedisFeatureStore
        Where misses are read from, and whose connection settings the invalidation connections use.
    maxsize : int
        Users kept (least recently used are dropped first), > 0.
    ttl : float
        Seconds an entry may be served, > 0; a bound on staleness if invalidations were ever lost.
    ping_interval : float
        Seconds between health-check PINGs on the invalidation connections (and, on a cluster, slot-map
        reads); after three intervals without any message from a master its connection is considered dead
        and the cache is bypassed.
    retry_interval : float
        Seconds between attempts to re-establish tracking after a failure.
    on_lookup : callable, optional
        Called with "hit", "miss" or "bypass" after each lookup (metrics).
    """

    def __init__(self, store: RedisFeatureStore, maxsize: int = 10_000, ttl: float = 300.0, *,
                 ping_interval: float = 1.0, retry_interval: float = 1.0,
                 on_lookup: Callable[[str], None] | None = None):
        if maxsize < 1 or ttl <= 0 or ping_interval <= 0 or retry_interval <= 0:
            raise ValueError("maxsize must be >= 1 and ttl, ping_interval and retry_interval > 0")
        self.store = store
        self.ttl = ttl
        self.ping_interval = ping_interval
        self.retry_interval = retry_interval
        self._entries: TTLCache = TTLCache(maxsize, ttl, timer=time.monotonic)
        self._lock = threading.Lock()
        self._user_prefix = store.keys.user_prefix
        self._cluster = is_cluster(store.client)
        self._trackers: list[_Tracker] | None = None  # the invalidation connections, when tracking is live
        self._by_fd: dict[int, _Tracker] = {}
        self._poll: Any = None  # select.poll() on every tracker's socket
        self._slots: tuple | None = None  # the cluster's slot map as last read: ((start, end, master), ...)
        self._topology: Any = None  # (host, port, connection) the background thread reads the slot map on
        self._epoch = 0  # bumped when everything is invalidated (flush, lost connection, topology change)
        self._inflight: dict[str, int] = {}  # user -> fetches in flight
        self._dirty: set[str] = set()  # users invalidated while a fetch of theirs was in flight
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hits = self.misses = self.bypasses = self.invalidations = 0
        self._on_lookup_callback = on_lookup

    # ------------------------------------------------------------------ request path

    def _on_lookup(self, result: str) -> None:
        """The metrics callback; its failure must not fail a lookup."""
        if self._on_lookup_callback is not None:
            try:
                self._on_lookup_callback(result)
            except Exception:  # noqa: BLE001
                log.debug("user cache: lookup callback failed", exc_info=True)

    @property
    def live(self) -> bool:
        """True while invalidations are being received from every master (the cache is in use)."""
        return self._trackers is not None

    @property
    def _sock(self) -> socket.socket | None:
        """The invalidation socket of a single Redis (tests), None when tracking is down."""
        trackers = self._trackers
        return trackers[0].sock if trackers else None

    def get_user(self, user_id: str) -> UserRecord:
        """Like :meth:`RedisFeatureStore.get_user` (same answers, same errors), from the cache when possible.

        Returns fresh containers: callers may modify them. A record that is (now) in the cache carries
        its entry's ``memo`` dict (see UserRecord), shared by every lookup until the entry is dropped.
        """
        uid = check_id(user_id, "user_id")
        hit = None
        with self._lock:
            live = self._drain_locked()
            if live:
                hit = self._entries.get(uid)
                if hit is not None:
                    self.hits += 1
                    answer = UserRecord(None if hit[0] is None else dict(hit[0]), set(hit[1]), set(hit[2]),
                                        dict(hit[3]), hit[4])
                else:
                    epoch = self._epoch
                    self._inflight[uid] = self._inflight.get(uid, 0) + 1
        if hit is not None:
            self._on_lookup("hit")
            return answer
        if not live:
            self.bypasses += 1
            self._on_lookup("bypass")
            return self.store.get_user(uid)
        answer = None
        try:  # from here on the in-flight count must come down, whatever happens
            self.misses += 1
            self._on_lookup("miss")
            answer = self.store.get_user(uid)
            return answer
        finally:
            with self._lock:
                left = self._inflight[uid] - 1
                if left:
                    self._inflight[uid] = left
                else:
                    del self._inflight[uid]
                if answer is not None and self._trackers is not None and epoch == self._epoch \
                        and uid not in self._dirty:
                    answer.memo = {}  # the entry's memo: the caller may fill it from this record
                    # tuples of strings, not frozensets: the collector stops tracking a tuple of atoms after
                    # a collection or two, while a set's every item is visited by every full collection
                    # (3,000 users' seen items made them 17-54 ms stalls of the request threads)
                    self._entries[uid] = (None if answer[0] is None else dict(answer[0]), tuple(answer[1]),
                                          tuple(answer[2]), dict(answer.recent), answer.memo)
                if not left:
                    self._dirty.discard(uid)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (they will be read from Redis again)."""
        with self._lock:
            self._invalidate_all_locked()

    # ------------------------------------------------------------------ invalidations

    def _drain_locked(self) -> bool:
        """Apply every invalidation waiting in the sockets; False if the cache must not be used."""
        trackers = self._trackers
        if trackers is None:
            return False
        ready = [self._by_fd[fd] for fd, _ in self._poll.poll(0)]  # a poll costs a third of a recv that raises
        ready += [t for t in trackers if isinstance(t.sock, ssl.SSLSocket) and t.sock.pending() and t not in ready]
        for tracker in ready:
            if not self._drain_one_locked(tracker):
                return False
        return True

    def _drain_one_locked(self, tracker: _Tracker) -> bool:
        while True:
            try:
                data = tracker.sock.recv(1 << 16)
            except (BlockingIOError, ssl.SSLWantReadError):
                return True
            except OSError as exc:
                self._lost_locked(f"read from {tracker.name} failed: {exc}")
                return False
            if not data:
                self._lost_locked(f"connection closed by Redis at {tracker.name}")
                return False
            try:
                tracker.reader.feed(data)
                while (message := tracker.reader.gets()) is not False:
                    self._apply_locked(tracker, message)
            except Exception as exc:  # noqa: BLE001 - never fail a request; the stream can't be trusted now
                self._lost_locked(f"unexpected message from {tracker.name}: {type(exc).__name__}: {exc}")
                return False

    def _apply_locked(self, tracker: _Tracker, message: Any) -> None:
        """One message from an invalidation connection."""
        tracker.last_heard = time.monotonic()
        if isinstance(message, list) and message:
            kind = message[0]
            if kind == b"message" and len(message) == 3 and message[1] == CHANNEL.encode():  # RESP2 pub/sub
                self._invalidate_locked(message[2])
            elif kind == b"invalidate" and len(message) == 2:  # RESP3 push
                self._invalidate_locked(message[1])
        elif isinstance(message, hiredis.ReplyError):
            raise ValueError(f"error reply {message}")
        # anything else (PONG) only proves the connection alive

    def _invalidate_locked(self, keys: Any) -> None:
        if keys is None:  # FLUSHDB / FLUSHALL
            self.invalidations += 1
            self._invalidate_all_locked()
            return
        if not isinstance(keys, list):  # not from Redis (anyone may PUBLISH on the channel): ignore
            return
        self.invalidations += 1
        for raw in keys:
            if not isinstance(raw, bytes):
                continue
            for uid in self.store.keys.users_of(raw.decode("utf-8", "surrogateescape")):
                self._entries.pop(uid, None)
                if uid in self._inflight:
                    self._dirty.add(uid)

    def _invalidate_all_locked(self) -> None:
        self._entries.clear()
        self._epoch += 1

    def _lost_locked(self, why: str) -> None:
        """Tracking is gone (on any master): bypass and empty the cache until the background thread
        restores it everywhere."""
        if self._trackers is not None and not self._stop.is_set():
            log.warning("user cache disabled until Redis invalidations resume: %s", why)
        trackers, self._trackers = self._trackers or [], None
        self._by_fd, self._poll = {}, None
        self._invalidate_all_locked()
        for tracker in trackers:
            try:
                tracker.conn.disconnect()
            except Exception:  # noqa: BLE001 - closing a broken connection must not fail the caller
                pass

    # ------------------------------------------------------------------ background thread

    def start(self) -> "UserCache":
        """Establish tracking (in the background: Redis may come up later) and keep it alive."""
        self._thread = threading.Thread(target=self._run, name="user-cache-invalidations", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread (waiting up to ``timeout`` seconds) and bypass the cache from now on."""
        self._stop.set()
        with self._lock:
            self._lost_locked("stopped")  # shuts the sockets down, which wakes the thread's poll
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._topology is not None:
            self._topology[2].disconnect()

    def wait_live(self, timeout: float) -> bool:
        """Wait until tracking is established (tests, startup checks)."""
        deadline = time.monotonic() + timeout
        while not self.live and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.live

    def _run(self) -> None:
        last_ping = 0.0
        last_error = ""
        while not self._stop.is_set():
            trackers = self._trackers
            if trackers is None:
                try:
                    self._connect()
                    last_ping, last_error = time.monotonic(), ""
                except Exception as exc:  # noqa: BLE001 - the thread must survive anything; the cache stays off
                    message = f"{type(exc).__name__}: {exc}"
                    # a down Redis is the store's to report; anything else (e.g. Redis < 6) is said once
                    level = logging.DEBUG if isinstance(exc, (ConnectionError, OSError, RedisConnectionError)) \
                        or message == last_error else logging.WARNING
                    log.log(level, "user cache off, tracking not established (retrying): %s", message)
                    last_error = message
                    self._stop.wait(self.retry_interval)
                continue
            try:
                last_ping = self._watch(trackers, last_ping)
            except Exception as exc:  # noqa: BLE001
                with self._lock:
                    if self._trackers is trackers:
                        self._lost_locked(f"{type(exc).__name__}: {exc}")

    def _watch(self, trackers: list[_Tracker], last_ping: float) -> float:
        """Wait for messages up to the next PING; apply them, check liveness (and the cluster's slot map),
        PING when due."""
        timeout = max(0.0, last_ping + self.ping_interval - time.monotonic())
        poller = select.poll()  # not select.select: it fails on descriptors >= 1024
        try:
            for tracker in trackers:
                poller.register(tracker.sock, select.POLLIN)
            readable = bool(poller.poll(timeout * 1000))
        except (OSError, ValueError):  # closed under us by a request thread
            self._stop.wait(0.01)  # the owner of the lock is marking the cache lost; don't spin
            return last_ping
        due = time.monotonic() >= last_ping + self.ping_interval
        slots = self._read_slots() if due and self._cluster else None  # outside the lock: a network call
        with self._lock:
            if self._trackers is not trackers:
                return last_ping
            if readable:
                self._drain_locked()
            now = time.monotonic()
            silent = [t for t in trackers if now - t.last_heard > 3 * self.ping_interval]
            if self._trackers is None:
                return last_ping
            if silent:
                self._lost_locked(f"no message from Redis at {silent[0].name} for "
                                  f"{now - silent[0].last_heard:.1f} s")
            elif due:
                last_ping = now
                if slots is not None and self._topology_changed_locked(slots):
                    return last_ping
                for tracker in trackers:
                    try:
                        self._send(tracker.sock, PING)
                    except OSError as exc:
                        self._lost_locked(f"PING to {tracker.name} failed: {exc}")
                        break
        return last_ping

    def _topology_changed_locked(self, slots: tuple) -> bool:
        """Compare a fresh slot map with the one tracking was set up for; True if tracking was torn down."""
        if slots == self._slots:
            return False
        masters = {master for _, _, master in slots}
        if masters != {master for _, _, master in self._slots or ()}:
            self._lost_locked(f"the cluster's masters changed to {', '.join(sorted(masters))}")
            return True
        log.info("user cache: slots moved between masters, cache emptied")
        self._slots = slots
        self._invalidate_all_locked()
        return False

    def _read_slots(self) -> tuple | None:
        """The cluster's slot map, ``((start, end, "host:port"), ...)`` sorted, from the first master (or
        startup node) that answers CLUSTER SLOTS; None if none does (the PINGs then tell the rest)."""
        candidates = [self._topology[:2]] if self._topology else []
        candidates += [(t.name.rsplit(":", 1)[0], int(t.name.rsplit(":", 1)[1])) for t in self._trackers or ()]
        candidates += [(h, int(p)) for h, p in self.store.client.nodes]
        for host, port in dict.fromkeys(candidates):
            if self._topology and self._topology[:2] == (host, port):
                conn = self._topology[2]
            else:
                if self._topology:
                    self._topology[2].disconnect()
                conn = node_connection(self.store.client, host, port)
                self._topology = (host, port, conn)
            try:
                conn.send_command("CLUSTER", "SLOTS")
                reply = conn.read_response()
            except Exception:  # noqa: BLE001 - try the next one
                conn.disconnect()
                continue
            return tuple(sorted((int(entry[0]), int(entry[1]),
                                 f"{_text(entry[2][0]) or host}:{int(entry[2][1])}") for entry in reply))
        return None

    def _connect(self) -> None:
        """New invalidation connections, one per master: CLIENT TRACKING (BCAST, redirected to itself) +
        SUBSCRIBE on each."""
        slots = None
        if self._cluster:
            slots = self._read_slots()
            if slots is None:
                raise ConnectionError(f"no node of {self.store.address} answered CLUSTER SLOTS")
            masters = sorted({master for _, _, master in slots})
            conns = [(m, node_connection(self.store.client, m.rsplit(":", 1)[0], int(m.rsplit(":", 1)[1])))
                     for m in masters]
        else:
            conns = [(self.store.address, new_connection(self.store.client))]
        trackers: list[_Tracker] = []
        try:
            for name, conn in conns:
                trackers.append(self._track(name, conn))
        except BaseException:
            for _, conn in conns:
                conn.disconnect()
            raise
        with self._lock:
            if self._stop.is_set():
                for tracker in trackers:
                    tracker.conn.disconnect()
                return
            self._invalidate_all_locked()  # anything cached before now was not covered by tracking
            self._poll = select.poll()
            for tracker in trackers:
                self._poll.register(tracker.sock, select.POLLIN)
            self._by_fd = {t.sock.fileno(): t for t in trackers}
            self._slots = slots
            self._trackers = trackers
        log.info("user cache: tracking %s* on %s", self._user_prefix, ", ".join(t.name for t in trackers))

    def _track(self, name: str, conn: Any) -> _Tracker:
        """Set up tracking on one connection and hand its socket over to our own parser."""
        conn.connect()  # AUTH, SELECT, HELLO and TLS as configured for the store
        sock = conn._sock  # noqa: SLF001 - read directly from here on, with our own parser
        sock.settimeout(self._setup_timeout())
        reader = hiredis.Reader()
        client_id = _call(conn, sock, reader, "CLIENT", "ID")
        _call(conn, sock, reader, "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST",
              "PREFIX", self._user_prefix)
        _call(conn, sock, reader, "SUBSCRIBE", CHANNEL)
        sock.setblocking(False)
        return _Tracker(name, conn, sock, reader, time.monotonic())

    def _setup_timeout(self) -> float:
        """Socket timeout for the setup commands: the store's, at least 1 s."""
        timeout = connection_kwargs(self.store.client).get("socket_timeout") or 1.0
        return max(1.0, float(timeout))

    @staticmethod
    def _send(sock: socket.socket, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            try:
                sent = sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                poller.poll(1000)
                continue
            view = view[sent:]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _call(conn: Any, sock: socket.socket, reader: Any, *args: str | int) -> Any:
    """One setup command (packed by redis-py) and its reply, read with our parser; RedisError on an error reply."""
    sock.sendall(b"".join(conn.pack_command(*args)))
    while (reply := reader.gets()) is False:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("connection closed during setup")
        reader.feed(data)
    command = " ".join(str(a) for a in args[:2])
    if isinstance(reply, hiredis.ReplyError):
        raise RedisError(f"{command}: {reply}")
    if args[0] == "SUBSCRIBE" and not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
        raise RedisError(f"unexpected SUBSCRIBE reply {reply!r}")
    return reply

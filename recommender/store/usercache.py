"""A per-process cache of user records, kept coherent by Redis (server-assisted client-side caching).

Every ``GET /recommend`` reads the user's features and seen items from Redis. The round trip (client,
kernel and server CPU) was a quarter of the endpoint's cost in scripts/bench_http.py. This cache keeps
recent answers of :meth:`RedisFeatureStore.get_user` in the process and drops an entry as soon as
Redis reports that one of its keys changed:

- One connection per process runs ``CLIENT TRACKING on REDIRECT <itself> BCAST PREFIX <prefix>user:``
  and ``SUBSCRIBE __redis__:invalidate``: Redis then sends the name of every key under the prefix that
  any client modifies, deletes, expires or evicts (the feature hash and the seen set of a user both
  live there), or a null for FLUSHDB/FLUSHALL. Writes by other processes, scripts and Lua included.
- Before each lookup the calling thread applies whatever invalidations are already in that socket's
  buffer (one non-blocking ``recv``), and a background thread applies them while the process is idle.
  A write acknowledged to its writer is therefore seen by the next request in every process, as long
  as Redis's invalidation reached the socket before that request: on one host this always holds for a
  request caused by the write's reply; across hosts the window is the difference of two network paths.
- A fetch stores its answer only if no invalidation of that user (or of everything) arrived while it
  was in flight, so a read that raced a write cannot leave a stale entry behind.
- While the invalidation connection is down, or silent beyond its health check (it is PINGed every
  second), the cache is empty and bypassed: every lookup goes to Redis, as without a cache. Entries
  also expire after ``ttl`` seconds, a bound on staleness should everything else fail.

Needs Redis >= 6 (CLIENT TRACKING). redis-py's own client-side cache needs Redis >= 7.4 and RESP3.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

import hiredis
from cachetools import TTLCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..features import check_id
from .feature_store import RedisFeatureStore, UserRecord

log = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"
PING = b"*1\r\n$4\r\nPING\r\n"


class UserCache:
    """``get_user`` with a per-process cache in front of a :class:`RedisFeatureStore`.

    Parameters
    ----------
    store : RedisFeatureStore
        Where misses are read from, and whose connection settings the invalidation connection uses.
    maxsize : int
        Users kept (least recently used are dropped first), > 0.
    ttl : float
        Seconds an entry may be served, > 0; a bound on staleness if invalidations were ever lost.
    ping_interval : float
        Seconds between health-check PINGs on the invalidation connection; after three intervals
        without any message from Redis the connection is considered dead and the cache is bypassed.
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
        self._sock: socket.socket | None = None  # the invalidation connection, when tracking is live
        self._conn: Any = None  # the redis-py connection that owns it (auth, TLS, reconnects)
        self._reader: Any = None
        self._poll: Any = None  # select.poll() on _sock
        self._last_heard = 0.0
        self._epoch = 0  # bumped when everything is invalidated (flush, lost connection)
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
        """True while invalidations are being received (the cache is in use)."""
        return self._sock is not None

    def get_user(self, user_id: str) -> UserRecord:
        """Like :meth:`RedisFeatureStore.get_user` (same answers, same errors), from the cache when possible.

        Returns fresh containers: callers may modify them.
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
                                        dict(hit[3]))
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
                if answer is not None and self._sock is not None and epoch == self._epoch \
                        and uid not in self._dirty:
                    self._entries[uid] = (None if answer[0] is None else dict(answer[0]), frozenset(answer[1]),
                                          frozenset(answer[2]), dict(answer.recent))
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
        """Apply every invalidation waiting in the socket; False if the cache must not be used."""
        sock = self._sock
        if sock is None:
            return False
        if not self._poll.poll(0) and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return True  # nothing waiting (a poll costs a third of a recv that raises)
        while True:
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, ssl.SSLWantReadError):
                return True
            except OSError as exc:
                self._lost_locked(f"read failed: {exc}")
                return False
            if not data:
                self._lost_locked("connection closed by Redis")
                return False
            try:
                self._reader.feed(data)
                while (message := self._reader.gets()) is not False:
                    self._apply_locked(message)
            except Exception as exc:  # noqa: BLE001 - never fail a request; the stream can't be trusted now
                self._lost_locked(f"unexpected message: {type(exc).__name__}: {exc}")
                return False

    def _apply_locked(self, message: Any) -> None:
        """One message from the invalidation connection."""
        self._last_heard = time.monotonic()
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
            # both readings, when a key fits both: dropping one entry too many is harmless
            for uid in self.store.keys.users_of(raw.decode("utf-8", "surrogateescape")):
                self._entries.pop(uid, None)
                if uid in self._inflight:
                    self._dirty.add(uid)

    def _invalidate_all_locked(self) -> None:
        self._entries.clear()
        self._epoch += 1

    def _lost_locked(self, why: str) -> None:
        """Tracking is gone: bypass and empty the cache until the background thread restores it."""
        if self._sock is not None and not self._stop.is_set():
            log.warning("user cache disabled until Redis invalidations resume: %s", why)
        self._sock = None
        self._invalidate_all_locked()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001 - closing a broken connection must not fail the caller
                pass

    # ------------------------------------------------------------------ background thread

    def start(self) -> "UserCache":
        """Establish tracking (in the background: Redis may come up later) and keep it alive."""
        self._thread = threading.Thread(target=self._run, name="user-cache-invalidations", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background thread and bypass the cache from now on."""
        self._stop.set()
        with self._lock:
            self._lost_locked("stopped")  # shuts the socket down, which wakes the thread's select
        if self._thread is not None:
            self._thread.join(timeout=5)

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
            sock = self._sock
            if sock is None:
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
                last_ping = self._watch(sock, last_ping)
            except Exception as exc:  # noqa: BLE001
                with self._lock:
                    self._lost_locked(f"{type(exc).__name__}: {exc}")

    def _watch(self, sock: socket.socket, last_ping: float) -> float:
        """Wait for messages up to the next PING; apply them, check liveness, PING when due."""
        timeout = max(0.0, last_ping + self.ping_interval - time.monotonic())
        poller = select.poll()  # not select.select: it fails on descriptors >= 1024
        try:
            poller.register(sock, select.POLLIN)
            readable = bool(poller.poll(timeout * 1000))
        except (OSError, ValueError):  # closed under us by a request thread
            self._stop.wait(0.01)  # the owner of the lock is marking the cache lost; don't spin
            return last_ping
        with self._lock:
            if self._sock is not sock:
                return last_ping
            if readable:
                self._drain_locked()
            now = time.monotonic()
            if self._sock is not None and now - self._last_heard > 3 * self.ping_interval:
                self._lost_locked(f"no message from Redis for {now - self._last_heard:.1f} s")
            elif self._sock is not None and now >= last_ping + self.ping_interval:
                last_ping = now
                try:
                    self._send(sock, PING)
                except OSError as exc:
                    self._lost_locked(f"PING failed: {exc}")
        return last_ping

    def _connect(self) -> None:
        """A new invalidation connection: CLIENT TRACKING (BCAST, redirected to itself) + SUBSCRIBE."""
        pool = self.store.client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.connect()  # AUTH, SELECT, HELLO and TLS as configured for the store
        try:
            sock = conn._sock  # noqa: SLF001 - read directly from here on, with our own parser
            sock.settimeout(self._setup_timeout())
            reader = hiredis.Reader()
            client_id = _call(conn, sock, reader, "CLIENT", "ID")
            _call(conn, sock, reader, "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST",
                  "PREFIX", self._user_prefix)
            _call(conn, sock, reader, "SUBSCRIBE", CHANNEL)
            sock.setblocking(False)
        except BaseException:
            conn.disconnect()
            raise
        with self._lock:
            if self._stop.is_set():
                conn.disconnect()
                return
            self._invalidate_all_locked()  # anything cached before now was not covered by tracking
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
            self._conn, self._reader, self._sock = conn, reader, sock
            self._last_heard = time.monotonic()
        log.info("user cache: tracking %s* on %s", self._user_prefix, self.store.address)

    def _setup_timeout(self) -> float:
        """Socket timeout for the setup commands: the store's, at least 1 s."""
        timeout = self.store.client.connection_pool.connection_kwargs.get("socket_timeout") or 1.0
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

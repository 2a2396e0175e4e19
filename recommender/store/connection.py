"""Connections to Redis: one pool per process with short timeouts and bounded retries, the request path's
own per-thread connection, and the one place where Redis errors become the domain's StoreUnavailableError.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from typing import Any, Callable, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..errors import StoreUnavailableError

F = TypeVar("F", bound=Callable[..., Any])


def store_errors(function: F) -> F:
    """Turn Redis being unreachable (connection, timeout, a reply that is not Redis's) into
    StoreUnavailableError.

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
        except (RedisConnectionError, RedisTimeoutError, InvalidResponse) as exc:
            address = getattr(args[0], "address", "?") if args else "?"
            raise StoreUnavailableError(
                f"feature store unavailable: Redis at {address} did not answer {function.__name__}() "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    return wrapper  # type: ignore[return-value]


def connect(url: str, *, socket_timeout: float = 0.5, connect_timeout: float = 0.5, retries: int = 2,
            max_connections: int = 50, health_check_interval: float = 30, **pool_kwargs: Any) -> redis.Redis:
    """A client (``decode_responses=True``) on one connection pool with short timeouts and a bounded
    exponential-backoff retry.

    Parameters
    ----------
    url : str
        ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix://...``.
    socket_timeout, connect_timeout : float
        Seconds before a command or a connection attempt fails (then it is retried).
    retries : int
        Retries after the first failure, with exponential backoff from 10 ms capped at 200 ms.
    max_connections : int
        Size limit of the pool (one per concurrent request thread is enough).
    health_check_interval : float
        Seconds a pooled connection may idle before it is PINGed ahead of its next command (0 = never).
        The PING has its own retries, so against a server that accepts connections but does not
        answer, a call fails only after about ``(retries + 1) ** 2 * socket_timeout`` (~4.8 s with the
        defaults) instead of ``(retries + 1) * socket_timeout`` with 0; a refused connection fails
        within milliseconds either way.
    **pool_kwargs
        Passed to :meth:`redis.ConnectionPool.from_url`, e.g. ``protocol=2`` for a server older than
        Redis 6 (redis-py 8 speaks RESP3 by default), or ``parser_class``.

    Raises
    ------
    ValueError
        A URL redis-py cannot parse, or negative limits.
    """
    if retries < 0 or max_connections < 1 or socket_timeout <= 0 or connect_timeout <= 0 \
            or health_check_interval < 0:
        raise ValueError("retries must be >= 0, max_connections >= 1, timeouts > 0 and "
                         "health_check_interval >= 0")
    pool = redis.ConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        # retry_on_timeout is deprecated in redis-py >= 6; listing both errors here is equivalent
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=health_check_interval,
        max_connections=max_connections,
        **pool_kwargs,
    )
    return redis.Redis(connection_pool=pool)


def address_of(client: redis.Redis) -> str:
    """host:port (or the socket path) of a client's server, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


class ThreadConnections:
    """One connection per calling thread, outside the pool, for the request path's pre-packed reads.

    redis-py's pool and pipeline cost ~65 us of client CPU per request read; a connection owned by the
    thread, written with one pre-packed buffer and read reply by reply, costs ~45 us less. Timeouts and
    the retry policy are the pool's.
    """

    def __init__(self, client: redis.Redis):
        self.client = client
        kwargs = client.connection_pool.connection_kwargs
        self.retry = kwargs.get("retry") or Retry(ExponentialBackoff(cap=0.2, base=0.01), 2)
        self._local = threading.local()
        self._all: weakref.WeakSet = weakref.WeakSet()  # every thread's connection, for close()

    def get(self) -> redis.connection.AbstractConnection:
        """This thread's own connection (created on first use, reconnects by itself)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():  # new thread, or a forked child of the creator
            pool = self.client.connection_pool
            conn = self._local.conn = pool.connection_class(**pool.connection_kwargs)
            self._all.add(conn)
        return conn

    def call(self, packed: list[bytes], replies: int) -> list[Any]:
        """Send pre-packed commands on this thread's connection and read ``replies`` replies, with retries."""
        conn = self.get()
        return self.retry.call_with_retry(lambda: _read_replies(conn, packed, replies), _drop_connection(conn))

    def close(self) -> None:
        """Disconnect every thread's connection (each reconnects on its next use)."""
        for conn in list(self._all):
            conn.disconnect()


def _read_replies(conn: redis.connection.AbstractConnection, packed: list[bytes], replies: int) -> list[Any]:
    """Send pre-packed commands and read their replies; any other failure drops the connection.

    Connection and timeout errors propagate to the retry (which disconnects); an error reply or a
    parse error leaves unread bytes on the socket, so the connection is closed before re-raising.
    """
    try:
        conn.send_packed_command(packed, check_health=False)
        return [conn.read_response() for _ in range(replies)]
    except (RedisConnectionError, RedisTimeoutError):
        raise
    except BaseException:
        conn.disconnect()
        raise


def _drop_connection(conn: redis.connection.AbstractConnection) -> Callable[[Exception], None]:
    """Failure handler of a retried call: disconnect, so that the next try reconnects."""
    return lambda error: conn.disconnect()


def pack(*commands: tuple[str, ...]) -> list[bytes]:
    """RESP encoding of several commands as one buffer (arguments are str, encoded as UTF-8)."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return [b"".join(out)]

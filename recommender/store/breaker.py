"""A circuit breaker for the request path's Redis read: after a failure, degrade at once for a while.

Without it, every request that needs Redis while Redis is down or stalled waits out the timeouts and
retries of its own call (~0.8 s with the defaults) before answering degraded, and requests queued
behind those threads wait that long again. With it, the first failure opens the circuit for
``open_seconds``: calls in that time fail at once with StoreUnavailableError (the view answers from
the model alone). Then one call at a time is let through to probe Redis ("half-open"); its success
closes the circuit, its failure opens it again. Per process, thread-safe, no background thread. On a
Redis Cluster, :class:`GuardedReads` keeps one circuit per master: a master down degrades the users whose
slots it serves, not everyone.

    breaker = CircuitBreaker(open_seconds=1.0)
    features, seen = breaker.call(store.get_user, user_id)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from ..errors import StoreUnavailableError
from .keys import slot_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class CircuitBreaker:
    """Fail fast on StoreUnavailableError for ``open_seconds`` after one; then probe with one call."""

    def __init__(self, open_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic, name: str = "Redis"):
        if not open_seconds > 0:
            raise ValueError(f"open_seconds must be > 0, got {open_seconds!r}")
        self.open_seconds = float(open_seconds)
        self.name = name  # what the log says failed (a cluster master: "Redis master host:port")
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0  # 0: closed
        self._probing = False
        self.rejected = 0  # calls failed fast while open

    @property
    def state(self) -> str:
        """"closed", "open" or "half-open" (the open period is over; the next call probes)."""
        with self._lock:
            if not self._open_until:
                return "closed"
            return "open" if self._clock() < self._open_until else "half-open"

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)``, or StoreUnavailableError at once while the circuit is open.

        Only StoreUnavailableError counts as a failure; any other exception (a bad id, say) passes
        through and leaves the circuit as it was.
        """
        with self._lock:
            if self._open_until:
                if self._clock() < self._open_until or self._probing:
                    self.rejected += 1
                    raise StoreUnavailableError("Redis failed moments ago; not retrying yet (circuit open)")
                self._probing = True  # this call is the probe; the others still fail fast
        try:
            result = fn(*args, **kwargs)
        except StoreUnavailableError:
            with self._lock:
                if not self._open_until:
                    log.warning("%s read failed: answering from the model alone for %.1f s, then probing",
                                self.name, self.open_seconds)
                self._open_until = self._clock() + self.open_seconds
                self._probing = False
            raise
        except BaseException:
            with self._lock:
                self._probing = False
            raise
        with self._lock:
            if self._open_until:
                log.info("%s answers again: circuit closed", self.name)
            self._open_until = 0.0
            self._probing = False
        return result


class GuardedReads:
    """A feature store whose ``get_user`` goes through a CircuitBreaker; everything else is the store's.

    Put it between the user cache and the store, so that cache hits are still served while the
    circuit is open and only the reads that need Redis fail fast.

    On a Redis Cluster there is one circuit per master, found through the client's slot map from the
    user's slot (its keys share one): a master that fails opens the circuit of the users it serves,
    while users on the other masters are still read. After a failover the slot map names the new master,
    whose circuit starts closed. ``breaker`` is the one circuit of a single Redis (and of a cluster whose
    slot map is not known yet); the per-master ones copy its open time and clock.
    """

    def __init__(self, store, breaker: CircuitBreaker):
        self._store = store
        self.breaker = breaker
        self._per_master: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get_user(self, user_id: str):
        """The store's get_user, failing fast while the circuit of the user's master is open."""
        return self.breaker_for(user_id).call(self._store.get_user, user_id)

    def breaker_for(self, user_id: str) -> CircuitBreaker:
        """The circuit a read of ``user_id`` goes through (see the class docstring)."""
        master = self._master_of(user_id)
        if master is None:
            return self.breaker
        found = self._per_master.get(master)
        if found is None:
            with self._lock:
                found = self._per_master.get(master)
                if found is None:
                    self._forget_gone_masters()
                    found = self._per_master[master] = CircuitBreaker(
                        self.breaker.open_seconds, clock=self.breaker._clock, name=f"Redis master {master}")
        return found

    def _forget_gone_masters(self) -> None:
        """Drop the circuits of nodes the slot map no longer knows (a replaced node's address), so that the
        dict stays as small as the cluster; called with the lock held, when a master is first seen."""
        try:
            known = set(self._store.client.resolve().nodes_manager.nodes_cache)
        except Exception:  # noqa: BLE001 - keep them; the next new master tries again
            return
        for name in [n for n in self._per_master if n not in known]:
            del self._per_master[name]

    def _master_of(self, user_id: str) -> str | None:
        """host:port of the master serving the user's slot on a cluster, None on one Redis (or while the
        slot map is unknown, or for an id the store will refuse anyway)."""
        store = self._store
        # one Redis; or a cluster client not built yet: no slot map, and building it would connect while the
        # circuit must fail fast
        if not getattr(store, "cluster", False) or not store.client.built:
            return None
        try:
            manager = store.client.resolve().nodes_manager
            return manager.get_node_from_slot(slot_of(store.keys.user_features(user_id))).name
        except Exception:  # noqa: BLE001 - no map yet, a bad id: the shared circuit (get_user reports the rest)
            return None

    def __getattr__(self, name: str):
        return getattr(self._store, name)

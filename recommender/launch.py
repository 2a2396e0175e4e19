"""Start the HTTP service under gunicorn with the project's config: for `make run`, tests and benchmarks.

One place builds the gunicorn command line and its environment from a :class:`Settings`, so the
embedded default (``reco-run``), the end-to-end tests and the benchmarks all run the service exactly as
the image does (``gunicorn -c app/gunicorn_conf.py``). No Flask import here: gunicorn is a child
process.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .localredis import dies_with_parent, free_port
from .settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def gunicorn_config() -> str:
    """Path of app/gunicorn_conf.py, found without importing the app package.

    The config is given as a file, not as ``python:app.gunicorn_conf``: importing it as a module would
    import ``app`` (and prometheus_client) before the config sets PROMETHEUS_MULTIPROC_DIR, and the
    workers' metrics would no longer be aggregated.
    """
    spec = importlib.util.find_spec("app")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the app package is not importable (pip install -e . from the project root)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "gunicorn_conf.py")


def gunicorn_command(app_spec: str | None = None) -> list[str]:
    """``python -m gunicorn -c app/gunicorn_conf.py [app_spec]`` for this interpreter."""
    command = [sys.executable, "-m", "gunicorn", "-c", gunicorn_config()]
    if app_spec:
        command.append(app_spec)
    return command


def env_for(settings: Settings, port: int, workers: int = 2, threads: int = 2, host: str = "127.0.0.1",
            base: dict | None = None) -> dict:
    """The environment a gunicorn run of these settings needs (every setting as its variable)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings.to_env())
    env.update(PORT=str(port), HOST=host, WORKERS=str(workers), THREADS=str(threads))
    env.setdefault("LOG_LEVEL", "warning")
    return env


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


@dataclass
class Service:
    """A running gunicorn serving the app."""

    process: subprocess.Popen
    base: str
    log_path: Path | None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """The tail of what gunicorn wrote (for failure messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]


def start_gunicorn(settings: Settings, log_dir: Path | None = None, workers: int = 2, threads: int = 2,
                   wait_ready: bool = True, app_spec: str | None = None, ready_path: str | None = None,
                   port: int | None = None, host: str = "127.0.0.1", timeout: float = 60,
                   env: dict | None = None) -> Service:
    """Start gunicorn and wait until ``ready_path`` (default /ready, or /health) answers 200.

    Output goes to ``log_dir/gunicorn-<port>.log``, or to this process's stdout without ``log_dir``.

    Raises
    ------
    RuntimeError
        gunicorn exited, or did not answer within ``timeout`` seconds (the log tail is in the message).
    """
    port = port or free_port()
    log_path = None if log_dir is None else Path(log_dir) / f"gunicorn-{port}.log"
    out = None if log_path is None else open(log_path, "wb")
    run_env = env_for(settings, port, workers, threads, host, base=env)
    process = subprocess.Popen(dies_with_parent(gunicorn_command(app_spec)), cwd=ROOT, env=run_env, stdout=out,
                               stderr=None if out is None else subprocess.STDOUT, start_new_session=out is not None)
    if out is not None:
        out.close()  # the child holds its own descriptor
    service = Service(process, f"http://127.0.0.1:{port}", log_path)
    path = ready_path or ("/ready" if wait_ready else "/health")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}: {service.log()}")
        if http_status(service.base + path) == 200:
            return service
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"gunicorn did not become ready within {timeout:.0f} s: {service.log()}")

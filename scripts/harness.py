"""Run the service for tests and benchmarks: a real gunicorn with the project's config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from recommender.localredis import free_port
from recommender.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def env_for(settings: Settings, port: int, workers: int = 2, threads: int = 2) -> dict:
    """The environment a gunicorn run of these settings needs."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    for name, var in Settings.ENV.items():
        value = getattr(settings, name)
        if value is not None:
            env[var] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(PORT=str(port), HOST="127.0.0.1", WORKERS=str(workers), THREADS=str(threads), LOG_LEVEL="warning")
    return env


@dataclass
class Service:
    """A running gunicorn serving the app."""

    process: subprocess.Popen
    base: str
    log_path: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """What gunicorn wrote (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def start_gunicorn(settings: Settings, log_dir: Path, workers: int = 2, threads: int = 2,
                   wait_ready: bool = True, app_spec: str | None = None, ready_path: str | None = None,
                   port: int | None = None) -> Service:
    """Start gunicorn with the project's config (optionally another WSGI app) and wait until it is ready."""
    port = port or free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    fh = open(log_path, "wb")
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "app" / "gunicorn_conf.py")]
    if app_spec:
        command.append(app_spec)
    process = subprocess.Popen(command,
                               cwd=ROOT, env=env_for(settings, port, workers, threads), stdout=fh,
                               stderr=subprocess.STDOUT, start_new_session=True)
    service = Service(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    path = ready_path or ("/ready" if wait_ready else "/health")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {service.log()}")
        try:
            if requests.get(service.base + path, timeout=1).status_code == 200:
                return service
        except requests.RequestException:
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"gunicorn did not become ready: {service.log()}")

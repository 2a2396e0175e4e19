"""`make run` (console script ``reco-run``): the one-command embedded default.

Without REDIS_URL it starts a local Redis (persisting under var/redis), loads the demo data when the
store is empty, trains and publishes a first model when none exists, then serves with gunicorn on
PORT (default 8000). Honours PORT, REDIS_URL, ADMIN_TOKEN and MODEL_DIR. Ctrl-C (SIGINT) or SIGTERM
stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from ..bootstrap import ensure_demo_data, ensure_layout, ensure_model
from ..launch import start_gunicorn
from ..localredis import LocalRedis
from ..settings import Settings
from ..trainer import connect

VAR = Path(os.environ.get("RECO_VAR_DIR", "var")).resolve()
EXAMPLES = VAR / "demo_examples.json"


def say(message: str) -> None:
    """Progress for the person at the terminal."""
    print(f"[make run] {message}", flush=True)


def banner(port: int, token: str, generated: bool, examples: dict) -> str:
    """How and where to call the service."""
    base = f"http://localhost:{port}"
    known = examples.get("known_user", "u1")
    lines = [
        "",
        f"Service: {base}   (OpenAPI: {base}/openapi.json, metrics: {base}/metrics)",
        f"Admin token{' (generated; set ADMIN_TOKEN to choose one)' if generated else ''}: {token}",
        f"Explorer page: {base}/ui/   (users, items, the model; paste the admin token into the page)",
        "",
        "Try:",
        f"  curl '{base}/recommend/{known}?n=5'",
    ]
    if "new_user" in examples:
        lines.append(f"  curl '{base}/recommend/{examples['new_user']}?n=5'      # new user, features only")
    lines += [
        f"  curl '{base}/recommend/someone-new?n=5'      # nothing known: popular items",
        f"  curl -X PUT -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\",
        f"       -d '{{\"genre:drama\": 1, \"tag:drama-0\": 1}}' {base}/items/brand-new-item/features",
        f"  curl -X POST -H 'Authorization: Bearer {token}' {base}/retrain",
        f"  curl {base}/model",
        "",
        "Ctrl-C stops the service" + (" and its Redis." if examples.get("_local_redis") else "."),
        "",
    ]
    return "\n".join(lines)


def new_admin_token() -> str:
    """A random URL-safe admin token (32 characters) that does not start with "-", which command-line
    tools would read as an option."""
    while True:
        token = secrets.token_urlsafe(24)
        if not token.startswith("-"):
            return token


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on the port: a bind with SO_REUSEADDR but not SO_REUSEPORT succeeds.

    gunicorn binds with SO_REUSEPORT by default (REUSE_PORT), which would silently share a port another
    service already listens on with that option; this check refuses that before anything starts.
    SO_REUSEADDR (which gunicorn sets too) lets connections of a previous run still in TIME_WAIT (~60 s
    after it stopped) pass: without it a restart within a minute was refused with nothing listening.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0" if host in ("", "0.0.0.0") else host, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Start (or reuse) Redis, make sure data and a model exist, run gunicorn until a signal."""
    parser = argparse.ArgumentParser(
        prog="reco-run", description="Run the service on an embedded default: a local Redis (unless REDIS_URL is "
        "set), the demo data when the store is empty, a first model, gunicorn on PORT (default 8000). "
        "Settings come from the environment (README, Configuration); Ctrl-C stops what it started.")
    parser.parse_args(argv)
    env = os.environ
    port = int(env.get("PORT", "8000"))
    host = env.get("HOST", "0.0.0.0")
    if not port_free(host, port):
        say(f"port {port} is already in use (another service, or another make run?); set PORT to another one")
        return 1
    redis_server = None
    if not env.get("REDIS_URL"):
        redis_server = LocalRedis(VAR / "redis", port=int(env.get("REDIS_PORT", "0")) or None, persist=True).start()
        env["REDIS_URL"] = redis_server.url
        say(f"started a local Redis at {redis_server.url} (data in var/redis; set REDIS_URL to use your own)")
    env.setdefault("MODEL_DIR", str(VAR / "models"))
    generated = not env.get("ADMIN_TOKEN")
    token = env.get("ADMIN_TOKEN") or new_admin_token()
    env["ADMIN_TOKEN"] = token
    env.setdefault("TRAINER_IN_APP", "1")
    gunicorn = None

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background, where SIGINT is inherited as ignored
    try:
        settings = Settings.from_env()
        store = connect(settings, wait=30)
        examples = json.loads(EXAMPLES.read_text()) if EXAMPLES.exists() else {}
        moved = ensure_layout(store)  # var/redis may hold the data of version 0.6 (untagged keys)
        if any(moved.values()):
            say("moved the store to the tagged key layout of this version: " +
                ", ".join(f"{k} {v:,d}" for k, v in moved.items()))
        if store.is_empty():
            say("the store is empty: generating demo data (3000 users, 2000 items) and loading it into Redis")
            examples = ensure_demo_data(store, EXAMPLES)
        say("checking for a published model (training the first one if there is none)")
        result = ensure_model(store, settings)
        if result is not None:
            metrics = result.metrics
            say(f"published model {result.version}: precision@{metrics.get('eval_k')} "
                f"{metrics.get('precision_at_k', float('nan')):.3f} vs popularity "
                f"{metrics.get('baseline_precision_at_k', float('nan')):.3f}")
        examples["_local_redis"] = redis_server is not None
        try:
            gunicorn = start_gunicorn(settings, port=port, host=host,
                                      workers=int(env.get("WORKERS", "2")), threads=int(env.get("THREADS", "2")),
                                      env=dict(env, LOG_LEVEL=env.get("LOG_LEVEL", "info")))
        except RuntimeError as exc:
            say(str(exc))
            return 1
        print(banner(port, token, generated, examples), flush=True)
        return gunicorn.process.wait()
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        if redis_server:
            redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())

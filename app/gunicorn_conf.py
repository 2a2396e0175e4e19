"""gunicorn configuration: workers and threads from the environment; models load after fork.

Run: gunicorn -c app/gunicorn_conf.py 'app:create_app()'. No preload: each worker builds its own app
(and loads the model) after the fork, because LightFM/OpenMP state does not survive fork safely.
"""

import os
import shutil
import tempfile

# One BLAS thread per worker: requests are parallel across workers already, and idle OpenBLAS threads
# spin and steal the CPU the other workers need (measured in scripts/bench_http.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", os.environ.get("WORKERS", "2")))
# Two threads per worker: the request path is CPU-bound and shares one GIL per process, so more threads
# only queue behind it. bench_http, 16 connections, 6 runs each (2026-11-22, docs/BENCHMARKS.md): same throughput
# (median 3,596 vs 3,632 req/s), p99 10.9 vs 12.3 ms for 2 vs 4 threads; 2 threads still let one request
# wait on Redis while the other computes. Raise it if your Redis is far away (each miss waits a round trip).
threads = int(os.environ.get("THREADS", "2"))
worker_class = "gthread" if threads > 1 else "sync"
preload_app = False
# One listening socket per worker (SO_REUSEPORT): the kernel spreads new connections over the workers by
# hash. With one shared socket, the worker that happens to be awake accepts a burst of keep-alive
# connections and can end up with all of them, leaving the other cores idle (bench_http measured
# 16-connection runs at 0.13-0.94 of the balanced throughput). REUSE_PORT=false restores the shared socket.
reuse_port = os.environ.get("REUSE_PORT", "true").lower() in ("1", "true", "yes", "on")
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10 if max_requests else 0
accesslog = os.environ.get("ACCESS_LOG") or None  # e.g. "-" for stdout; off by default (speed)
errorlog = "-"
# gunicorn's control socket (gunicornc) defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which every
# instance on the machine (tests start several) would take over in turn: one per port instead.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or os.path.join(
    tempfile.gettempdir(), f"reco-gunicorn-{os.environ.get('PORT', '8000')}.ctl")
loglevel = os.environ.get("LOG_LEVEL", "info")
wsgi_app = "app:create_app()"

# Prometheus multiprocess mode: every worker writes its metrics to files in this directory.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="reco-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    """Start each run with an empty metrics directory."""
    for name in os.listdir(_metrics_dir):
        path = os.path.join(_metrics_dir, name)
        if os.path.isfile(path):
            os.unlink(path)


def worker_exit(server, worker):
    """A worker stopping cleanly writes the impressions it still buffers (recommender.online)."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("reco") if app is not None else None
    if service is not None:
        service.stop()


def child_exit(server, worker):
    """Drop a dead worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove a metrics directory this config created."""
    if _metrics_dir.startswith(tempfile.gettempdir()) and "reco-metrics-" in _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def when_ready(server):
    """Say where the service listens: with reuse_port each worker opens its own socket, so gunicorn's own
    "Listening at:" line has no address to show."""
    server.log.info("serving on http://%s with %d workers x %d threads%s", bind, workers, threads,
                    " (one SO_REUSEPORT socket per worker)" if reuse_port else "")

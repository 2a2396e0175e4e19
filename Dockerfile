# LightFM recommendation service: one image for the HTTP app (default command), the trainer and the
# one-shot init (override the command, see docker-compose.yml).
#
#   docker build -t reco .
#   docker run --rm -p 8000:8000 -e REDIS_URL=redis://host:6379/0 -e ADMIN_TOKEN=... reco
#
# No secrets are baked in: ADMIN_TOKEN, REDIS_URL (which may carry a password) and every other setting
# come from the environment at run time (recommender/settings.py lists them).

# ---------------------------------------------------------------- build: compile the dependencies
FROM python:3.11-slim AS build

# rectools-lightfm ships only a source distribution: its Cython/C extension (with OpenMP) needs a compiler.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120

RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip setuptools wheel

COPY requirements.txt /tmp/requirements.txt
# pip byte-compiles what it installs; the .pyc files stay in the image because the non-root user cannot
# write them at run time, and recompiling numpy/scipy/pandas in every gunicorn worker slows its boot.
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt \
 && /opt/venv/bin/python -c "import lightfm._lightfm_fast_openmp, numpy, scipy, flask, gunicorn, redis; print('deps ok')"

# the project itself (no dependencies: they are above), so its console scripts (reco-load, reco-train, ...)
# are on PATH in the image
COPY pyproject.toml README.md /src/
COPY app /src/app
COPY recommender /src/recommender
RUN /opt/venv/bin/pip install --no-deps /src

# ---------------------------------------------------------------- runtime: no compiler
FROM python:3.11-slim AS runtime

# libgomp1: the OpenMP runtime the compiled LightFM extension links against (not in the slim image).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid so volume ownership is predictable across rebuilds and hosts.
# MODEL_DIR (/models) is created here owned by that user: a fresh named volume mounted on it inherits the owner.
ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid "${APP_GID}" app \
 && useradd --system --uid "${APP_UID}" --gid app --home-dir /srv/reco --shell /usr/sbin/nologin app \
 && mkdir -p /models /srv/reco \
 && chown app:app /models /srv/reco

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/models \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /srv/reco
# the sources once more beside the installed package: gunicorn reads its config as a file (app/gunicorn_conf.py),
# and the old script paths (scripts/*.py) forward to the console scripts
COPY app ./app
COPY recommender ./recommender
COPY scripts ./scripts
RUN python -m compileall -q app recommender scripts

USER app:app
EXPOSE 8000

# Liveness only (/health answers as soon as the process does; /ready also needs a model and Redis).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# gunicorn with the project's config (bind from HOST/PORT, WORKERS, THREADS; wsgi_app 'app:create_app()').
# A plain CMD rather than ENTRYPOINT, so `command: python -m recommender.trainer` runs the trainer from the
# same image; gunicorn is PID 1 and handles SIGTERM with a graceful shutdown.
CMD ["gunicorn", "-c", "app/gunicorn_conf.py"]

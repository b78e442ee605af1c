# syntax=docker/dockerfile:1
#
# Production image of the CRM KPI processor (package `crm-kpi`, console script `kpi`).
#
#   docker build -t crm-kpi .
#   docker run --rm crm-kpi --help
#
# Two stages: `build` installs the package and its dependencies (with the `rocksdb` extra)
# into a virtualenv, with compilers at hand for any dependency that has no wheel for the
# platform; `runtime` copies only that virtualenv onto a clean slim image, so no compiler,
# header or source tree ends up in the final image.
#
# Both stages use the same base image: the virtualenv's interpreter is a symlink to the base
# image's /usr/local/bin/python3.11.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# Only what the package build needs (pyproject.toml, and setup.py for the compiled modules).
COPY pyproject.toml setup.py README.md ./
COPY stream_app/ ./stream_app/
COPY schemas/ ./schemas/

# A regular (non-editable) install: the code lands in the venv's site-packages, /src is
# not needed at runtime. `pip check` fails the build on inconsistent dependencies.
RUN pip install --upgrade pip \
    && pip install ".[rocksdb]" \
    && pip check


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="crm-kpi" \
      org.opencontainers.image.description="Real-time CRM KPI processor (Faust workers, Kafka in, Redis and Kafka out)" \
      org.opencontainers.image.licenses="MIT"

# KPI_DATA_DIR: the worker's state (RocksDB tables) lives under /data; mount a volume there.
# KPI_WEB_HOST: inside a container the web server must listen on all interfaces to be
# reachable through a published port; which host interface is exposed is decided at
# `docker run -p` / compose `ports:` time.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KPI_DATA_DIR=/data \
    KPI_WEB_HOST=0.0.0.0

# Fixed numeric ids so that volume ownership and Kubernetes `runAsNonRoot` are predictable.
# /data is created here, owned by the app user, so that a fresh named volume mounted on it
# inherits that ownership.
RUN groupadd --system --gid 10001 kpi \
    && useradd --system --uid 10001 --gid kpi --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin kpi \
    && install -d -o kpi -g kpi -m 0750 /app /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# Faust web: /health, metrics and the Faust views.
EXPOSE 6066

# No curl in the slim image: python's urllib; urlopen raises (exit 1) on connection errors
# and on HTTP status >= 400. The port is the default KPI_WEB_PORT; a generous start period
# leaves time for table recovery from the changelog topics.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/health', timeout=4)"]

ENTRYPOINT ["kpi"]
CMD ["worker"]

# herald worker image.
#
#   docker build -t herald .
#   docker run --rm -p 127.0.0.1:6066:6066 \
#     -e HERALD_KAFKA_BOOTSTRAP=host:9092 \
#     -e HERALD_DATABASE_URL=postgresql://user:pass@host:5432/herald \
#     -v herald-data:/var/lib/herald herald
#
# docker-compose.yml runs it next to Kafka and PostgreSQL; k8s/ runs it as a
# StatefulSet. Both rely on the user id, port, data directory and health
# endpoint set here, and tests/unit/test_deploy_files.py checks they agree.

# --- build stage -----------------------------------------------------------
# The compiler lives only here: nearly every dependency ships a wheel, but one
# that falls back to its sdist (a new Python patch release, an arm64 host)
# still builds, and the runtime image carries no toolchain.
FROM python:3.11-slim AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

# A virtualenv is a single directory the runtime stage can copy whole, with
# console scripts whose shebangs stay valid at the same path.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore keeps local state (.local/, .venv/, .git/) out of the context.
COPY . .
RUN pip install --no-cache-dir .

# --- runtime stage ---------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric uid/gid: Kubernetes can only enforce runAsNonRoot against a
# numeric USER, and k8s/statefulset.yaml sets the same ids (fsGroup) so the
# volume is writable. The data directory exists in the image, owned by that
# user, so a fresh named Docker volume mounted on it inherits the ownership.
RUN groupadd --system --gid 10001 herald \
 && useradd --system --uid 10001 --gid herald \
      --home-dir /var/lib/herald --no-create-home --shell /usr/sbin/nologin herald \
 && install -d -o herald -g herald -m 0750 /var/lib/herald

COPY --from=build /opt/venv /opt/venv
# Notification templates are data, read at start-up from HERALD_TEMPLATES_DIR.
COPY templates /opt/herald/templates

# Faust's own default binds every interface; herald's default is loopback so
# a developer's worker is not reachable from the network. Inside a container
# only 0.0.0.0 is reachable through a published port or a Service, so the
# image opts in. The web server serves table data: keep the port private
# (compose publishes it on 127.0.0.1, k8s uses a ClusterIP Service).
# RocksDB tables and their recovery state live in HERALD_DATA_DIR: mount a
# volume there, or every restart rebuilds the tables from the changelogs.
ENV HERALD_WEB_BIND=0.0.0.0 \
    HERALD_WEB_PORT=6066 \
    HERALD_DATA_DIR=/var/lib/herald \
    HERALD_TEMPLATES_DIR=/opt/herald/templates

# No VOLUME instruction on purpose: it would leave an anonymous volume behind
# every `docker run` and has no effect on Kubernetes; mount one explicitly.
WORKDIR /var/lib/herald
USER 10001:10001

EXPOSE 6066

# python, not curl: the slim image has no curl. The empty ProxyHandler stops a
# user's HTTP(S)_PROXY from routing the loopback probe through a proxy; any
# non-2xx answer or a refused connection raises, which exits non-zero.
# start-period covers start-up; table recovery is a readiness matter
# (/readyz), not a health one, so it does not need to fit in here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.build_opener(urllib.request.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('HERALD_WEB_PORT', '6066'), timeout=4)"]

# Exec form so herald is PID 1 and receives SIGTERM itself: the worker then
# commits offsets and flushes its tables before exiting (compose and k8s
# both allow it 60 s).
CMD ["herald", "worker"]

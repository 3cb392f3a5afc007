# The agent worker (and, with another command, the web client) as a container image.
# Multi-stage: dependencies are built in a virtualenv, the runtime stage copies only that
# and the product's own files, and runs as an unprivileged user.
#   docker build -t gemini-agent .
#   docker run --env-file .env gemini-agent                       # the worker
#   docker run --env-file .env -p 8080:8080 gemini-agent -m agents.web   # the web client
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY agents ./agents
# the project's dependencies only (the product runs from /app, not from site-packages)
RUN pip install --no-cache-dir . \
    && pip uninstall --yes gemini-live-agent

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin agent
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY agent.py ./
COPY agents ./agents
COPY clients ./clients
COPY config ./config
# Warm-up at build time: byte-compile everything once, so neither the worker nor its
# forkserver and job processes compile the framework, google-genai and grpc modules at
# start (the per-call warm-up itself runs in the forkserver: agents/preload.py).
RUN /opt/venv/bin/python -m compileall -q /opt/venv/lib /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    AGENT_WEB__HOST=0.0.0.0
USER 10001
# 8081: health check (worker.http_port), 8082: Prometheus /metrics, 8080: web client
EXPOSE 8081 8082 8080
# the framework's health endpoint: 200 while the worker is connected to LiveKit
HEALTHCHECK --interval=15s --timeout=3s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/', timeout=2)"]
# SIGTERM drains: the worker takes no new calls and exits when its calls have ended
STOPSIGNAL SIGTERM
ENTRYPOINT ["python"]
CMD ["agent.py", "start"]

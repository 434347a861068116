# The P-ZONE Python images: one Dockerfile, one target per image, built from the repository root (the context).
#
#   docker build --target pzone-migrations -t pzone-migrations:0.1.0 .   pzone db upgrade (a Job, before the apps)
#   docker build --target pzone-ingest -t pzone-ingest:0.1.0 .           pzone ingest (the MQTT ingest worker)
#   docker build --target pzone-api -t pzone-api:0.1.0 .                 pzone api; pzone photos worker; logs backup
#   docker build --target pzone-trainer -t pzone-trainer:0.1.0 .         pzone retrain; mlflow server
#   docker build --target pzone-model -t pzone-model:0.1.0 .             bentoml serve, model from the shared store
#   docker build --target pzone-model-bento -t pzone-model:<version> .   bentoml serve, one Bento baked in
#
# Name the target: without one Docker builds the last stage (pzone-model). BuildKit builds only the stages the target
# needs, so building the API never installs torch. The web front (nginx, no Python) is serving/front/Dockerfile.
#
# The shape is the one uv's guide "Using uv in Docker" gives a workspace (multi-stage, intermediate layers,
# non-editable installs), with the common parts written once:
#   builder            uv, its settings and the workspace's metadata: uv.lock and every member's pyproject.toml (uv
#                      resolves the whole workspace even to install one member).
#   builder-<image>    that image's packages into /app/.venv in two layers: the dependencies, rebuilt only when
#                      uv.lock or a pyproject.toml changes; then the image's members from their sources, as wheels,
#                      so the environment needs no source tree.
#   runtime            what every image runs on: the Python the environment links to, the non-root user 10001 with
#                      its state folders, PATH.
#   cli-runtime        + the data folder (PZONE_DATA_DIR, the working directory) of migrations, ingest and the API.
#   model-runtime      + what the model tier's two targets share: the Bento's environment, port, health check.
#   pzone-<image>      the targets: each adds its environment, labels, settings, health check and command.
# Each image holds its own package(s) and pzone-core, nothing of another image (tests/deploy/test_container_images.py
# builds the environments and checks). Settings come from PZONE_* variables at run time: no secret is baked in.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- builder: uv and the workspace's metadata; every image's builder starts here --------------------------------
FROM python:3.11.13-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
# Every uv command below: the versions of uv.lock as they are (never resolved again), no dev group, workspace members
# as wheels, compiled, into /app/.venv, on the runtime's Python.
ENV UV_FROZEN=1 \
    UV_NO_DEV=1 \
    UV_NO_EDITABLE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY core/pyproject.toml core/
COPY ingest_lambda/pyproject.toml ingest_lambda/
COPY firmware/pyproject.toml firmware/
COPY serving/api/pyproject.toml serving/api/
COPY serving/model/pyproject.toml serving/model/
COPY pipelines/pyproject.toml pipelines/
COPY training/pyproject.toml training/
COPY stack/pyproject.toml stack/

# --- runtime: what every image runs on ---------------------------------------------------------------------------
FROM python:3.11.13-slim-bookworm AS runtime
LABEL org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.vendor="P-ZONE"
# The user of every image (uid 10001, as the Kubernetes securityContext says) and the folders it writes, owned by it
# so that a fresh volume mounted there is too: the data folder, the BentoML store (the trainer writes it, the model
# tier reads it) and the logs the backup job ships.
RUN groupadd --system --gid 10001 pzone \
    && useradd --system --no-log-init --uid 10001 --gid pzone --home-dir /home/pzone --create-home \
        --shell /usr/sbin/nologin pzone \
    && install -d -o 10001 -g 10001 /var/lib/pzone /var/lib/pzone/bentoml /var/log/pzone
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# --- cli-runtime: the services of the `pzone` command (migrations, ingest, api) -----------------------------------
# The trainer is not one of them: its data folder is a subfolder of its state volume, and it writes its project's
# DVC setting as root.
FROM runtime AS cli-runtime
ENV PZONE_DATA_DIR=/var/lib/pzone
WORKDIR /var/lib/pzone
USER 10001:10001

# --- pzone-migrations ---------------------------------------------------------------------------------------------
# The schema migrations job, `pzone db upgrade` (Alembic, against PZONE_DATABASE_URL), run once before the
# applications start (a Kubernetes Job; a one-shot service in docker-compose.yml). pzone-core[cli] only.
FROM builder AS builder-migrations
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-install-workspace --package pzone-core --extra cli
COPY core/src core/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --package pzone-core --extra cli

FROM cli-runtime AS pzone-migrations
LABEL org.opencontainers.image.title="pzone-migrations" \
      org.opencontainers.image.description="P-ZONE database migrations (pzone db upgrade)"
COPY --from=builder-migrations /app/.venv /app/.venv
# A job, not a server: it exits when the schema is at head, so there is nothing for a HEALTHCHECK to watch.
CMD ["pzone", "db", "upgrade"]

# --- pzone-ingest -------------------------------------------------------------------------------------------------
# The MQTT ingest worker, `pzone ingest` (a StatefulSet in Kubernetes: PZONE_INGEST_CLIENT_ID is the pod name, so each
# replica keeps its persistent session). pzone-ingest[worker] and pzone-core[cli]: no torch and no web framework, like
# the Lambda zip.
FROM builder AS builder-ingest
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-install-workspace --package pzone-ingest --package pzone-core --extra worker --extra cli
COPY core/src core/src
COPY ingest_lambda/src ingest_lambda/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --package pzone-ingest --package pzone-core --extra worker --extra cli

FROM cli-runtime AS pzone-ingest
LABEL org.opencontainers.image.title="pzone-ingest" \
      org.opencontainers.image.description="P-ZONE telemetry ingest worker (pzone ingest): MQTT to SQL"
COPY --from=builder-ingest /app/.venv /app/.venv
# Metrics on all interfaces inside the container (the default, 127.0.0.1, is for a shared host): Prometheus scrapes
# :9108 from outside the pod.
ENV PZONE_INGEST_METRICS_HOST=0.0.0.0 \
    PZONE_INGEST_METRICS_PORT=9108
EXPOSE 9108
# Healthy while the worker is connected to the broker (its pzone_ingest_connected gauge); slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PZONE_INGEST_METRICS_PORT', '9108'); text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=4).read().decode(); sys.exit('pzone_ingest_connected 1.0' not in text)"]
CMD ["pzone", "ingest"]

# --- pzone-api ----------------------------------------------------------------------------------------------------
# The web front's back-end, `pzone api` (FastAPI under uvicorn, port 8000). The same image runs the photo worker
# (`pzone photos worker`) and the log backup job (`pzone logs backup --source /var/log/pzone`) with another command.
# pzone-api and pzone-core[cli]: no torch, no training code.
FROM builder AS builder-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-install-workspace --package pzone-api --package pzone-core --extra cli
COPY core/src core/src
COPY serving/api/src serving/api/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --package pzone-api --package pzone-core --extra cli

FROM cli-runtime AS pzone-api
LABEL org.opencontainers.image.title="pzone-api" \
      org.opencontainers.image.description="P-ZONE back-end API (pzone api), photo worker and log backup"
COPY --from=builder-api /app/.venv /app/.venv
EXPOSE 8000
# Liveness of the API process (readiness, /api/readyz, also checks the database: that is the orchestrator's job).
# slim has no curl: Python's urllib. The photo worker, run from this image, overrides it (docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/healthz', timeout=4).status != 200)"]
CMD ["pzone", "api", "--host", "0.0.0.0", "--port", "8000"]

# --- pzone-trainer ------------------------------------------------------------------------------------------------
# The training job, `pzone retrain` = `dvc repro` (snapshot → prepare → train → evaluate → propose) and, for a new
# model, `pzone promote` (the gate, the registry, packaging), run exclusively, then the model tier's rollout (a Kubernetes CronJob/Job; `docker compose run pzone-trainer` with
# docker-compose.yml). The same image runs the MLflow tracking server (`mlflow server ...`, the command
# docker-compose.yml gives its mlflow service): MLflow is already in it at the lock's version. It holds pzone-training
# (with pzone-pipelines and pzone-model: torch, mlflow, bentoml), pzone-core[cli] and dvc[s3].
#
# torch comes from PyPI as locked: on Linux that is the CUDA build with its nvidia-* wheels (several GB). A CPU-only
# image needs torch from the PyTorch CPU index (https://download.pytorch.org/whl/cpu) in uv.lock
# ([tool.uv.sources] torch/torchvision with an explicit index, then `uv lock`); that is a change of the lock, not of
# this file.
#
# dvc repro without Git: DVC normally works inside a Git repository. The image holds no repository and no git: the
# pipeline's project (dvc.yaml, params.yaml, bentofile.yaml, service.py, .dvc/config and every source file its stages
# list as deps) is baked into /opt/pzone/project and runs in DVC's no-SCM mode (core.no_scm in .dvc/config.local, as
# `pzone demo` does with `dvc init --no-scm`). What must outlive a run (dvc.lock, the DVC cache, the persisted
# outputs data/snapshot and data/test_members.json, models/, reports/, the retrain lock) lives in /var/lib/pzone, a
# volume (a PersistentVolumeClaim in Kubernetes): each run first copies the image's project over the one there, so
# the code and params are always the image's and the state is kept. The BentoML store (BENTOML_HOME) is on the same
# volume; with docker compose the model tier mounts it too and follows the new champion by itself.
FROM builder AS builder-trainer
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-install-workspace --package pzone-training --package pzone-core --extra cli
COPY core/src core/src
COPY pipelines/src pipelines/src
COPY serving/model/src serving/model/src
COPY training/src training/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --package pzone-training --package pzone-core --extra cli
# dvc[s3] is a dependency of the workspace root, not of a member: installed with the lock's versions as constraints.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv export --no-hashes --no-emit-workspace --output-file /tmp/constraints.txt \
    && uv pip install --python /app/.venv/bin/python --constraint /tmp/constraints.txt "dvc[s3]"

FROM runtime AS pzone-trainer
LABEL org.opencontainers.image.title="pzone-trainer" \
      org.opencontainers.image.description="P-ZONE trainer job (pzone retrain: dvc repro, pzone promote) and MLflow server"
# The commit every training run records (no git in the image): `--build-arg PZONE_CODE_COMMIT=<sha>`.
ARG PZONE_CODE_COMMIT=unknown
COPY --from=builder-trainer /app/.venv /app/.venv
COPY dvc.yaml params.yaml bentofile.yaml service.py .dvcignore /opt/pzone/project/
COPY .dvc/config /opt/pzone/project/.dvc/config
COPY core/src /opt/pzone/project/core/src
COPY pipelines/src /opt/pzone/project/pipelines/src
COPY training/src /opt/pzone/project/training/src
COPY serving/model/src /opt/pzone/project/serving/model/src
RUN printf '[core]\n    no_scm = true\n' > /opt/pzone/project/.dvc/config.local
ENV PZONE_DATA_DIR=/var/lib/pzone/data \
    PZONE_CODE_COMMIT=${PZONE_CODE_COMMIT} \
    BENTOML_HOME=/var/lib/pzone/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    DVC_NO_ANALYTICS=1 \
    GIT_PYTHON_REFRESH=quiet \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
WORKDIR /var/lib/pzone
USER 10001:10001
# A job, not a server: it exits when the run is done (exit codes in docs/architecture.md), so no HEALTHCHECK here;
# as the MLflow server, docker-compose.yml gives it one (GET /health).
CMD ["sh", "-c", "mkdir -p /var/lib/pzone/project && cp -R /opt/pzone/project/. /var/lib/pzone/project/ && exec pzone retrain --project /var/lib/pzone/project"]

# --- pzone-model --------------------------------------------------------------------------------------------------
# The BentoML model tier, `bentoml serve pzone_model.service:PZoneTilt` on port 3000 (POST /classify; /livez, /readyz,
# /metrics).
#
# Why this and not `bentoml containerize`: containerize needs a built Bento (a trained model) before any image exists,
# resolves the Bento's requirements afresh (only the five top-level pins of bentofile.yaml are fixed), and its
# generated image adds build-essential and git. These targets are equivalent in what they serve and install exactly
# the Bento's Python packages: the `python.packages` of bentofile.yaml plus bentoml at the version of uv.lock, and
# every transitive dependency at its uv.lock version (uv.lock as constraints). No pzone-core database stack, no torch.
# tests/deploy/test_container_images.py checks the list against bentofile.yaml and the lock, builds this very
# environment and runs `bentoml serve` from it.
#
# Two targets on one model runtime:
#   pzone-model: the Bento's source (the files bentofile.yaml includes, at their import paths: the root service.py
#       entry point is not needed there) and no model. The model comes from the BentoML store in BENTOML_HOME,
#       a volume that the trainer's package stage writes; the watcher (PZONE_MODEL_WATCH_INTERVAL_S) swaps a new
#       champion in without dropping requests. docker-compose.yml and k8s/base run this.
#   pzone-model-bento: a built Bento with its model, immutable (in Kubernetes a new champion is a new image tag; the
#       watcher is off, as in bentofile.yaml). The layout `bentoml containerize` makes (the Bento and its models/
#       folder), served the way its entrypoint does (`bentoml serve <Bento folder>`). Export the Bento into the
#       context first:
#         uv run bentoml export pzone-tilt-service:latest build/pzone-tilt-service.bento
#         mkdir -p build/bento && tar -xf build/pzone-tilt-service.bento -C build/bento
#         docker build --target pzone-model-bento -t pzone-model:<Bento version> .
FROM builder AS builder-model
# The packages: bentofile.yaml's python.packages and bentoml (the lock's version).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv export --no-hashes --no-emit-workspace --package pzone-model --output-file /tmp/constraints.txt \
    && uv venv /app/.venv \
    && uv pip install --python /app/.venv/bin/python --constraint /tmp/constraints.txt \
        bentoml==1.4.40 onnxruntime==1.32.0 numpy==2.4.6 pillow==13.0.0 pydantic==2.14.4 pydantic-settings==2.16.3

FROM runtime AS model-runtime
LABEL org.opencontainers.image.title="pzone-model" \
      org.opencontainers.image.description="P-ZONE model tier: BentoML service pzone-tilt-service (ONNX Runtime)"
COPY --from=builder-model /app/.venv /app/.venv
ENV BENTOML_DO_NOT_TRACK=True \
    BENTOML_HOME=/var/lib/pzone/bentoml
EXPOSE 3000
# Ready once the model is loaded (/readyz); slim has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4).status != 200)"]
USER 10001:10001

FROM model-runtime AS pzone-model-bento
ARG BENTO_DIR=build/bento
COPY ${BENTO_DIR} /app/bento
# BentoML writes its metrics folder under BENTOML_HOME: /tmp (an emptyDir with a read-only root filesystem).
ENV BENTOML_HOME=/tmp/bentoml \
    PZONE_MODEL_WATCH_INTERVAL_S=0
WORKDIR /app/bento
CMD ["bentoml", "serve", "/app/bento", "--host", "0.0.0.0", "--port", "3000"]

FROM model-runtime AS pzone-model
COPY serving/model/src/pzone_model /app/src/pzone_model
COPY core/src/pzone/__init__.py core/src/pzone/settings.py core/src/pzone/tilt.py core/src/pzone/preprocess.py \
     core/src/pzone/tier_contract.py /app/src/pzone/
WORKDIR /app/src
CMD ["bentoml", "serve", "pzone_model.service:PZoneTilt", "--host", "0.0.0.0", "--port", "3000"]

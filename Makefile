# `make repro`: run the whole default pipeline. `make test`: run the test suite.
# Both create .venv (pinned requirements + this package, editable) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch uses one math thread per core (a training step here: 349 ms with 1 thread, 188 ms with
# 2 on the idle 2-core machine). On a machine busy with other work, extra threads mostly spin:
# there `OMP_NUM_THREADS=1 make repro` is faster. The tests pin 1 thread per pytest worker.

.PHONY: repro test venv bench clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# `mrfer check` first: every params section is validated before DVC deletes any stage's outputs
# (a stage that refuses a bad param under dvc repro has already lost its metrics and curves).
repro: venv
	$(BIN)/python -m mrfer check
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: venv
	bash scripts/test_setup.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/loader.py

clean-venv:
	rm -rf $(VENV)

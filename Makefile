# Two entry points for a fresh machine: `make quickstart` and `make test`.
# The venv is created once; the project is (re)installed only when
# pyproject.toml changes, so a second run starts in seconds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clorch-installed

.PHONY: quickstart test install bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/clorch run studies/quickstart.yaml --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/loop_overhead.py

clean:
	rm -rf results mlflow.db mlruns

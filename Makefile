# fitscore: two commands on a fresh machine — `make serve` and `make test` (each runs setup first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_ARGS ?=

.PHONY: setup serve test lint protos demo clean

# `models fetch` is idempotent and offline once the files are there and match their manifest.
setup: $(STAMP)
	$(BIN)/fitscore-server models fetch --dir var/models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: setup
	$(BIN)/fitscore-server serve $(SERVE_ARGS)

test: setup
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

demo: setup
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) var/models build *.egg-info

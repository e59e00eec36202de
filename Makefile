# Set-up lives here so that a fresh machine needs only Python 3.11+, pip and make.
# `make run` and `make test` are the two commands of the README.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lockfiles pin every package with its hashes; pip refuses anything else.
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run test bench-render lock clean

# The service on the embedded defaults: SQLite in var/, mail to the development outbox.
# `make run SPEED=8640` runs its clock 8640 times faster (a day every 10 seconds).
run: $(RUNTIME_STAMP)
	$(BIN)/newsletter serve $(if $(SPEED),--speed $(SPEED))

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# Byte-compiled once here, so that the suite's hundreds of `newsletter` processes do
	# not each compile the package again where PYTHONDONTWRITEBYTECODE is set.
	$(BIN)/python -m compileall -q newsletter tests
	$(BIN)/pytest

bench-render: $(RUNTIME_STAMP)
	$(BIN)/python bench/render.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.lock pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): requirements-dev.lock $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

# Regenerate both lockfiles after editing the dependencies in pyproject.toml.
lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --python-version 3.11 --no-header -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --group dev --universal --generate-hashes --python-version 3.11 --no-header -q -o requirements-dev.lock

clean:
	rm -rf $(VENV) var/preview var/outbox

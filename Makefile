# certpilot: `make run` starts a demo on SQLite, `make test` runs the whole suite.
SHELL := /bin/bash
# Debian's own Python when it is new enough: issuer scripts run as an unprivileged user,
# who must be able to read the interpreter's files (a Python under /root is out of reach).
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./certpilot-data
HOST ?= 127.0.0.1
PORT ?= 8080
# Debian packages the test suite needs (installed when missing; root or sudo required).
TEST_DEBS := postgresql chromium softhsm2 curl openssl nginx-light pebble bind9

.PHONY: run test venv dev-venv debs bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "certpilot needs Python 3.11 or newer" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { scripts/install-debs.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed
dev-venv: $(VENV)/.installed-dev

debs:
	@scripts/install-debs.sh $(TEST_DEBS)

run: venv
	@if [ ! -e "$(DATA_DIR)/certpilot.db" ]; then $(BIN)/certpilot --data-dir "$(DATA_DIR)" init --demo; fi
	$(BIN)/certpilot --data-dir "$(DATA_DIR)" serve --host $(HOST) --port $(PORT)

test: dev-venv debs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench $(or $(SCENARIO),issue) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands for a fresh machine:
#   make demo   installs Switchboard and runs it with a local homeserver (SQLite, loopback)
#   make test   installs everything the tests need and runs the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint chromium install clean

$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.demo-installed $@

install: $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/switchboard demo --data-dir demo-data

# The browser tests drive Debian's chromium (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests …"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

lint: $(VENV)/.test-installed
	$(BIN)/ruff check bridge appservice web_portal alembic tests harness bench
	$(BIN)/black --check --quiet bridge appservice web_portal alembic tests harness bench
	$(BIN)/mypy bridge appservice web_portal

test: $(VENV)/.test-installed chromium lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-data

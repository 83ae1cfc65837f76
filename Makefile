# Two commands for a fresh machine:
#   make demo   installs Switchboard and runs it with a local homeserver (SQLite, loopback)
#   make test   installs everything the tests need and runs the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the versions CI tested (see the file's header); every install below goes through it
PINS   := constraints.txt

.PHONY: demo test lint chromium deploy-tools prometheus install clean constraints

$(VENV)/.demo-installed: pyproject.toml $(PINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c $(PINS) pip
	$(BIN)/pip install --quiet -c $(PINS) -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml $(PINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c $(PINS) pip
	$(BIN)/pip install --quiet -c $(PINS) -e '.[test]'
	touch $(VENV)/.demo-installed $@

# Re-pin after changing a dependency: a fresh virtualenv without pins, then its freeze.
constraints:
	rm -rf .venv-pins
	$(PYTHON) -m venv .venv-pins
	.venv-pins/bin/pip install --quiet --upgrade pip
	.venv-pins/bin/pip install --quiet '.[test]'
	{ awk '/^#/ { print; next } { exit }' $(PINS); \
	  .venv-pins/bin/pip freeze --all | grep -v -i 'switchboard'; } > $(PINS).new
	mv $(PINS).new $(PINS)
	rm -rf .venv-pins

install: $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/switchboard demo --data-dir demo-data

# The browser tests drive Debian's chromium (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests …"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

# The deploy tests run the shipped files with the distribution's nginx, Caddy and
# systemd-analyze (tests/deploy; with CI=true a missing one fails the run).
DEPLOY_TOOLS := nginx:nginx caddy:caddy systemd-analyze:systemd
deploy-tools:
	@PATH="$$PATH:/usr/sbin:/sbin"; missing=; for tool in $(DEPLOY_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing the distribution's$$missing for the deploy tests …"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$missing >/dev/null; fi; \
	fi

# The monitoring tests run Debian's prometheus and promtool on the alert rules and a live desk.
prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "Installing Debian's prometheus for the monitoring tests …"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; fi; }

lint: $(VENV)/.test-installed
	$(BIN)/ruff check bridge appservice web_portal alembic tests harness bench
	$(BIN)/black --check --quiet bridge appservice web_portal alembic tests harness bench
	$(BIN)/mypy bridge appservice web_portal harness bench

test: $(VENV)/.test-installed chromium deploy-tools prometheus lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-data

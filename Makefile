# aimem.fleet — developer entry points. A new user needs only `make demo` and `make test`
# (Debian/Ubuntu, root: the system packages are installed with apt-get when missing).

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         ?= .venv
BIN          := $(VENV)/bin
STAMP        := $(VENV)/.installed
COLL_LINK    := .collections/ansible_collections/aimem/fleet
BUILD_DIR    := build
PYTEST_ARGS  ?=
# Test files run side by side, one file per worker (a file shares one test fleet). The fleet tests
# mostly wait on SSH, daemons and health polls (a 2-CPU machine stays half idle with 3 workers), so
# 3 workers per CPU, at least 4 and at most 8.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); n=$$((n * 3)); [ $$n -lt 4 ] && n=4; [ $$n -gt 8 ] && n=8; echo $$n)
DEMO_HOSTS   ?= 3
KEEP         ?= 0

# Everything the tests and the demo need from the OS. python3-tomlkit: the modules run on the test
# hosts' /usr/bin/python3 (the hosts share the controller's read-only /usr).
APT_PKGS := openssh-server openssh-client tini netcat-openbsd iproute2 sqlite3 python3-tomlkit \
            procps util-linux curl ca-certificates

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_HOME   := $(CURDIR)/.ansible
export PATH           := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help sysdeps venv lint yamllint ansible-lint changelog-lint build test test-faults unit demo demo-down clean

help:
	@echo "make demo   - bring up a local test fleet on ai-memory 0.6.4 and run the collection against it"
	@echo "make test   - lint, build the collection and run every test (unit, module, stand-in, fleet)"
	@echo "make test-faults - only the fault-injection and security suite (tests/faults; part of make test)"
	@echo "make lint | build | unit | clean"

# --- set-up -------------------------------------------------------------------------------------
sysdeps:
	@missing=(); for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing+=($$p); done; \
	if [ $${#missing[@]} -gt 0 ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing packages: $${missing[*]} - run as root or: sudo apt-get install $${missing[*]}" >&2; exit 1; fi; \
	  echo "apt-get install $${missing[*]}"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${missing[@]}" >/dev/null; \
	fi

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(COLL_LINK):
	mkdir -p $(dir $(COLL_LINK))
	ln -sfn ../../.. $(COLL_LINK)

venv: sysdeps $(STAMP) $(COLL_LINK)

# --- checks -------------------------------------------------------------------------------------
yamllint: venv
	$(BIN)/yamllint -s .

ansible-lint: venv
	$(BIN)/ansible-lint --offline -q

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

lint: yamllint ansible-lint changelog-lint

build: venv
	mkdir -p $(BUILD_DIR)
	$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD_DIR) .

unit: venv
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# One pytest run last, so the log ends on pytest's own summary line.
test: lint build
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=40 tests $(PYTEST_ARGS)

# The fault-injection and security suite alone (make test runs it too, in the same pytest run).
test-faults: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile tests/faults $(PYTEST_ARGS)

# --- demo ---------------------------------------------------------------------------------------
demo: venv
	$(BIN)/python tests/demo/demo.py --hosts $(DEMO_HOSTS) $(if $(filter 1,$(KEEP)),--keep,)

demo-down: venv
	$(BIN)/python tests/demo/demo.py --down

clean:
	-$(BIN)/python tests/demo/demo.py --down 2>/dev/null
	rm -rf $(BUILD_DIR) .collections .ansible .pytest_cache

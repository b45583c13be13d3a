# scorefn: the two commands are `make demo` and `make test`; both install what they need.
# Python 3.13 (Azure Functions' Python 3.13 stack: azure-functions 2.x needs it). The first
# python3.13 that runs: on PATH (Debian 13's python3.13), else one pyenv installed.
PYTHON ?= $(shell for p in python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { command -v $$p; break; }; done)
PYTHON_VERSION := 3.13
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.python-$(PYTHON_VERSION)
PIP_STAMP := $(VENV)/.deps-installed
NPM_STAMP := node_modules/.deps-installed

.PHONY: install lint test demo bench clean lock

install: $(PIP_STAMP) $(NPM_STAMP)

# A venv of another Python (an older checkout's) is made again.
$(VENV_STAMP):
	@test -n "$(PYTHON)" || { echo "Python $(PYTHON_VERSION) not found: install python3.13 (see README)"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	touch $@

# The dev lock holds every package with its hash; the project itself is installed editable
# (no dependencies: the lock has them) so that the `scorefn` command works from any folder.
$(PIP_STAMP): requirements-dev.txt pyproject.toml | $(VENV_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The locks, from their short input files: requirements.txt (what Azure installs) and
# requirements-dev.txt (everything here, at requirements.txt's versions). `make test` checks
# that each lock still matches its input (tests/project/test_requirements_lock.py).
LOCK := $(VENV)/bin/uv pip compile --universal --python-version $(PYTHON_VERSION) --generate-hashes --quiet \
	--custom-compile-command "make lock"

lock: | $(VENV_STAMP)
	test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet uv==0.13.8
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) requirements-dev.in -c requirements.txt -o requirements-dev.txt

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The linter and the type checker (their configuration: pyproject.toml); `make test` fails on
# their findings before it runs the tests.
lint: $(PIP_STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

test: install lint
	$(PY) -m pytest

demo: install
	$(PY) -m scorefn demo

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .demo *.egg-info

# Hardening (README "Hardening"): `make test` runs every fuzz test, drill and the soak in a
# bounded short form; these are the long runs. The suite is tests/hardening/, every test marked
# `hardening` (pyproject.toml); each run picks its modules by name: test_fuzz_*.py and
# test_security.py, test_drills.py, test_soak.py.
.PHONY: fuzz drills soak hardening

HARDENING := $(PY) -m pytest -m hardening tests/hardening

fuzz: install
	SCOREFN_FUZZ_SCALE=20 $(HARDENING) -k "fuzz or security"

drills: install
	SCOREFN_KILL_CYCLES=10 $(HARDENING) -k drills

soak: install
	SCOREFN_SOAK_SECONDS=600 $(HARDENING) -k soak

hardening: fuzz drills soak

# The settings reference, docs/settings.md, written from the declarations in shared/settings.py.
.PHONY: settings-doc

settings-doc: | $(PY)
	$(PY) -m shared.settings_doc

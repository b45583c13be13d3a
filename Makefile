# scorefn: the two commands are `make demo` and `make test`; both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.deps-installed
NPM_STAMP := node_modules/.deps-installed

.PHONY: install test demo bench clean

install: $(PIP_STAMP) $(NPM_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(PIP_STAMP): requirements.txt requirements-dev.txt requirements-report.txt requirements-compiled.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: install
	$(PY) -m pytest

demo: install
	$(PY) -m scorefn demo

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .demo

# Hardening (README "Hardening"): `make test` runs every fuzz test, drill and the soak in a
# bounded short form; these are the long runs.
.PHONY: fuzz drills soak hardening

fuzz: install
	SCOREFN_FUZZ_SCALE=20 $(PY) -m pytest tests/test_hardening_fuzz_http.py \
	    tests/test_hardening_fuzz_queue.py tests/test_hardening_fuzz_router.py \
	    tests/test_hardening_security.py

drills: install
	SCOREFN_KILL_CYCLES=10 $(PY) -m pytest tests/test_hardening_drills.py

soak: install
	SCOREFN_SOAK_SECONDS=600 $(PY) -m pytest tests/test_hardening_soak.py

hardening: fuzz drills soak

# The settings reference, docs/settings.md, written from the declarations in shared/settings.py.
.PHONY: settings-doc

settings-doc: | $(PY)
	$(PY) -m shared.settings_doc

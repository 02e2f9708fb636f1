# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CHROMIUM := /usr/bin/chromium
# checkov runs the infra checks of `make test` from a venv of its own: it pins packages
# (packaging, networkx) that the app's venv needs newer.
CHECKOV := checkov==3.3.30
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

# Test processes `make test` runs at once (pytest-xdist; whole test files go to one process,
# so module fixtures such as a devhost are shared as before). The suites spend much of
# their time waiting on Azurite, devhost and worker processes, so two cores run three well.
TEST_WORKERS ?= 3

.PHONY: install test quick chaos serve demo lint bench clean lock

install: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[server,dev,samples,mlflow]'
	touch $@

$(CHECKOV_STAMP): Makefile
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check '$(CHECKOV)'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads one).
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The full suite (what CI runs). The installs run side by side: they wait on downloads.
test:
	$(MAKE) --no-print-directory -j3 install $(CHROMIUM) $(CHECKOV_STAMP)
	$(PY) -m ruff check --quiet .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# Fast feedback while editing: lint and the unit tests (no Azurite, no browser), under a
# minute. `make test` stays the one full command.
quick: $(PY_STAMP)
	$(PY) -m ruff check --quiet .
	$(PY) -m pytest tests/unit -q -n 2 --dist loadfile -m "not slow"

# The chaos suite's long form: CHAOS_ROUNDS rounds of 2,000-file jobs under faults
# (`make test` runs 3); CHAOS_SEED=<seed> replays a run.
CHAOS_ROUNDS ?= 20
chaos: install
	CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(PY) -m pytest tests/chaos -q -p no:cacheprovider --timeout=0

# The scoring image's packages, each pinned with its hashes (infra/docker/Dockerfile installs
# them with --require-hashes): resolved by uv for the image's Python 3.11 on x86_64 Linux.
# `make lock` compiles it anew after a change of requirements*.txt.
requirements-scoring.lock: requirements-scoring.txt requirements.txt | $(PY_STAMP)
	$(PY) -m uv pip compile --quiet --generate-hashes --python-version 3.11 \
	    --python-platform x86_64-unknown-linux-gnu \
	    --custom-compile-command "make requirements-scoring.lock" \
	    requirements-scoring.txt -o $@

lock: $(PY_STAMP)
	rm -f requirements-scoring.lock
	$(MAKE) --no-print-directory requirements-scoring.lock

serve: install
	$(PY) -m devhost --app function_app --port 7071

demo: install
	$(PY) -m samples.demo

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache test-artifacts

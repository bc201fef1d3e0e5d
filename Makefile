# netsync — everything installs into $(VENV) from nothing but Python.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install test unit integration demo run bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(PY) -m pytest tests/unit tests/integration

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

demo: install
	$(PY) -m devtools.demo

run: install
	$(PY) -m devtools.run

# ARGS=--quick: smaller workloads, once each; ARGS="--only chain,ingest": a subset.
# wrk (the webhook ingestion load tool) comes from the system's packages; without it
# that one figure is skipped and the report says so.
bench: install
	@command -v wrk >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
	  echo "wrk not installed (apt-get install wrk): the ingestion figure will be skipped"
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache

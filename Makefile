# netsync — everything installs into $(VENV) from nothing but Python.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install test unit integration fuzz demo run bench clean

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

# schemathesis over every endpoint of /openapi.json; FUZZ_EXAMPLES cases per operation and mode
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(PY) -m pytest tests/fuzz

demo: install
	$(PY) -m devtools.demo

run: install
	$(PY) -m devtools.run

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache

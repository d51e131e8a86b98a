# Dispo: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data

.PHONY: demo test lint lock install es-start es-stop clean

$(BIN)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

install: $(BIN)/.installed

# Imports the samples into the embedded index and serves the API.
demo: install
	bash scripts/demo.sh

# Starts a throwaway Elasticsearch, RabbitMQ broker and Keycloak (unless DISPO_ES_URL / DISPO_AMQP_URL /
# DISPO_OIDC_ISSUER name running ones), runs the whole suite on both backends.
test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	bash scripts/ensure-chromium.sh
	bash scripts/rabbitmq.sh run -- bash scripts/keycloak.sh run -- bash scripts/elasticsearch.sh run -- \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

# Resolves pyproject.toml's pins, every extra included, into requirements.lock with hashes.
lock: install
	$(BIN)/uv pip compile pyproject.toml --all-extras --generate-hashes --python-version 3.11 -o requirements.lock

es-start:
	bash scripts/elasticsearch.sh start

es-stop:
	bash scripts/elasticsearch.sh stop

clean:
	rm -rf $(VENV) .dispo .pytest_cache .ruff_cache

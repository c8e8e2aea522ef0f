# sessionstore: developer and CI entry points. The targets match the README.
#   make demo   run the main job on the embedded default (SQLite file here, no server)
#   make test   lint, typecheck, then the whole test suite against a real PostgreSQL
# Run `make help` for the rest.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Touched after a successful install; re-installs only when pyproject.toml changes. The demo
# needs only the runtime dependencies; lint, type-check and tests need the dev extras too.
RUNTIME_STAMP := $(VENV)/.stamp-runtime
DEV_STAMP     := $(VENV)/.stamp-dev

SHELL       := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv demo test lint typecheck fmt unit bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(DEV_STAMP) ## create .venv and install the project with its dev extras (editable)

$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e .
	touch $@

# The dev install includes the runtime one, so it satisfies the demo's stamp as well.
$(DEV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(RUNTIME_STAMP) $@

demo: $(RUNTIME_STAMP) ## run the demo on the embedded default (runtime dependencies only)
	$(BIN)/sessionstore demo

lint: venv ## ruff lint and format check (changes nothing)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv ## mypy strict on the packages listed in pyproject.toml
	$(BIN)/mypy

# scripts/ensure-postgres.sh prints only the URL on stdout; it re-checks and reuses
# SESSIONSTORE_TEST_DATABASE_URL when that is already set. pytest exits 5 when it collected
# no tests: that means the suite vanished, so it fails the build like any other error.
test: lint typecheck ## lint, typecheck, then the whole test suite against a real PostgreSQL
	@url="$$(scripts/ensure-postgres.sh)"; \
	echo "SESSIONSTORE_TEST_DATABASE_URL=$$(sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$$url")"; \
	rc=0; SESSIONSTORE_TEST_DATABASE_URL="$$url" $(BIN)/pytest || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "error: pytest collected no tests; the test suite is missing" >&2; fi; \
	exit "$$rc"

# $(wildcard): git keeps no empty directory, so a fresh clone may lack one of them for now.
unit: venv ## fast tests only: tests/unit and tests/property (no PostgreSQL)
	$(BIN)/pytest $(wildcard tests/unit tests/property)

bench: venv ## benchmarks beside their baselines (needs PostgreSQL; prints a markdown table)
	@url="$${SESSIONSTORE_TEST_DATABASE_URL:-$$(scripts/ensure-postgres.sh)}"; \
	$(BIN)/python bench/append.py --url "$$url"; \
	$(BIN)/python bench/views_bench.py --url "$$url"; \
	$(BIN)/python bench/queries_bench.py --url "$$url"; \
	$(BIN)/python bench/http_bench.py --url "$$url"; \
	$(BIN)/python bench/kafka_bench.py --url "$$url"

fmt: venv ## apply ruff's fixes and formatting (reports what it cannot fix)
	$(BIN)/ruff check --fix --exit-zero .
	$(BIN)/ruff format .

clean: ## remove the virtualenv, caches, build output and the demo's SQLite file
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f sessionstore.db sessionstore.db-*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

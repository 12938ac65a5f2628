# Every target is a thin call of the dbtools command or of a tool; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DBTOOLS := $(BIN)/dbtools

.PHONY: help demo migrate rollback status seed db-start db-stop db-status roles schema lint typecheck test check bench bench-quick clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# uv builds the virtualenv: it installs in parallel from its cache, so a cold `make demo` takes
# seconds. pip fetches uv into the virtualenv itself (the system's pip when there is one, else the
# virtualenv's own), so nothing is installed outside the project. Runtime targets install the
# runtime dependencies only; lint, typecheck and test add the development tools; bench and
# bench-quick add the benchmark's own (SQLAlchemy, asyncpg, matplotlib: the `bench` extra).
UV := $(BIN)/uv
RUNTIME := $(VENV)/.runtime
DEV := $(VENV)/.dev
BENCH := $(VENV)/.bench

$(UV):
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet uv 2>/dev/null \
	  || { $(BIN)/python -m ensurepip --default-pip >/dev/null && $(BIN)/python -m pip install --quiet uv; }

$(RUNTIME): pyproject.toml | $(UV)
	$(UV) pip install --quiet --python $(BIN)/python -e .
	touch $@

$(DEV): $(RUNTIME)
	$(UV) pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $@

$(BENCH): $(RUNTIME)
	$(UV) pip install --quiet --python $(BIN)/python -e '.[bench]'
	touch $@

demo: $(RUNTIME) ## set everything up, migrate, seed, print the demo tenant
	$(DBTOOLS) demo

migrate: $(RUNTIME) ## create the database if missing and apply pending migrations
	$(DBTOOLS) migrate

rollback: $(RUNTIME) ## roll back the newest applied migration
	$(DBTOOLS) rollback

status: $(RUNTIME) ## list applied and pending migrations
	$(DBTOOLS) status

seed: $(RUNTIME) ## create the demo tenant (idempotent)
	$(DBTOOLS) seed

db-start: $(RUNTIME) ## start the embedded PostgreSQL
	$(DBTOOLS) db start

db-stop: $(RUNTIME) ## stop the embedded PostgreSQL
	$(DBTOOLS) db stop

db-status: $(RUNTIME) ## say whether the embedded PostgreSQL runs, and where
	$(DBTOOLS) db status

roles: $(RUNTIME) ## create or update the runtime role (dbtools_app) and its grants (idempotent)
	$(DBTOOLS) roles setup

schema: $(RUNTIME) ## write what the migrations produce to sql/schema/schema.sql
	$(DBTOOLS) schema dump

lint: $(DEV) ## ruff (lint and format) and squawk (migrations)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/squawk sql/*.sql

typecheck: $(DEV) ## mypy --strict
	$(BIN)/mypy

# The data-access and tenant-command tests run a second time with every connection of the code
# under test going through PgBouncer in transaction pooling mode (tests/conftest.py).
THROUGH_PGBOUNCER := tests/test_tenants.py tests/test_queries.py tests/test_cli_tenants.py \
	tests/test_importing.py tests/test_seed.py tests/test_audit.py

test: lint typecheck ## lint, type-check, the suite against a real PostgreSQL, data access again through PgBouncer
	$(BIN)/pytest -n auto --dist loadgroup
	DBTOOLS_TEST_POOLER=pgbouncer $(BIN)/pytest -n auto -q $(THROUGH_PGBOUNCER)

check: test ## exactly what CI runs

# The benchmarks make their tables in scratch databases on the configured server and drop them;
# nothing is written to the configured database, so neither target needs `migrate`.
bench: $(BENCH) ## every benchmark, a few minutes: writes bench/results.md and bench/results.png
	$(BIN)/python bench/run.py

bench-quick: $(BENCH) ## the benchmarks in under a minute (fewer rounds, smaller tables): bench/results-quick.md
	$(BIN)/python bench/run.py --quick

clean: $(RUNTIME) ## delete the embedded cluster (data included) and the virtualenv
	$(DBTOOLS) db delete --yes
	rm -rf .dbtools $(VENV)

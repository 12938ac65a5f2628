# Every target is a thin call of the dbtools command or of a tool; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DBTOOLS := $(BIN)/dbtools

.PHONY: help demo migrate rollback status seed db-start db-stop db-status schema lint typecheck test check bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed ## set everything up, migrate, seed, print the demo tenant
	$(DBTOOLS) demo

migrate: $(VENV)/.installed ## create the database if missing and apply pending migrations
	$(DBTOOLS) migrate

rollback: $(VENV)/.installed ## roll back the newest applied migration
	$(DBTOOLS) rollback

status: $(VENV)/.installed ## list applied and pending migrations
	$(DBTOOLS) status

seed: $(VENV)/.installed ## create the demo tenant (idempotent)
	$(DBTOOLS) seed

db-start: $(VENV)/.installed ## start the embedded PostgreSQL
	$(DBTOOLS) db start

db-stop: $(VENV)/.installed ## stop the embedded PostgreSQL
	$(DBTOOLS) db stop

db-status: $(VENV)/.installed ## say whether the embedded PostgreSQL runs, and where
	$(DBTOOLS) db status

schema: $(VENV)/.installed ## write what the migrations produce to sql/schema/schema.sql
	$(DBTOOLS) schema dump

lint: $(VENV)/.installed ## ruff (lint and format) and squawk (migrations)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/squawk sql/*.sql

typecheck: $(VENV)/.installed ## mypy --strict
	$(BIN)/mypy

test: lint typecheck ## lint, type-check, then the test suite against a real PostgreSQL
	$(BIN)/pytest -n auto

check: test ## exactly what CI runs

bench: $(VENV)/.installed ## benchmarks (medians side by side): tenants.get_by_slug vs raw psycopg
	$(BIN)/python bench/get_by_slug.py

clean: db-stop ## stop the embedded cluster and delete it with the virtualenv
	rm -rf .dbtools $(VENV)

# Every target sets itself up: a fresh clone needs only Python 3.11, make and network to PyPI.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Three test processes, each with its own broker and Redis, a file per process at a time:
# the end-to-end tests mostly wait on group joins, so they overlap well even on 2 cores.
PARALLEL ?= -n 3 --dist loadfile

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: ## Create .venv with the project and dev tools (idempotent)
	@scripts/bootstrap.sh

.PHONY: demo
demo: install ## The main job: embedded broker, Redis, worker, simulated traffic, live KPIs (Ctrl-C stops all)
	$(BIN)/kpi dev --simulate --watch

.PHONY: bench
bench: install ## Measure throughput, latency and memory (kpi bench; docs/benchmarks.md)
	$(BIN)/kpi bench --out bench-result.json

.PHONY: dev
dev: install ## The embedded stack alone, no traffic (kpi dev)
	$(BIN)/kpi dev

.PHONY: lint
lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: typecheck
typecheck: install ## mypy, strict, on stream_app and schemas
	$(BIN)/mypy

.PHONY: schemas
schemas: install ## Regenerate the JSON Schemas in schemas/json
	$(BIN)/python -m schemas.jsonschema

.PHONY: test
test: install lint typecheck ## Lint, type-check, then run every test (what CI runs)
	$(BIN)/pytest $(PARALLEL) --durations=10 $(PYTEST_ARGS)

.PHONY: docs
docs: install ## Rewrite the KPI tables of docs/metrics.md from the KPI registry
	$(BIN)/python -m stream_app.kpis.docs

.PHONY: unit
unit: install ## Only the tests that need no broker or Redis
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

.PHONY: chaos
chaos: install ## Only the fault tests (broker lost or frozen, floods of bad input, duplicates, the fault matrix; 6 to 8 min)
	$(BIN)/pytest tests/test_faults.py tests/test_fault_matrix.py $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: install ## Fuzz the intake: 1,000,000 mutated messages through the partition path (a few minutes)
	$(BIN)/python -m tests.fuzz_intake --messages 1000000

.PHONY: clean
clean: ## Remove the venv, caches and local state
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var test-artifacts

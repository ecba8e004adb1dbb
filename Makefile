# The two commands: `make run` runs the whole product, `make test` passes the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint imports format check-deploy clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## run: migrate, load demo data once, start web, workers, beat and Flower (Ctrl-C stops all)
run: $(STAMP)
	./scripts/run.sh

## test: the whole suite on PostgreSQL and Redis with real Celery workers
test: $(STAMP) imports
	./scripts/test.sh $(ARGS)

## lint: ruff, and the import graph (no cycle, no upward import, no long module)
lint: $(STAMP) imports
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

imports:
	$(PYTHON) scripts/import_cycles.py

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf var/

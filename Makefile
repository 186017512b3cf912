# Every target reuses .venv; it is (re)built when missing or older than the requirement files.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JARS_STAMP := .jars/.copied
PYTEST_ARGS ?=

.PHONY: venv jars test lint format wheel demo compose-check bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

# The shaded GCS connector for local Spark (Delta's jars come from delta-spark's pip helper at first start).
jars: $(JARS_STAMP)

$(JARS_STAMP): jars/pom.xml
	@command -v mvn >/dev/null || { echo "make jars needs Maven (mvn) and Java 17"; exit 1; }
	mvn --quiet --batch-mode -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars
	@touch $(JARS_STAMP)

test: venv jars ## the whole suite: Spark jobs, DAG (local and Databricks stand-in), faults
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff (with Airflow's AIR rules) and the formatter's check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

wheel: venv ## dist/order_tracking_spark_jobs-*.whl, with the stage-orders and merge-orders entry points
	rm -rf dist build
	$(PY) -m build --wheel --outdir dist . >/dev/null
	@ls dist/*.whl

demo: venv jars ## the whole DAG, offline, on the seed data (GCS emulator, local Spark, airflow dags test)
	$(PY) scripts/demo.py

compose-check: venv ## docker-compose.yaml against the Compose spec; the image tag against requirements.txt
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml
	$(PY) scripts/check_image_version.py

bench: ## not built yet (issue 5); fails rather than pretending
	@echo "make bench is not implemented yet: see issue 5 (bench/workload.py, the generator, exists)"; exit 1

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .local

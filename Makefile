# Every target reuses .venv; it is (re)built when missing or older than the requirement files.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JARS_STAMP := .jars/.copied
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv jars test lint format wheel demo compose-check bench bench-smoke clean

# docker compose's settings: .env.example plus a Fernet key generated here (never committed; .env is ignored).
.env: .env.example | venv
	@test ! -e .env || { echo ".env exists; remove it to regenerate"; exit 1; }
	cp .env.example .env
	echo "AIRFLOW__CORE__FERNET_KEY=$$($(PY) -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" >> .env
	@echo "wrote .env with a generated AIRFLOW__CORE__FERNET_KEY"

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

bench: venv jars ## merge scaling, staging floor, versus the notebooks, fixed costs, experiments (about 26 min on 2 cores)
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.report

bench-smoke: venv jars ## the benchmark at tiny sizes, for correctness only (no timing goals)
	$(PY) -m bench.run --sizes 20k,40k --batch-rows 2k --original-batch-rows 10k --rows-per-file 5k \
		--small-files 20 --small-files-rows 2k --large-file-rows 2k --repeats 1 --skip-experiments --out .local/bench-smoke.json

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .local

# Every target reuses .venv; it is (re)built when missing or older than the requirement files.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JARS_STAMP := .jars/.copied
# requirements-bench.txt: the benchmark's peers (delta-rs), for make bench and bench-smoke.
BENCH_STAMP := $(VENV)/.bench-installed
# fake-gcs-server at the compose file's tag, for the compose parity test (tests/dags/test_compose_parity.py).
FAKE_GCS_VERSION := $(shell sed -n 's|.*fsouza/fake-gcs-server:\([0-9.]*\).*|\1|p' docker-compose.yaml)
FAKE_GCS := .tools/bin/fake-gcs-server
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The oldest supported Databricks runtime (docs/OPERATIONS.md, "Supported runtimes"): its PySpark, Delta and libraries in a
# venv of their own, its Delta jars (and Spark 3.5's Connect server) from jars/pom.xml's profile.
OLDEST_RUNTIME := dbr15.4
OLDEST_VENV := .venv-$(OLDEST_RUNTIME)
OLDEST_STAMP := $(OLDEST_VENV)/.installed
OLDEST_JARS := .jars-$(OLDEST_RUNTIME)

.PHONY: venv jars tools check test test-oldest-runtime deploy lint format wheel demo compose-check bench bench-smoke fuzz docs clean

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

# Delta Lake's jars and the shaded GCS connector for local Spark, resolved once (no Ivy at session start).
jars: $(JARS_STAMP)

$(JARS_STAMP): jars/pom.xml
	@command -v mvn >/dev/null || { echo "make jars needs Maven (mvn) and Java 17"; exit 1; }
	rm -rf .jars
	mvn --quiet --batch-mode -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars
	@touch $(JARS_STAMP)

# Without Go, the compose parity test is skipped with its reason (CI requires it: .ci/run).
tools: $(FAKE_GCS)

$(FAKE_GCS): docker-compose.yaml
	@if command -v go >/dev/null; then \
		GOBIN=$(CURDIR)/.tools/bin go install github.com/fsouza/fake-gcs-server@v$(FAKE_GCS_VERSION) && touch $@; \
	else echo "no Go here: fake-gcs-server not built; the compose parity test will be skipped"; fi

# The fast lane, while changing code: lint, then every test that needs no JVM and no Airflow service (the
# markers conftest.py gives by fixture: spark, airflow; e2e and bench by hand). DAG runs through dag.test()
# with the stub jobs are in it; a test that starts a JVM without the spark marker fails.
check: venv ## the fast lane (about 2 min): lint, and every test that needs no JVM and no Airflow service
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -m "not spark and not e2e and not bench" $(PYTEST_ARGS)

# Two workers (pytest-xdist): the tests that start processes of their own run one at a time on one of them.
XDIST ?= -n 2 --dist loadgroup
test: venv jars tools ## the whole suite: Spark jobs, DAG (local, Databricks stand-in, Airflow's services, compose parts), faults
	$(PY) -m pytest -m "not bench" $(XDIST) $(PYTEST_ARGS)

# The property tests and the stage-reader fuzzer with new draws each run, about ten times make test's
# (HISTORIES=… FILES=… to change). A file the fuzzer breaks goes into tests/data/fuzz-corpus/, once fixed.
HISTORIES ?= 2000
FILES ?= 1500
fuzz: venv jars ## Hypothesis: new event histories against the contract's model, new hostile files against the stage
	HYPOTHESIS_PROFILE=fuzz ORDER_TRACKING_PROPERTY_HISTORIES=$(HISTORIES) ORDER_TRACKING_FUZZ_FILES=$(FILES) \
		$(PY) -m pytest --timeout 3600 tests/spark_jobs/test_properties.py tests/spark_jobs/test_stage_fuzz.py $(PYTEST_ARGS)

# The Spark job tests on the oldest supported runtime's PySpark and Delta (CI runs both this and make test).
test-oldest-runtime: $(OLDEST_STAMP) $(OLDEST_JARS)/.copied
	ORDER_TRACKING_SPARK_JARS=$(CURDIR)/$(OLDEST_JARS) $(OLDEST_VENV)/bin/python -m pytest tests/spark_jobs -m spark \
		$(XDIST) $(PYTEST_ARGS)

$(OLDEST_STAMP): requirements-$(OLDEST_RUNTIME).txt pyproject.toml
	@test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -r requirements-$(OLDEST_RUNTIME).txt
	$(OLDEST_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(OLDEST_STAMP)

$(OLDEST_JARS)/.copied: jars/pom.xml
	@command -v mvn >/dev/null || { echo "make test-oldest-runtime needs Maven (mvn)"; exit 1; }
	rm -rf $(OLDEST_JARS)
	mvn --quiet --batch-mode -f jars/pom.xml -P $(OLDEST_RUNTIME) dependency:copy-dependencies \
		-DoutputDirectory=$(CURDIR)/$(OLDEST_JARS)
	@touch $@

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

deploy: venv ## the wheel, at a version of its own, into a Unity Catalog volume (Databricks SDK auth; prints ORDER_TRACKING_WHEEL_URI)
	$(PY) scripts/deploy.py

demo: venv jars ## the whole DAG, offline, on the seed data (GCS emulator, local Spark, airflow dags test)
	$(PY) scripts/demo.py

docs: venv ## docs/CONFIGURATION.md from the settings registries (a test fails when it is stale)
	$(PY) scripts/configuration_doc.py

compose-check: venv ## docker-compose.yaml against the Compose spec; the image tag against requirements.txt
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml
	$(PY) scripts/check_image_version.py

$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	@touch $(BENCH_STAMP)

bench: venv jars $(BENCH_STAMP) ## merge scaling (with the notebooks and delta-rs), staging floor, fixed costs, experiments
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.report

# One run of the benchmark's own run() at tiny sizes, its figures asserted (tests/bench/test_bench_smoke.py).
bench-smoke: venv jars $(BENCH_STAMP) ## the benchmark at tiny sizes, for correctness only (no timing goals)
	$(PY) -m pytest tests/bench -m bench $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .local

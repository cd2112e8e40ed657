PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: run test lint typecheck bench clean install dist

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# What the broker needs to run.
$(RUN_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Everything the tests and the checks need (real clients, the oci SDK and CLI, selenium, psycopg, ruff, mypy).
$(TEST_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@ $(RUN_STAMP)

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/kafkite serve --override log.dirs=./data

# system_deps.py installs what the suite needs from the system (as root, with apt) or says which suites will be
# skipped; under CI=true a missing tool stops here, and the suite turns any skip into a failure. The suite
# also builds the wheel and sdist and installs the wheel into fresh virtual environments (tests/test_wheel.py).
test: $(TEST_STAMP)
	$(BIN)/python tests/system_deps.py
	$(BIN)/ruff check kafkite tests benchmarks
	$(BIN)/ruff format --check kafkite tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -rs $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check --fix kafkite tests benchmarks
	$(BIN)/ruff format kafkite tests benchmarks

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/produce_consume.py

# The wheel and the sdist, in dist/.
dist: $(TEST_STAMP)
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) data dist build

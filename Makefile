# Newcomer entry points: `make demo` runs the product on its embedded default, `make test`
# sets up what the tests need and runs them. Both create .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint services venv clean bench

$(BIN)/switchboard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/switchboard

demo: venv
	$(BIN)/switchboard chat --demo

services:
	bash tests/setup_services.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Test files run in 4 processes (most tests wait on subprocesses, servers and sleeps, so
# more processes than cores pay off); each file stays in one process for its fixtures.
test: venv services lint
	$(BIN)/pytest -n 4 --dist loadfile

bench: venv
	$(BIN)/python bench/step_overhead.py
	$(BIN)/python bench/concurrency.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache switchboard.db*

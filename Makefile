# Two entry points (see README): `make run` (all notebooks headless + report) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= all

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints-cpu.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Prints one line per notebook as it starts and ends; executed notebooks (.ipynb + .html) go to build/notebooks.
run: setup
	$(BIN)/python -m ptycholib notebooks run --out-dir build/notebooks --fig-dir figures --report figures/REPORT.md

# Two pytest-xdist workers; tests/conftest.py puts the slowest files first and worksteal keeps that
# order while balancing the rest. PYTEST_ARGS adds options, e.g. `make test PYTEST_ARGS="-m 'not slow'"`.
PYTEST_ARGS ?=
test: setup
	$(BIN)/python -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m ptycholib bench --json build/bench.json

clean:
	rm -rf build $(VENV) *.egg-info

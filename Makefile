# Quick start: `make demo` trains and evaluates a small SMOSE run; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SMOSE := $(VENV)/bin/smose
DEMO_ENV ?= Hopper-v5
DEMO_STEPS ?= 20000
DEMO_DIR ?= runs/demo

.PHONY: setup setup-test demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

demo: setup
	$(SMOSE) train --env $(DEMO_ENV) --steps $(DEMO_STEPS) --learning-starts 5000 --eval-every 5000 --out $(DEMO_DIR) --force
	$(SMOSE) eval $(DEMO_DIR) --episodes 10
	$(SMOSE) info $(DEMO_DIR)

test: setup-test
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache

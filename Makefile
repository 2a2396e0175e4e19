# Two commands: `make run` (service on an embedded default) and `make test` (the suite CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv bench clean

venv: $(STAMP)

# the package is installed editable (pyproject.toml): imports and console scripts (reco-*) work from anywhere
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

run: $(STAMP)
	$(VENV)/bin/reco-run

bench: $(STAMP)
	$(PY) bench/bench_predict.py

clean:
	rm -rf $(VENV) var .pytest_cache

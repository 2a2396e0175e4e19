# Two commands: `make run` (service on an embedded default) and `make test` (the suite CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv browser bench clean

venv: $(STAMP)

# the package is installed editable (pyproject.toml): imports and console scripts (reco-*) work from anywhere
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The /ui/ tests drive Debian's chromium through playwright (Playwright's own browser download is not
# reachable everywhere). Nothing happens when chromium is on PATH; as root with apt it is installed;
# otherwise the tests say why they cannot run (and fail under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt) for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "could not install chromium: the browser tests will say so"; \
	  else \
	    echo "chromium is missing and cannot be installed here (needs root and apt): the browser tests will say so"; \
	  fi; }

run: $(STAMP)
	$(VENV)/bin/reco-run

bench: $(STAMP)
	$(PY) bench/bench_predict.py

clean:
	rm -rf $(VENV) var .pytest_cache

# Two entry points, each installing what it needs into .venv first:
#   make demo   - the embedded demo (no downloads, no GPU)
#   make test   - the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,demo]'
	$(VENV)/bin/dithub kernels build || echo 'no C merge kernels: merges run the plain torch kernels'
	touch $@

.PHONY: demo test lint bench
demo: $(VENV)/.installed
	$(PY) examples/quickstart.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dithub tests benchmarks examples
	$(VENV)/bin/mypy dithub
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed
	$(PY) benchmarks/commit.py

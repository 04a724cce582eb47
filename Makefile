# The README's two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test bench lint clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "mapnb needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[bench]'
	touch $@

demo: $(VENV)/.installed  ## make a venv, install, run the example on the local pool
	$(PY) examples/demo.py

test: $(VENV)/.installed-test  ## make a venv, install with test extras, lint, run the tests
	$(PY) -m ruff check mapnb tests benchmarks examples
	$(PY) -m pytest

bench: $(VENV)/.installed-bench  ## mapnb against its peers, side by side (see README)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

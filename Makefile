# The README's two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
CHROMIUM := /usr/bin/chromium

.PHONY: demo test bench chromium notebooks lab lint clean

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

test: $(VENV)/.installed-test chromium lint  ## install, lint, run the tests and the tutorial notebooks
	$(PY) -m pytest --nbval-lax --nbval-current-env

lint: $(VENV)/.installed-test  ## ruff over the code, tests, benchmarks, examples and notebooks
	$(PY) -m ruff check mapnb tests benchmarks examples notebooks

# The browser tests drive Debian's Chromium through Playwright (never `playwright install`).
# Installing it needs root; without it those tests skip, unless MAPNB_REQUIRE_BROWSER=1.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no $(CHROMIUM) and no root to install it; the browser tests will skip"; fi; \
	fi

bench: $(VENV)/.installed-bench  ## mapnb against its peers, side by side (see README)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/widget.py
	$(PY) benchmarks/busy_kernel.py
	$(PY) benchmarks/dask_backend.py
	$(PY) benchmarks/cache.py
	$(PY) benchmarks/flyte_side_by_side.py
	$(PY) benchmarks/notebooks.py

notebooks: $(VENV)/.installed-test  ## re-execute the tutorials in place, outputs and widget state saved
	$(PY) notebooks/execute.py notebooks/*.ipynb

lab: $(VENV)/.installed  ## install JupyterLab beside mapnb and open the tutorials
	$(PIP) install jupyterlab '.[dask,flyte]'
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-artifacts

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

# Under coverage (config in pyproject.toml), also in the local pool's fork server and
# workers; the report prints whether or not the tests passed, and no threshold fails it yet.
# The tutorials run through mapnb's own notebook runner, two at a time (JUnit XML and the
# executed notebooks in test-artifacts/).
test: $(VENV)/.installed-test chromium lint  ## install, lint, run the tests and the tutorial notebooks
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest; status=$$?; \
	  $(PY) -m coverage run -m mapnb notebooks notebooks/ --concurrency 2 --cell-timeout 600 \
	    --output-dir test-artifacts/executed --junit-xml test-artifacts/notebooks.xml || status=1; \
	  $(PY) -m coverage combine -q && $(PY) -m coverage report; exit $$status

lint: $(VENV)/.installed-test  ## ruff over the code, tests, benchmarks, examples and notebooks; mypy over mapnb/
	$(PY) -m ruff check mapnb tests benchmarks examples notebooks
	$(PY) -m mypy

# The browser tests drive Debian's Chromium through Playwright (never `playwright install`).
# Installing it needs root; without it those tests skip, unless MAPNB_REQUIRE_BROWSER=1.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no $(CHROMIUM) and no root to install it; the browser tests will skip"; fi; \
	fi

# Every benchmark writes benchmarks/results/*.json; readme.py then rewrites the README's
# tables from them. A quick check of the pipeline (noisy numbers, no 1,000,000-item run):
#   make bench MAPNB_BENCH_REPEAT=1 QUICK=1
bench: $(VENV)/.installed-bench chromium  ## mapnb against its peers, side by side; rewrites the README's tables
	$(PY) benchmarks/run.py $(if $(QUICK),--quick)
	$(PY) benchmarks/widget.py
	$(PY) benchmarks/grid_render.py
	$(PY) benchmarks/sweep_views.py
	$(PY) benchmarks/busy_kernel.py
	$(PY) benchmarks/dask_backend.py
	$(PY) benchmarks/cache.py
	$(PY) benchmarks/flyte_side_by_side.py
	$(PY) benchmarks/notebooks.py
	$(PY) benchmarks/readme.py

notebooks: $(VENV)/.installed-test  ## re-execute the tutorials in place, outputs and widget state saved
	$(PY) notebooks/execute.py notebooks/*.ipynb

lab: $(VENV)/.installed  ## install JupyterLab beside mapnb and open the tutorials
	$(PIP) install jupyterlab '.[dask,flyte]'
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-artifacts

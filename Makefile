# Habits (STYLE.md rule 15). Every target creates the virtual environment and builds
# the extensions first, so each works on a fresh clone.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.deps-installed
SOURCES := $(wildcard core_ext/*.pyx core_ext/*.pxd) setup.py pyproject.toml

.PHONY: build debug test test-fast bench demo lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Build dependencies go into the venv once, so rebuilds need no isolated build env.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "setuptools>=69" wheel "Cython>=3.1,<3.4" "numpy>=2.0"
	$(PIP) install --quiet --no-build-isolation -e '.[test]'
	touch $(STAMP)

core_ext/.built: $(STAMP) $(SOURCES)
	$(PY) setup.py build_ext --inplace --quiet
	touch core_ext/.built

build: core_ext/.built

debug: clean $(STAMP)
	ENGINE_DEBUG=1 $(PY) setup.py build_ext --inplace --force

test: build
	$(PY) -m pytest -q

test-fast: build
	$(PY) -m pytest -q -m "not slow"

bench: build
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,max,rounds
	mkdir -p var && $(VENV)/bin/engine bench --json var/bench.json

demo: build
	$(VENV)/bin/engine demo

lint: $(STAMP)
	$(PIP) install --quiet 'ruff>=0.6' 'cython-lint>=0.16'   # the [lint] extra's tools; the stamp installed the project
	$(VENV)/bin/ruff check --no-cache engine gateway tests bench tools   # a stale cache once hid a finding
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/cython-lint core_ext   # it runs pycodestyle from PATH

clean:
	rm -rf build core_ext/*.c core_ext/*.so core_ext/*.html core_ext/.built

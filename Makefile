# GeoML — two commands do everything on a fresh Debian 12 machine:
#   make demo   set up, then run the main job on built-in sample data (demo_out/)
#   make test   set up, then run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1
# QGIS and GDAL print a lot at start-up; keep logs readable
export QGIS_DEBUG ?= -1

.PHONY: setup demo test test-fast package run stage lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py --out demo_out

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check geoml_plugin tests scripts bench

stage:
	@$(if $(wildcard $(PY)),$(PY),/usr/bin/python3) scripts/package.py --stage-only

package:
	@$(if $(wildcard $(PY)),$(PY),/usr/bin/python3) scripts/package.py

run: setup stage
	bash scripts/run_qgis.sh

bench: setup
	$(PY) bench/predict.py

clean:
	rm -rf build dist demo_out .pytest_cache test_artifacts

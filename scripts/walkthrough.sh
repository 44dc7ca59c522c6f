#!/usr/bin/env bash
# Reproducible desktop walk-through: a real QGIS under Xvfb opens every GeoML dialog and panel on the sample data
# and saves screenshots (and log.txt) to test_artifacts/walkthrough/. Look at them before calling a GUI change done.
#   scripts/walkthrough.sh [--epochs 2] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" scripts/walkthrough.py "$@"

#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: QGIS/GDAL/Xvfb from apt,
# a venv that sees Debian's qgis/osgeo/PyQt5/numpy, and the ML stack from PyPI.
# Called by `make demo`, `make test`, `make run`; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
APT_PKGS="python3-qgis qgis-providers qgis python3-pyqt5 python3-gdal gdal-bin xvfb python3-venv python3-pip xauth"

missing=()
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing from apt: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] missing Debian packages: ${missing[*]}" >&2
    echo "[setup] run:  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV (system site packages: qgis, osgeo, PyQt5, numpy)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.geoml-deps-$(cat requirements.txt requirements-dev.txt constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing torch, torchvision, safetensors and test tools (first run: a few minutes)"
  # An empty PIP_FIND_LINKS stops pip from taking a local CPU-only torch wheel
  # that cannot be combined with the registry's torchvision.
  # (the grep drops pip's noise about local index mirrors that lack a package)
  set +o pipefail
  PIP_FIND_LINKS= "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -c constraints.txt -r requirements.txt -r requirements-dev.txt 2>&1 \
      | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  rc=${PIPESTATUS[0]}
  set -o pipefail
  [ "$rc" = 0 ] || { echo "[setup] pip failed (exit $rc)" >&2; exit "$rc"; }
  "$VENV/bin/python" - <<'PY'
import numpy, torch, torchvision, safetensors  # noqa: F401
from osgeo import gdal  # noqa: F401
import qgis.core  # noqa: F401
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__} would break GDAL's bindings"
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}, GDAL {gdal.__version__}")
PY
  rm -f "$VENV"/.geoml-deps-*
  touch "$stamp"
fi

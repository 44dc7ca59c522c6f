#!/usr/bin/env bash
# `make run`: QGIS desktop with GeoML from the working tree (staged in
# build/plugin) enabled in a private profile, and the venv's torch importable.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILES=${GEOML_PROFILES:-$ROOT/build/qgis-profiles}
INI=$PROFILES/profiles/default/QGIS/QGIS3.ini
mkdir -p "$(dirname "$INI")"
if ! grep -q '^geoml_plugin=true' "$INI" 2>/dev/null; then
  printf '[PythonPlugins]\ngeoml_plugin=true\n\n[qgis]\ncheckVersion=false\nallowVersionCheck=false\n' >> "$INI"
fi
export QGIS_PLUGINPATH=$ROOT/build/plugin
export PYTHONPATH=$(echo "$ROOT"/.venv/lib/python3*/site-packages)${PYTHONPATH:+:$PYTHONPATH}
unset QT_QPA_PLATFORM
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "No display: starting QGIS under xvfb-run" >&2
  exec xvfb-run -a -s "-screen 0 1600x1000x24" qgis --profiles-path "$PROFILES" --noversioncheck "$@"
fi
exec qgis --profiles-path "$PROFILES" --noversioncheck "$@"

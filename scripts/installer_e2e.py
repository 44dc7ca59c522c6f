#!/usr/bin/env python3
"""End-to-end check of the dependency installer on a Python that has QGIS but no torch.

    /usr/bin/python3 scripts/installer_e2e.py [--variant cpu|cu126|…|pypi] [--source DIR_OR_URL]
                                              [--packages torch==2.5.1 torchvision safetensors] [--keep]

Runs GeoML's installer (the same code as Raster ▸ GeoML ▸ Install dependencies…) into a temporary
private folder, then, in a fresh QGIS process with that folder as GeoML's package folder, runs
``geoml:predict`` through QGIS Processing on the built-in sample scene. Downloads what the chosen
build needs (GBs for CUDA builds); the folder is deleted afterwards unless ``--keep``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOB = r"""
import os, sys, tempfile
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
import geoml_plugin
plugin = geoml_plugin.classFactory(None); plugin.initProcessing()   # puts GeoML's folder on sys.path
sys.path.append("/usr/share/qgis/python/plugins")
import processing
from processing.core.Processing import Processing
Processing.initialize()
from geoml_plugin.core.sampledata import make_sample_model, make_sample_scene
d = tempfile.mkdtemp()
scene = make_sample_scene(d, size=128, seed=1, points_per_class=25)
model = make_sample_model(scene, os.path.join(d, "model.safetensors"))
out = processing.run("geoml:predict", {"INPUT": scene.image, "MODEL": model, "OUTPUT": os.path.join(d, "pred.tif")})
print("PREDICTED", out["OUTPUT"], os.path.getsize(out["OUTPUT"]), "bytes")
from geoml_plugin.deps import detect as deps
print(deps.diagnostics())
"""


def main() -> int:
    from geoml_plugin.core.progress import PrintFeedback
    from geoml_plugin.deps import detect as deps
    from geoml_plugin.deps import installer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default=None, help="build key (default: chosen for this machine)")
    ap.add_argument("--source", default=None, help="folder of wheels or index URL")
    ap.add_argument("--packages", nargs="*", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if importlib.util.find_spec("torch") is not None:
        print("This Python already has torch; run this script with one that has not (e.g. /usr/bin/python3).")
        return 2
    target = Path(tempfile.mkdtemp(prefix="geoml_e2e_")) / "py"
    variant = installer.variant_by_key(args.variant) if args.variant else None
    plan = installer.make_plan(variant, target=target, source=args.source, packages=args.packages)
    print(plan.describe(), flush=True)
    t0 = time.time()
    try:
        res = installer.run_plan(plan, PrintFeedback(every_s=30))
        print(f"INSTALLED in {time.time() - t0:.0f} s; not duplicated: {res.removed}; restart: {res.restart}; "
              f"badge: {deps.summary_of(res.status)}", flush=True)
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", deps.ENV_DIR: str(target),
               "PYTHONPATH": str(ROOT)}
        job = subprocess.run([sys.executable, "-c", JOB], env=env, capture_output=True, text=True, timeout=1800)
        print(job.stdout[-8000:])
        if job.returncode != 0:
            print(job.stderr[-4000:])
        return job.returncode
    finally:
        if not args.keep:
            shutil.rmtree(target.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Screenshot of the few-shot panel in a real QGIS desktop (for the README).

Runs ``make demo``'s few-shot outputs through the click-to-map panel: starts
QGIS under ``xvfb-run`` with the plugin from the working tree, opens the new
region, puts the support points on the map with the panel (as clicks would),
presses *Adapt & classify*, waits for the map, and saves the window to
``docs/img/fewshot_panel.png``.

    .venv/bin/python scripts/demo.py --out demo_out --steps fewshot
    .venv/bin/python scripts/fewshot_screenshot.py --demo demo_out
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = r"""
import json, os
from qgis.PyQt.QtCore import QTimer, Qt
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins
from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsPointXY

import faulthandler, traceback
cfg = json.loads(os.environ["SHOT_CFG"])
_fault = open(cfg["out"] + ".fault", "w")
faulthandler.enable(file=_fault, all_threads=True)
state = {"polls": 0}

def guarded(fn):
    def run():
        try:
            fn()
        except Exception:
            with open(cfg["out"] + ".err", "w") as fh:
                fh.write(traceback.format_exc())
            QApplication.instance().quit()
    return run

def start():
    lyr = QgsRasterLayer(cfg["image"], "new region", "gdal")
    QgsProject.instance().addMapLayer(lyr)
    QgsProject.instance().setCrs(lyr.crs())
    iface.mapCanvas().setDestinationCrs(lyr.crs())
    iface.mapCanvas().setExtent(lyr.extent())
    iface.mapCanvas().refresh()
    dock = plugins["geoml_plugin"].open_tool("gui.fewshot_panel:open_panel")
    panel = dock.panel
    state["panel"] = panel
    panel.rasterLayer.setLayer(lyr)
    panel.modelFile.setFilePath(cfg["model"])
    panel.deviceCombo.setCurrentText("cpu")
    to_canvas = QgsCoordinateTransform(lyr.crs(), iface.mapCanvas().mapSettings().destinationCrs(),
                                       QgsProject.instance())
    for x, y, name in cfg["points"]:  # raster CRS → canvas CRS, where clicks happen
        panel.classCombo.setCurrentText(name)
        panel.add_typed_class()
        panel.add_point(to_canvas.transform(QgsPointXY(x, y)))
    panel.pickButton.setChecked(True)
    panel.classCombo.setCurrentText(cfg["points"][0][2])
    panel.run()
    QTimer.singleShot(1000, guarded(wait))

def wait():
    state["polls"] += 1
    if state["panel"].task is not None and state["polls"] < 600:
        QTimer.singleShot(500, guarded(wait))
        return
    QTimer.singleShot(2500, guarded(shot))

def shot():
    img = iface.mainWindow().grab().toImage()
    img = img.scaledToWidth(int(cfg["width"]), Qt.TransformationMode.SmoothTransformation)
    img.save(cfg["out"], "PNG")
    with open(cfg["out"] + ".log", "w") as fh:
        fh.write(state["panel"].logView.toPlainText())
    QApplication.instance().quit()

QTimer.singleShot(3000, guarded(start))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", default="demo_out", help="folder written by the demo's few-shot step")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "fewshot_panel.png"))
    ap.add_argument("--width", type=int, default=1100)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))
    import package
    from osgeo import ogr

    demo = Path(args.demo).resolve()
    pts = []
    ds = ogr.Open(str(demo / "fewshot_support.gpkg"))
    for f in ds.GetLayer(0):
        g = f.GetGeometryRef()
        pts.append((g.GetX(), g.GetY(), f.GetField("cover")))
    ds = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plugins = tmp / "plugins"
        plugins.mkdir()
        package.stage(plugins)
        ini = tmp / "profiles" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
        ini.parent.mkdir(parents=True)
        ini.write_text("[PythonPlugins]\ngeoml_plugin=true\n\n[qgis]\ncheckVersion=false\nallowVersionCheck=false\n")
        code = tmp / "shot.py"
        code.write_text(CODE)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        for stale in (Path(args.out + ".err"), Path(args.out + ".log")):
            stale.unlink(missing_ok=True)
        site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
        env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
        env.update(HOME=str(tmp), QGIS_PLUGINPATH=str(plugins), PYTHONPATH=str(site) if site else "",
                   XDG_RUNTIME_DIR=str(tmp), OMP_WAIT_POLICY="PASSIVE",
                   SHOT_CFG=json.dumps({"image": str(demo / "fewshot_new_region" / "image.tif"),
                                        "model": str(demo / "fewshot_meta.safetensors"), "points": pts,
                                        "out": str(Path(args.out).resolve()), "width": args.width}))
        res = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", "qgis", "--profiles-path",
                              str(tmp / "profiles"), "--nologo", "--noversioncheck", "--code", str(code)],
                             env=env, capture_output=True, text=True, timeout=600)
    if not Path(args.out).exists():
        err = Path(args.out + ".err")
        Path(args.out + ".stderr").write_text(res.stdout + res.stderr)
        print(f"QGIS output in {args.out}.stderr", err.read_text() if err.exists() else "")
        return 1
    print(f"wrote {args.out}")
    print(Path(args.out + ".log").read_text())
    for extra in (".log", ".fault"):
        Path(args.out + extra).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Screenshot of GAN tiles on the QGIS map (for the README), taken in a real QGIS under Xvfb.

Starts QGIS desktop with the staged plugin, shows a real DEM (terrain colours
+ hillshade), opens the GeoML tile panel with a trained tile generator,
generates a tile beside the DEM the way a click does, grows it once (the
ring of 8 neighbours, as the Grow button does), zooms to both and saves the
main window and the map canvas as PNGs.

    .venv/bin/python scripts/gan_screenshot.py --model terrain.safetensors --dem dem.tif --out docs/img
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = r"""
import os
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins
from qgis.core import QgsProject, QgsRasterLayer, QgsPointXY, QgsRectangle

env = os.environ
state = {}

def start():
    iface.mainWindow().showMaximized()
    dem = QgsRasterLayer(env["SHOT_DEM"], "real DEM", "gdal")
    QgsProject.instance().setCrs(dem.crs())
    relief = QgsRasterLayer(env["SHOT_DEM"], "real DEM (relief)", "gdal")
    relief.loadNamedStyle(env["SHOT_HILLSHADE_QML"])
    dem.loadNamedStyle(env["SHOT_COLOUR_QML"])
    QgsProject.instance().addMapLayer(dem)
    QgsProject.instance().addMapLayer(relief)
    panel = plugins["geoml_plugin"].open_tool("gui.gan_panel:open_panel")
    panel.folderWidget.setFilePath(env["SHOT_TILES"])
    panel.modelFile.setFilePath(env["SHOT_MODEL"])
    panel.tileSizeCombo.setCurrentText(env.get("SHOT_TILE", "128"))
    panel.seedSpin.setValue(int(env.get("SHOT_SEED", "7")))
    panel.pickButton.setChecked(True)
    ext = dem.extent()
    tile_w = int(panel.tileSizeCombo.currentText()) * dem.rasterUnitsPerPixelX()
    x = ext.xMaximum() + 1.6 * tile_w
    panel.generate_at(QgsPointXY(x, ext.center().y()))
    panel.grow()
    state["panel"] = panel
    QTimer.singleShot(500, wait_grow)

def wait_grow():
    panel = state["panel"]
    if panel.task is not None:
        QTimer.singleShot(300, wait_grow)
        return
    canvas = iface.mapCanvas()
    r = QgsRectangle(QgsProject.instance().mapLayersByName("real DEM")[0].extent())
    for lyr in QgsProject.instance().mapLayers().values():
        r.combineExtentWith(lyr.extent())
    canvas.setExtent(r.buffered(r.width() * 0.03))
    canvas.refresh()
    QTimer.singleShot(4000, shoot)

def shoot():
    out = env["SHOT_OUT"]
    iface.mainWindow().grab().save(os.path.join(out, "gan_qgis_window.png"))
    iface.mapCanvas().grab().save(os.path.join(out, "gan_tiles_map.png"))
    with open(os.path.join(out, "gan_shot.txt"), "w") as fh:
        fh.write(state["panel"].statusLabel.text() + "\n")
    QApplication.instance().quit()

QTimer.singleShot(3000, start)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dem", required=True)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--tile", default="128")
    ap.add_argument("--seed", default="7")
    args = ap.parse_args()
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        print("needs qgis and xvfb-run")
        return 1
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT))
    import package

    from geoml_plugin.core.modelfile import read_metadata
    from geoml_plugin.core.raster.styles import MULTIPLY, TERRAIN, hillshade_qml, pseudocolor_qml

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="geoml_shot_"))
    staged = package.stage(tmp / "plugins").parent
    profiles = tmp / "profiles"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngeoml_plugin=true\n\n[qgis]\ncheckVersion=false\nallowVersionCheck=false\n")
    (tmp / "shot.py").write_text(CODE)
    lo, hi = read_metadata(args.model).target["value_range"][0]
    (tmp / "colour.qml").write_text(pseudocolor_qml(lo, hi, TERRAIN))
    (tmp / "relief.qml").write_text(hillshade_qml(blend_mode=MULTIPLY))
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "QGIS_PREFIX", "QT_QPA"))}
    env.update(HOME=str(tmp), QGIS_PLUGINPATH=str(staged), PYTHONPATH=str(site) if site else "",
               XDG_RUNTIME_DIR=str(tmp), SHOT_OUT=str(out), SHOT_DEM=str(Path(args.dem).resolve()),
               SHOT_MODEL=str(Path(args.model).resolve()), SHOT_TILES=str(tmp / "tiles"), SHOT_TILE=args.tile,
               SHOT_SEED=args.seed, SHOT_COLOUR_QML=str(tmp / "colour.qml"), SHOT_HILLSHADE_QML=str(tmp / "relief.qml"))
    res = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1500x900x24", "qgis", "--profiles-path", str(profiles),
                          "--nologo", "--noversioncheck", "--code", str(tmp / "shot.py")],
                         env=env, capture_output=True, text=True, timeout=600)
    shot = out / "gan_tiles_map.png"
    if not shot.exists():
        print(res.stdout[-3000:], res.stderr[-3000:])
        return 1
    print(f"wrote {shot} and {out / 'gan_qgis_window.png'}; panel said: {(out / 'gan_shot.txt').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

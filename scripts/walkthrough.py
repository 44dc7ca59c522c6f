#!/usr/bin/env python3
"""A reproducible desktop walk-through: every GeoML dialog and panel opened in a real QGIS on the sample data.

Starts QGIS (under Xvfb: see ``scripts/walkthrough.sh``) with the staged plugin in a fresh profile, adds the
sample scene, and opens in turn: Fine-tune (trains briefly, then classifies, grabbed during each step), Apply
model, Train GAN, the few-shot panel with clicked points, Meta-train (Processing dialog), Generate tiles in a
geographic (EPSG:4326) project, the installer and the diagnostics. Each is saved as a PNG in ``test_artifacts/
walkthrough/`` with ``log.txt`` (what each step showed). Look at the pictures: that is what they are for.

    .venv/bin/python scripts/walkthrough.py [--out test_artifacts/walkthrough] [--epochs 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

CODE = r"""
import os, traceback
from qgis.PyQt.QtCore import QTimer, QPoint
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins
from qgis.core import (QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsVectorLayer, QgsPointXY,
                       QgsCoordinateTransform)

OUT, SCENE = os.environ["WALK_OUT"], os.environ["WALK_SCENE"]
MODEL, GAN = os.environ["WALK_MODEL"], os.environ["WALK_GAN"]
EPOCHS = int(os.environ["WALK_EPOCHS"])
import faulthandler
faulthandler.enable(open(os.path.join(OUT, "fault.txt"), "w"), all_threads=True)
LOG = open(os.path.join(OUT, "log.txt"), "w")
plugin = plugins["geoml_plugin"]
state = {"step": 0, "ticks": 0}


def log(text):
    LOG.write(text + "\n")
    LOG.flush()


def shot(widget, name):
    QApplication.instance().processEvents()
    widget.grab().save(os.path.join(OUT, name + ".png"))
    log(f"[{name}.png]")


def layers():
    return {l.name(): l for l in QgsProject.instance().mapLayers().values()}


def project_with_scene():
    QgsProject.instance().clear()
    img = QgsRasterLayer(os.path.join(SCENE, "image.tif"), "sample image", "gdal")
    dem = QgsRasterLayer(os.path.join(SCENE, "dem.tif"), "sample dem", "gdal")
    pts = QgsVectorLayer(os.path.join(SCENE, "labels_points.gpkg"), "label points", "ogr")
    QgsProject.instance().addMapLayers([dem, img, pts])
    iface.mapCanvas().setDestinationCrs(img.crs())
    iface.mapCanvas().setExtent(img.extent())
    return img, dem, pts


def wait(cond, then, timeout_ticks=2400):
    state["ticks"] = 0

    def poll():
        state["ticks"] += 1
        try:
            done = cond()
        except Exception:
            log(traceback.format_exc())
            done = True
        if done or state["ticks"] > timeout_ticks:
            if not done:
                log("(timed out)")
            QTimer.singleShot(300, then)
        else:
            QTimer.singleShot(250, poll)
    QTimer.singleShot(250, poll)


def step(fn):
    def run():
        try:
            fn()
        except Exception:
            log(f"{fn.__name__} failed:\n" + traceback.format_exc())
            QTimer.singleShot(100, next_step)
    return run


STEPS = []


def next_step():
    if state["step"] < len(STEPS):
        fn = STEPS[state["step"]]
        state["step"] += 1
        log(f"== {fn.__name__}")
        QTimer.singleShot(300, step(fn))
    else:
        LOG.close()
        QApplication.instance().quit()


def s01_desktop():
    iface.mainWindow().resize(1400, 900)
    project_with_scene()
    QTimer.singleShot(1500, lambda: (shot(iface.mainWindow(), "01_desktop_sample_data"), next_step()))


def s02_finetune():
    dlg = plugin.open_tool("gui.finetune_dialog:open_dialog")
    dlg.resize(1000, 900)
    log(f"defaults: input={dlg.inputLayer.currentLayer().name() if dlg.inputLayer.currentLayer() else None}, "
        f"labels={dlg.labelsLayer.currentLayer().name() if dlg.labelsLayer.currentLayer() else None}, "
        f"field={dlg.labelField.currentField()}")
    shot(dlg, "02_finetune_defaults")
    dlg.epochsSpin.setValue(EPOCHS)
    dlg.patchSpin.setValue(16)
    dlg.batchSpin.setValue(16)
    model = os.path.join(OUT, "walk_model.safetensors")
    dlg.outputFile.setFilePath(model)
    dlg.ask_replace = lambda existing: True
    dlg.run()
    wait(lambda: dlg.statusLabel.text().startswith(("epoch ", "Classifying")), lambda: s02b_training(dlg))


def s02b_training(dlg):
    shot(dlg, "03_finetune_training")
    log("status: " + dlg.statusLabel.text())
    # the map step: its own status line (a percentage once the first block is done)
    wait(lambda: (dlg.statusLabel.text().startswith("Classifying") and "%" in dlg.statusLabel.text())
         or (dlg.task is not None and dlg.statusLabel.text().startswith("Classifying") and state["ticks"] > 20)
         or dlg.task is None, lambda: s02c_mapping(dlg))


def s02c_mapping(dlg):
    shot(dlg, "04_finetune_classifying")
    log("status: " + dlg.statusLabel.text())
    wait(lambda: dlg.task is None, lambda: s02d_done(dlg))


def s02d_done(dlg):
    shot(dlg, "05_finetune_done")
    log("status: " + dlg.statusLabel.text())
    dlg.hide()
    root = QgsProject.instance().layerTreeRoot()
    log("layer order: " + ", ".join(f"{n.name()}{'' if n.isVisible() else ' (hidden)'}" for n in root.findLayers()))
    QTimer.singleShot(1500, lambda: (shot(iface.mainWindow(), "06_desktop_class_map"), next_step()))


def s03_predict():
    dlg = plugin.open_tool("gui.predict_dialog:open_dialog")
    dlg.resize(1000, 800)
    dlg.modelFile.setFilePath(MODEL)
    log(f"defaults: input={dlg.inputLayer.currentLayer().name() if dlg.inputLayer.currentLayer() else None}")
    shot(dlg, "07_apply_model")
    dlg.hide()
    next_step()


def s04_traingan():
    dlg = plugin.open_tool("gui.traingan_dialog:open_dialog")
    dlg.resize(1000, 800)
    shot(dlg, "08_train_gan")
    log(f"without target: L1 enabled={dlg.l1Spin.isEnabled()}, target bands enabled={dlg.targetBandsEdit.isEnabled()}")
    dlg.hide()
    next_step()


def s05_fewshot():
    img = layers()["sample image"]
    dock = plugin.open_tool("gui.fewshot_panel:open_panel")
    panel = dock.panel
    # the patch classifier Fine-tune just made (the sample model is a per-pixel one, which few-shot refuses)
    panel.modelFile.setFilePath(os.path.join(OUT, "walk_model.safetensors"))
    for name in ("walk_model_classes", "walk_model_confidence"):
        if name in layers():
            QgsProject.instance().removeMapLayer(layers()[name].id())
    to_canvas = QgsCoordinateTransform(img.crs(), iface.mapCanvas().mapSettings().destinationCrs(),
                                       QgsProject.instance())
    from geoml_plugin.core.sampledata import CLASS_NAMES, read_label_points
    import numpy as np
    xy, ids = read_label_points(os.path.join(SCENE, "labels_points.gpkg"))
    for k, name in enumerate(CLASS_NAMES, start=1):
        panel.classCombo.setCurrentText(name)
        panel.add_typed_class()
        for i in np.flatnonzero(ids == k)[:4]:
            panel.add_point(to_canvas.transform(QgsPointXY(*xy[i])))
    log(f"raster: {panel.rasterLayer.currentLayer().name()}; colours: " +
        ", ".join(f"{c} {panel.points.color(c)}" for c in panel.points.classes))
    panel.folderWidget.setFilePath(os.path.join(OUT, "fewshot_maps"))
    os.makedirs(os.path.join(OUT, "fewshot_maps"), exist_ok=True)
    shot(iface.mainWindow(), "09_fewshot_points")
    panel.run()
    wait(lambda: panel.task is None, lambda: s05b_fewshot_done(panel))


def s05b_fewshot_done(panel):
    log(panel.logView.toPlainText())
    QTimer.singleShot(1500, lambda: (shot(iface.mainWindow(), "10_fewshot_map"), next_step()))


def s06_metatrain():
    iface.setActiveLayer(layers().get("walk_model_confidence") or iface.activeLayer())  # as the issue found it
    dlg = plugin.open_tool("gui.fewshot_panel:open_metatrain_dialog")
    dlg.resize(1000, 800)
    w = dlg.mainWidget().wrappers
    log(f"INPUT={w['INPUT'].parameterValue()}, LABELS={w['LABELS'].parameterValue()}, "
        f"MAML inner steps enabled={w['INNER_STEPS'].wrappedWidget().isEnabled()}")
    QTimer.singleShot(800, lambda: (shot(dlg, "11_metatrain"), dlg.close(), next_step()))


def gan_tile_in(epsg, x, y, name, then, twice=False):
    # a new project in epsg, the Generate tiles panel, a tile at (x, y) (twice: two groups of one seed)
    dock = plugin.dialogs.get("fewshot")
    if dock is not None:
        dock.hide()
    QgsProject.instance().clear()
    crs = QgsCoordinateReferenceSystem(epsg)
    QgsProject.instance().setCrs(crs)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(crs)
    from qgis.core import QgsRectangle
    canvas.setExtent(QgsRectangle(x - 1, y - 1, x + 1, y + 1))
    panel = plugin.open_tool("gui.gan_panel:open_panel")
    panel.modelFile.setFilePath(GAN)
    panel.folderWidget.setFilePath(os.path.join(OUT, "tiles"))
    panel.tileSizeCombo.setCurrentText("128")
    panel.seedSpin.setValue(0)
    log("model info: " + panel.modelInfo.text())
    for _ in range(2 if twice else 1):
        panel.generate_at(QgsPointXY(x, y))
    log("status: " + panel.statusLabel.text())
    log("groups: " + ", ".join(n.name() for n in QgsProject.instance().layerTreeRoot().children()))
    session = panel.shown[-1].session
    xmin, ymin, xmax, ymax = session.extent
    canvas.setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    canvas.refresh()
    QTimer.singleShot(2500, lambda: (shot(iface.mainWindow(), name), then()))


def s07_gan_tiles_geographic():
    # the same seed and place in the model's metric CRS and in degrees: the shaded relief must look alike
    gan_tile_in("EPSG:32632", 500000.0, 5094000.0, "12_gan_tiles_epsg32632",
                lambda: gan_tile_in("EPSG:4326", 9.0, 46.0, "13_gan_tiles_epsg4326", next_step, twice=True))


def s08_installer():
    dlg = plugin.open_tool("gui.deps.installer_dialog:open_dialog")
    dlg.resize(1000, 800)
    wait(lambda: "Now: Working" in dlg.detectionLabel.text() or "Not working" in dlg.detectionLabel.text(),
         lambda: (shot(dlg, "14_installer"), log(dlg.detectionLabel.text()), dlg.hide(), next_step()), 240)


def s09_diagnostics():
    dlg = plugin.open_tool("gui.deps.diagnostics_dialog:open_dialog")
    QTimer.singleShot(3000, lambda: (shot(dlg, "15_diagnostics"), dlg.hide(), next_step()))


STEPS += [s01_desktop, s02_finetune, s03_predict, s04_traingan, s05_fewshot, s06_metatrain,
          s07_gan_tiles_geographic, s08_installer, s09_diagnostics]
QTimer.singleShot(3000, next_step)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "test_artifacts" / "walkthrough"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--gan-iterations", type=int, default=150, help="Train GAN steps for the tile generator")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds for the whole walk-through")
    args = ap.parse_args()
    import package

    from geoml_plugin.core.gan.train import GanTrainConfig, run_traingan
    from geoml_plugin.core.sampledata import make_sample_model, make_sample_scene

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="geoml_walk_"))
    scene = make_sample_scene(str(work / "scene"), size=256, seed=0)
    model = make_sample_model(scene, str(work / "sample_model.safetensors"))
    # a tile generator of the sample DEM, trained for a few steps: enough to place tiles and see their styles
    gan = str(work / "sample_dem_gan.safetensors")
    run_traingan(GanTrainConfig(scene.dem, gan, iterations=args.gan_iterations, batch_size=4, device="cpu"))
    staged = work / "plugins"
    package.stage(staged)
    profiles = work / "profiles"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngeoml_plugin=true\n\n[qgis]\ncheckVersion=false\nallowVersionCheck=false\n")
    (work / "code.py").write_text(CODE)
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update(HOME=str(work), QGIS_PLUGINPATH=str(staged), PYTHONPATH=str(site or ""), XDG_RUNTIME_DIR=str(work),
               WALK_OUT=str(out), WALK_SCENE=scene.folder, WALK_MODEL=model, WALK_GAN=gan,
               WALK_EPOCHS=str(args.epochs), OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"))
    cmd = ["qgis", "--profiles-path", str(profiles), "--nologo", "--noversioncheck", "--code", str(work / "code.py")]
    if not os.environ.get("DISPLAY"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1400x1000x24"] + cmd
    try:
        subprocess.run(cmd, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print("QGIS did not finish in time; the screenshots so far are kept.")
    log = out / "log.txt"
    print(log.read_text() if log.exists() else "no log")
    shots = sorted(out.glob("*.png"))
    print(f"{len(shots)} screenshots in {out}")
    return 0 if shots else 1


if __name__ == "__main__":
    sys.exit(main())

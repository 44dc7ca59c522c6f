#!/usr/bin/env python3
"""README screenshots of the fine-tuning workflow, taken in a real QGIS desktop (under Xvfb).

Starts QGIS with the staged plugin and the sample scene, opens *Fine-tune a
model*, trains on the label points, grabs the dialog while it trains, waits
until the classified layer has been added, and grabs the main window.
Writes ``docs/img/finetune_dialog.png`` and ``docs/img/finetune_classified.png``.

    .venv/bin/python scripts/screenshots_finetune.py [--epochs 15]
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
import os
from qgis.PyQt.QtCore import QTimer, Qt
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

OUT, SCENE, EPOCHS = os.environ["SHOT_OUT"], os.environ["SHOT_SCENE"], int(os.environ["SHOT_EPOCHS"])
import faulthandler
faulthandler.enable(open(os.path.join(OUT, "fault.txt"), "w"), all_threads=True)
state = {"dialog_shot": False, "ticks": 0}

def start():
    iface.mainWindow().resize(1400, 860)
    img = QgsRasterLayer(os.path.join(SCENE, "image.tif"), "sentinel-like scene", "gdal")
    pts = QgsVectorLayer(os.path.join(SCENE, "labels_points.gpkg"), "label points", "ogr")
    QgsProject.instance().addMapLayers([img, pts])
    iface.mapCanvas().setExtent(img.extent())
    dlg = plugins["geoml_plugin"].open_tool("gui.finetune_dialog:open_dialog")
    dlg.resize(1000, 1000)  # the whole form and some log lines (smaller screens scroll the form)
    dlg.inputLayer.setLayer(img)
    dlg.labelsLayer.setLayer(pts)
    dlg.labelField.setField("class_name")
    dlg.epochsSpin.setValue(EPOCHS)
    model = os.path.join(OUT, "scene_model.safetensors")
    if os.path.exists(model):  # from an earlier run: Run would ask before replacing it
        os.remove(model)
    dlg.outputFile.setFilePath(model)
    dlg.run()
    state["dlg"] = dlg
    QTimer.singleShot(500, poll)

def poll():
    dlg = state["dlg"]
    state["ticks"] += 1
    if not state["dialog_shot"] and dlg.statusLabel.text().startswith(f"epoch {max(2, EPOCHS // 2)}/"):
        dlg.grab().save(os.path.join(OUT, "finetune_dialog.png"))
        state["dialog_shot"] = True
    layers = {l.name(): l for l in QgsProject.instance().mapLayers().values()}
    if "scene_model_classes" in layers and dlg.task is None:
        root = QgsProject.instance().layerTreeRoot()
        for name in ("scene_model_confidence", "sentinel-like scene"):
            node = root.findLayer(layers[name].id())
            if node is not None:
                node.setItemVisibilityChecked(False)
                node.setExpanded(False)
        node = root.findLayer(layers["scene_model_classes"].id())
        if node is not None:
            node.setExpanded(True)
        iface.setActiveLayer(layers["scene_model_classes"])
        if not state["dialog_shot"]:
            dlg.grab().save(os.path.join(OUT, "finetune_dialog.png"))
        dlg.hide()
        iface.mapCanvas().setExtent(layers["scene_model_classes"].extent())
        iface.mapCanvas().refreshAllLayers()
        QTimer.singleShot(4000, finish)
        return
    if state["ticks"] > 7200:
        finish()
        return
    QTimer.singleShot(500, poll)

def finish():
    layers = {l.name(): l for l in QgsProject.instance().mapLayers().values()}
    if "scene_model_classes" in layers:
        lyr = layers["scene_model_classes"]
        iface.layerTreeView().refreshLayerSymbology(lyr.id())
        node = QgsProject.instance().layerTreeRoot().findLayer(lyr.id())
        node.setExpanded(True)
        view = iface.layerTreeView()
        view.setExpanded(view.node2index(node), True)
        QApplication.instance().processEvents()
    iface.mainWindow().grab().save(os.path.join(OUT, "finetune_classified.png"))
    with open(os.path.join(OUT, "log.txt"), "w") as fh:
        fh.write(state["dlg"].logView.toPlainText())
    QApplication.instance().quit()

QTimer.singleShot(3000, start)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    import package

    from geoml_plugin.core.sampledata import make_sample_scene

    work = Path(tempfile.mkdtemp(prefix="geoml_shots_"))
    scene = make_sample_scene(str(work / "scene"), size=512, seed=0)
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
               SHOT_OUT=str(work), SHOT_SCENE=scene.folder, SHOT_EPOCHS=str(args.epochs),
               OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"))
    subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x1100x24", "qgis", "--profiles-path", str(profiles),
                    "--nologo", "--noversioncheck", "--code", str(work / "code.py")], env=env, timeout=3600)
    print((work / "log.txt").read_text() if (work / "log.txt").exists() else "no log")
    if (work / "fault.txt").exists():
        print((work / "fault.txt").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QImage

    for name, width in (("finetune_dialog.png", 900), ("finetune_classified.png", 1100)):
        img = QImage(str(work / name))
        if img.isNull():
            print(f"missing {name}")
            return 1
        if img.width() > width:
            img = img.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
        img.save(str(out / name), "PNG")
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

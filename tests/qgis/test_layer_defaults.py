"""Issue 21 point 3: the layers GeoML's dialogs and panels preselect, on real widgets and a real project."""
import os

import numpy as np
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer

from tests.conftest import write_raster
from tests.qgis.conftest import FakePlugin


@pytest.fixture()
def project(qgis_new_project, tmp_path, scene):
    """A project as an analyst has it after a GeoML run: a class map GeoML wrote sorts first alphabetically,
    a confidence raster is the active layer, a one-band DTM, the imagery, and label points."""
    for key in ("input", "labels"):
        QgsSettings().remove("geoml/last_layers/" + key)
    QgsSettings().remove("geoml/finetune")
    rng = np.random.default_rng(0)
    classes = write_raster(tmp_path / "a_classes.tif", rng.integers(1, 4, (1, 40, 40)).astype(np.uint8))
    from osgeo import gdal

    ds = gdal.Open(classes, gdal.GA_Update)
    ds.SetMetadata({"GEOML_MODEL": "m.safetensors", "GEOML_TASK": "classification"})
    ds = None
    dtm = write_raster(tmp_path / "b_dtm.tif", rng.normal(100, 5, (1, 40, 40)).astype(np.float32))
    layers = {
        "a_classes": QgsRasterLayer(classes, "a_classes", "gdal"),  # GeoML's, reopened from disk
        "b_dtm": QgsRasterLayer(dtm, "b_dtm", "gdal"),
        "image": QgsRasterLayer(scene.image, "image", "gdal"),
        "points": QgsVectorLayer(scene.points, "points", "ogr"),
    }
    conf = QgsRasterLayer(classes, "a_confidence", "gdal")
    conf.setCustomProperty("geoml/output", True)  # as styling.add_raster_layer marks what it adds
    layers["a_confidence"] = conf
    assert all(lyr.isValid() for lyr in layers.values())
    QgsProject.instance().addMapLayers(list(layers.values()))
    yield layers
    for key in ("input", "labels"):
        QgsSettings().remove("geoml/last_layers/" + key)
    QgsSettings().remove("geoml/finetune")


def _finetune(qtbot, iface):
    from geoml_plugin.gui.finetune_dialog import FinetuneDialog

    dlg = FinetuneDialog(FakePlugin(iface))
    qtbot.addWidget(dlg)
    return dlg


def test_fewshot_panel_prefers_imagery_not_a_class_map_geoml_wrote(qtbot, qgis_iface, qgis_canvas, project):
    from geoml_plugin.gui.fewshot_panel import FewShotPanel

    panel = FewShotPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    assert panel.rasterLayer.currentLayer().name() == "image"  # before: 'a_classes', first alphabetically


def test_finetune_prefers_imagery_and_point_labels(qtbot, qgis_iface, project):
    dlg = _finetune(qtbot, qgis_iface)
    assert dlg.inputLayer.currentLayer().name() == "image"
    assert dlg.labelsLayer.currentLayer().name() == "points"
    assert dlg.labelField.currentField() == "class_name"


def test_metatrain_opens_with_imagery_and_labels_not_the_active_layer(project, qgis_iface):
    from geoml_plugin.gui.fewshot_panel import metatrain_defaults

    qgis_iface.setActiveLayer(project["a_confidence"])
    params = metatrain_defaults()
    assert params["INPUT"].name() == "image" and params["LABELS"].name() == "points"
    assert params["LABEL_FIELD"] == "class_name"


def test_the_last_used_layers_come_first(qtbot, qgis_iface, project):
    from geoml_plugin.gui.layer_defaults import remember

    remember("input", project["b_dtm"])
    remember("labels", project["points"])
    dlg = _finetune(qtbot, qgis_iface)
    assert dlg.inputLayer.currentLayer().name() == "b_dtm"
    assert dlg.labelsLayer.currentLayer().name() == "points"


def test_finetune_after_a_new_project_never_offers_the_input_as_labels(qtbot, qgis_iface, project, scene):
    dlg = _finetune(qtbot, qgis_iface)
    QgsProject.instance().clear()  # New Project, with the dialog kept open
    image = QgsRasterLayer(scene.image, "image", "gdal")
    QgsProject.instance().addMapLayer(image)
    assert dlg.inputLayer.currentLayer() is image
    assert dlg.labelsLayer.currentLayer() is None  # before: the input raster itself
    points = QgsVectorLayer(scene.points, "points again", "ogr")
    QgsProject.instance().addMapLayer(points)
    assert dlg.labelsLayer.currentLayer() is points  # the point layer that came back is taken


def test_a_hand_picked_layer_is_kept_when_layers_are_added(qtbot, qgis_iface, project, scene):
    dlg = _finetune(qtbot, qgis_iface)
    dlg.labelsLayer.setLayer(project["b_dtm"])
    dlg.labelsLayer.activated.emit(dlg.labelsLayer.currentIndex())  # as when the user picks it
    QgsProject.instance().addMapLayer(QgsVectorLayer(scene.points, "more points", "ogr"))
    assert dlg.labelsLayer.currentLayer().name() == "b_dtm"


def test_a_float_raster_as_classes_is_refused_before_asking_about_files(qtbot, qgis_iface, project, tmp_path,
                                                                         monkeypatch):
    """Issue 21 point 4: heights as class labels are refused with a pointer to regression, before the dialog asks
    about replacing files (before: 'Replace?' first, then classes '9 400, 10 400…' and 'Class 9 has only 1…')."""
    from qgis.core import Qgis
    from qgis.PyQt.QtCore import Qt

    dlg = _finetune(qtbot, qgis_iface)
    dlg.inputLayer.setLayer(project["image"])
    dlg.labelsLayer.setLayer(project["b_dtm"])
    assert dlg.taskCombo.currentData() == "classification"
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"earlier model")  # an existing file: the dialog would ask to replace it
    dlg.outputFile.setFilePath(str(model))
    asked = []
    monkeypatch.setattr(dlg, "ask_replace", lambda existing: asked.append(existing) or True)
    qgis_iface.messageBar().clearWidgets()
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert dlg.task is None and asked == []
    log = dlg.logView.toPlainText()
    assert "The label raster 'b_dtm.tif' holds continuous values (fractional values" in log, log
    assert "Task = regression" in log
    assert any("continuous values" in m for m in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning))
    assert model.read_bytes() == b"earlier model"
    # as regression the same raster is fine: the question about the file comes
    dlg.taskCombo.setCurrentIndex(dlg.taskCombo.findData("regression"))
    monkeypatch.setattr(dlg, "ask_replace", lambda existing: asked.append(existing) or False)  # No: back to form
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert asked and dlg.task is None


def test_metatrain_dialog_offers_maml_settings_only_for_maml(qtbot, qgis_iface, project, geoml_provider,
                                                              monkeypatch):
    """Issue 21 point 10: MAML's inner steps and rate stayed enabled under prototypical networks."""
    from qgis.gui import QgsBrowserGuiModel

    from geoml_plugin.gui.fewshot_panel import open_metatrain_dialog

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)  # the mock iface has none
    qgis_iface.setActiveLayer(project["a_confidence"])
    plugin = FakePlugin(qgis_iface)
    plugin.dialogs = {}
    dlg = open_metatrain_dialog(plugin)
    qtbot.addWidget(dlg)
    wrappers = dlg.mainWidget().wrappers
    steps, rate = wrappers["INNER_STEPS"].wrappedWidget(), wrappers["INNER_LR"].wrappedWidget()
    assert wrappers["ALGORITHM"].parameterValue() == 0  # prototypical networks
    assert not steps.isEnabled() and not rate.isEnabled()
    combo = wrappers["ALGORITHM"].wrappedWidget()  # as the user picks the algorithm
    combo.setCurrentIndex(combo.findText("MAML (second order)"))
    assert steps.isEnabled() and rate.isEnabled()
    combo.setCurrentIndex(combo.findText("First-order MAML"))
    assert steps.isEnabled()
    combo.setCurrentIndex(combo.findText("Prototypical networks (fast, recommended)"))
    assert not steps.isEnabled() and not rate.isEnabled()
    # the layers: imagery and points, not the active confidence raster
    image, points = project["image"], project["points"]
    assert wrappers["INPUT"].parameterValue() in (image, image.id(), image.source())
    assert wrappers["LABELS"].parameterValue() in (points, points.id(), points.source())
    assert wrappers["LABEL_FIELD"].parameterValue() == "class_name"  # before: fid, one class per point
    dlg.close()


def test_metatrain_dialog_copies_the_geoml_metatrain_command(qtbot, qgis_iface, project, geoml_provider, monkeypatch,
                                                              tmp_path):
    """Copy as command line in the meta-train dialog: the `geoml metatrain` command of its parameters, built as
    Run builds the job; it parses back to the same config. Without a model file it says so and copies nothing."""
    import shlex

    from qgis.gui import QgsBrowserGuiModel
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QApplication, QPushButton

    from geoml_plugin.cli import build_parser
    from geoml_plugin.cli.commands import build_metatrain
    from geoml_plugin.gui.fewshot_panel import copy_metatrain_command, open_metatrain_dialog

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)  # the mock iface has none
    plugin = FakePlugin(qgis_iface)
    plugin.dialogs = {}
    dlg = open_metatrain_dialog(plugin)
    qtbot.addWidget(dlg)
    alg = dlg.algorithm()
    button = dlg.findChild(QPushButton, "copyCommandButton")
    assert button.text() == "Copy as command line" and button.isVisible()
    QApplication.clipboard().setText("")
    assert copy_metatrain_command(dlg) == "" and QApplication.clipboard().text() == ""  # no model file yet
    wrappers = dlg.mainWidget().wrappers
    model = str(tmp_path / "meta model.safetensors")
    from qgis.core import QgsProcessingContext

    context = QgsProcessingContext()
    wrappers["OUTPUT_MODEL"].setParameterValue(model, context)  # as the user types them
    wrappers["ITERATIONS"].setParameterValue(123, context)
    wrappers["SEED"].setParameterValue(7, context)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    text = QApplication.clipboard().text()
    image, points = project["image"], project["points"]
    assert text.startswith(f"geoml metatrain --input {image.source()} --labels {points.source()} "
                           "--label-field class_name --output-model "), text
    assert f"'{model}'" in text and "--iterations 123" in text and "--seed 7" in text
    cfg = build_metatrain(build_parser().parse_args(shlex.split(text)[1:]))
    assert cfg.rasters == [image.source()] and cfg.iterations == 123 and cfg.output_model == model
    from processing.tools import dataobjects

    assert cfg == alg.build_config(dlg.createProcessingParameters(), dataobjects.createContext())
    assert not os.path.exists(model)
    dlg.close()

"""The Fine-tune dialog on a real QGIS: train in the background, classify, add the layer; cancel."""
import math
import os

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import Qt

from tests.conftest import leftovers
from tests.qgis.conftest import open_finetune_dialog, wait_for_task
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture()
def dialog(qtbot, qgis_iface, qgis_new_project, scene):
    return open_finetune_dialog(qtbot, qgis_iface, scene)


def _layers():
    return {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}


def test_dialog_trains_then_adds_the_classified_layer(qtbot, dialog, out_dir):
    assert dialog.bandsCombo.count() == 4 and dialog.selected_bands() == [1, 2, 3, 4]
    assert dialog.labelField.isEnabled() and dialog.taskCombo.currentData() == "classification"
    dialog.epochsSpin.setValue(3)
    model = out_dir / "dlg.safetensors"
    dialog.outputFile.setFilePath(str(model))
    qtbot.mouseClick(dialog.runButton, Qt.MouseButton.LeftButton)
    assert dialog.task is not None and not dialog.runButton.isEnabled()
    wait_for_task(qtbot, dialog)
    log = dialog.logView.toPlainText()
    assert "epoch 3/3" in log and "Model saved" in log and "Classified in" in log, log
    assert log.count("epoch 1/3:") == 1 and " · loss" not in log  # one line per epoch; live progress elsewhere
    assert model.exists() and (out_dir / "dlg_report.html").exists()
    layers = _layers()
    assert layers["dlg_classes"].renderer().type() == "paletted"
    assert {c.label for c in layers["dlg_classes"].renderer().classes()} == {"Water", "Forest", "Cropland", "Urban"}
    assert "dlg_confidence" in layers
    assert dialog.statusLabel.text().startswith("Trained: overall accuracy")
    assert dialog.classifyButton.isEnabled() and dialog.runButton.isEnabled()
    # settings are remembered for the next time
    assert QgsSettings().value("geoml/finetune/patch") in (16, "16")
    assert QgsSettings().value("geoml/finetune/field") == "class_name"


def test_dialog_refuses_missing_field_without_running(qtbot, dialog, out_dir):
    dialog.labelField.setField("")
    dialog.outputFile.setFilePath(str(out_dir / "x.safetensors"))
    qtbot.mouseClick(dialog.runButton, Qt.MouseButton.LeftButton)
    assert dialog.task is None
    assert "Choose the label field" in dialog.logView.toPlainText()
    assert list(out_dir.iterdir()) == []


def test_cancel_mid_training_leaves_no_file_and_no_layer(qtbot, dialog, out_dir):
    dialog.epochsSpin.setValue(500)
    dialog.outputFile.setFilePath(str(out_dir / "cancelled.safetensors"))
    dialog.run()
    task = dialog.task
    # live progress: epoch, loss and validation accuracy while training
    qtbot.waitUntil(lambda: "val accuracy" in dialog.statusLabel.text(), timeout=120_000)
    assert dialog.statusLabel.text().startswith("epoch ") and " · loss " in dialog.statusLabel.text()
    qtbot.mouseClick(dialog.cancelButton, Qt.MouseButton.LeftButton)
    wait_for_task(qtbot, dialog)
    assert task.cancelled
    assert "Cancelled; nothing was written." in dialog.logView.toPlainText()
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []
    assert sorted(_layers()) == ["label points", "sample image"]
    assert not os.path.exists(str(out_dir / "cancelled_report.html"))


def test_cancel_during_the_classification_says_the_model_was_saved(qtbot, dialog, out_dir, monkeypatch):
    """The model file is written when training ends; cancelling the classification that follows leaves it."""
    dialog.epochsSpin.setValue(1)
    model = out_dir / "kept.safetensors"
    dialog.outputFile.setFilePath(str(model))
    classify = dialog.classify

    def classify_then_cancel():  # the user presses Cancel as soon as the classification starts
        classify()
        dialog.cancel()

    monkeypatch.setattr(dialog, "classify", classify_then_cancel)
    dialog.run()
    wait_for_task(qtbot, dialog)
    log = dialog.logView.toPlainText()
    assert f"The model was saved to {model}; the classification was cancelled and no map was written." in log, log
    assert "nothing was written" not in log
    assert model.exists() and not (out_dir / "kept_classes.tif").exists() and leftovers(out_dir) == []
    assert sorted(_layers()) == ["label points", "sample image"]


def test_a_cancelled_value_map_is_not_called_a_classification(dialog):
    import types

    dialog.last_result = types.SimpleNamespace(model_path="/data/height.safetensors", task="regression")
    dialog._classify_task = task = object()
    text, _ = dialog.cancelled_messages(task)
    assert text == ("The model was saved to /data/height.safetensors; the mapping of values was cancelled and no map "
                    "was written.")


def test_classify_current_map_view_maps_the_canvas_extent_to_a_pixel_window(dialog, qgis_iface, scene):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    raster = dialog.inputLayer.currentLayer()
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32632"))
    ext = raster.extent()  # 128 px of 10 m
    canvas.setExtent(QgsRectangle(ext.xMinimum() + 200, ext.yMaximum() - 700, ext.xMinimum() + 600, ext.yMaximum() - 300))
    dialog.extentCombo.setCurrentIndex(dialog.extentCombo.findData("view"))
    x, y, w, h = dialog.view_window(raster)
    e = canvas.extent()  # the canvas keeps its aspect ratio: compare with what it shows, clipped to the raster
    x0, x1 = max(0, math.floor((e.xMinimum() - ext.xMinimum()) / 10)), min(128, math.ceil((e.xMaximum() - ext.xMinimum()) / 10))
    y0, y1 = max(0, math.floor((ext.yMaximum() - e.yMaximum()) / 10)), min(128, math.ceil((ext.yMaximum() - e.yMinimum()) / 10))
    assert (x, y, w, h) == (x0, y0, x1 - x0, y1 - y0)
    assert 0 < w * h < 128 * 128 / 2  # a part of the raster
    dialog.extentCombo.setCurrentIndex(dialog.extentCombo.findData("raster"))
    assert dialog.view_window(raster) is None


def test_classify_current_map_view_of_a_south_up_raster_reads_the_rows_shown(dialog, qgis_iface, tmp_path):
    """Row 0 of a south-up raster is its southern edge: the view of the north half is its rows 10-19."""
    from osgeo import gdal
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "south_up.tif"), 30, 20, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5099800.0, 0.0, 10.0))
    ds.SetProjection(QgsCoordinateReferenceSystem("EPSG:32632").toWkt())
    ds = None
    raster = QgsRasterLayer(str(tmp_path / "south_up.tif"), "south up", "gdal")
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32632"))
    canvas.setExtent(QgsRectangle(500000.0, 5099900.0, 500300.0, 5100000.0))  # the northern half
    dialog.extentCombo.setCurrentIndex(dialog.extentCombo.findData("view"))
    x, y, w, h = dialog.view_window(raster)
    assert (x, y, w) == (0, 10, 30) and y + h == 20  # before: rows 0-9, the southern half


def test_an_alpha_band_is_unchecked_by_default_and_used_when_checked(dialog, scene, tmp_path, monkeypatch):
    """RGBA: the dialog shows the core's default (alpha left out); checking the alpha band passes it as given."""
    import numpy as np
    from osgeo import gdal

    import geoml_plugin.core.finetune.job as finetune

    img = gdal.Open(scene.image).ReadAsArray()[:3]
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "rgba.tif"), img.shape[2], img.shape[1], 4,
                                              gdal.GDT_UInt16)
    src = gdal.Open(scene.image)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for i, a in enumerate([*img, np.full(img.shape[1:], 65535, np.uint16)]):
        ds.GetRasterBand(i + 1).WriteArray(a)
    ds.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    ds = src = None
    layer = QgsRasterLayer(str(tmp_path / "rgba.tif"), "rgba", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dialog.inputLayer.setLayer(layer)
    assert dialog.bandsCombo.count() == 4 and dialog.selected_bands() == [1, 2, 3]
    monkeypatch.setattr(finetune, "run_finetune", lambda cfg, fb: cfg)
    dialog.outputFile.setFilePath(str(tmp_path / "m.safetensors"))
    assert dialog._train_job()[1](None).input_bands is None  # the core's default: bands 1-3
    dialog.bandsCombo.setItemCheckState(3, Qt.CheckState.Checked)
    assert dialog._train_job()[1](None).input_bands == [1, 2, 3, 4]
    # a raster without an alpha band: all bands checked, and all of them is the default as before
    dialog.inputLayer.setLayer(_layers()["sample image"])
    assert dialog.selected_bands() == [1, 2, 3, 4] and dialog._train_job()[1](None).input_bands is None


def test_dialog_regression_adds_a_value_map_and_no_confidence_raster(qtbot, dialog, scene, out_dir):
    target = QgsRasterLayer(scene.canopy_height, "canopy height", "gdal")
    QgsProject.instance().addMapLayer(target)
    dialog.labelsLayer.setLayer(target)
    assert not dialog.labelField.isEnabled()
    dialog.taskCombo.setCurrentIndex(dialog.taskCombo.findData("regression"))
    dialog.epochsSpin.setValue(1)
    dialog.maxSamplesSpin.setValue(30)
    dialog.classifyCheck.setChecked(True)
    model = out_dir / "chm.safetensors"
    dialog.outputFile.setFilePath(str(model))
    qtbot.mouseClick(dialog.runButton, Qt.MouseButton.LeftButton)
    wait_for_task(qtbot, dialog)
    log = dialog.logView.toPlainText()
    assert "target 'canopy height (m)'" in log and "Mapped values in" in log and "Classified" not in log, log
    assert dialog.statusLabel.text().startswith("Trained: RMSE"), dialog.statusLabel.text()
    assert " m, MAE " in dialog.statusLabel.text()  # the errors in the target's units
    layers = _layers()
    values = layers["chm_values"]
    assert values.renderer().type() == "singlebandpseudocolor"
    assert "chm_confidence" not in layers and not (out_dir / "chm_confidence.tif").exists()
    assert sorted(os.listdir(out_dir)) == ["chm.safetensors", "chm_report.html", "chm_report.json", "chm_values.qml",
                                           "chm_values.tif"]


def test_copy_as_command_line_gives_the_geoml_finetune_command(qtbot, dialog, out_dir):
    import shlex

    from qgis.PyQt.QtWidgets import QApplication

    from geoml_plugin.cli import build_parser
    from geoml_plugin.cli.commands import build_finetune

    dialog.epochsSpin.setValue(7)
    dialog.augmentCheck.setChecked(False)
    dialog.outputFile.setFilePath(str(out_dir / "cmd.safetensors"))
    qtbot.mouseClick(dialog.copyCommandButton, Qt.MouseButton.LeftButton)
    text = QApplication.clipboard().text()
    assert text.startswith("geoml finetune --input ") and "--label-field class_name" in text
    assert "--epochs 7" in text and "--no-augment" in text
    assert build_finetune(build_parser().parse_args(shlex.split(text)[1:])) == dialog.build_config()
    assert dialog.task is None and list(out_dir.iterdir()) == []

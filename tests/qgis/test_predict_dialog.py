import os

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt

from tests.conftest import leftovers
from tests.qgis.conftest import FakePlugin, wait_for_task


def _dialog(qtbot, qgis_iface, scene):
    from geoml_plugin.gui.predict_dialog import PredictDialog

    layer = QgsRasterLayer(scene.image, "sample image", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dlg = PredictDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    dlg.inputLayer.setLayer(layer)
    return dlg


def test_dialog_runs_job_in_background_and_adds_styled_layer(qtbot, qgis_iface, qgis_new_project, scene,
                                                              sample_model, out_dir):
    dlg = _dialog(qtbot, qgis_iface, scene)
    dlg.modelFile.setFilePath(sample_model)
    assert "4 classes" in dlg.modelInfo.text() and "Water" in dlg.modelInfo.text()
    out = str(out_dir / "dialog_pred.tif")
    dlg.outputFile.setFilePath(out)
    dlg.deviceCombo.setCurrentText("cpu")
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert dlg.task is not None and not dlg.runButton.isEnabled()
    wait_for_task(qtbot, dlg)
    assert os.path.exists(out)
    names = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert "dialog_pred" in names and "dialog_pred_confidence" in names
    assert names["dialog_pred"].renderer().type() == "paletted"
    assert dlg.progressBar.value() == 100
    assert "Done in" in dlg.logView.toPlainText()
    assert dlg.runButton.isEnabled() and not dlg.cancelButton.isEnabled()


def test_overlap_is_automatic_by_default_and_passed_on_when_set(qtbot, qgis_iface, qgis_new_project, scene,
                                                                 sample_model, out_dir, monkeypatch):
    import geoml_plugin.core.predict as core_predict

    dlg = _dialog(qtbot, qgis_iface, scene)
    dlg.modelFile.setFilePath(sample_model)
    dlg.outputFile.setFilePath(str(out_dir / "o.tif"))
    assert dlg.overlapSpin.value() == -1 and dlg.overlapSpin.text() == "Automatic"
    seen = []
    monkeypatch.setattr(core_predict, "run_predict", lambda cfg, fb: seen.append(cfg.overlap))
    for value in (-1, 24):
        dlg.overlapSpin.setValue(value)
        _, job = dlg.make_job()
        job(None)
    assert seen == [None, 24]


def test_dialog_reports_bad_input_without_running(qtbot, qgis_iface, qgis_new_project, scene, tmp_path):
    dlg = _dialog(qtbot, qgis_iface, scene)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a model at all")
    dlg.modelFile.setFilePath(str(junk))
    assert "not a GeoML model" in dlg.modelInfo.text()
    dlg.modelFile.setFilePath("")
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert dlg.task is None
    assert "Choose a GeoML model file" in dlg.logView.toPlainText()


def test_cancel_leaves_no_layer_and_no_file(qtbot, qgis_iface, qgis_new_project, tmp_path, sample_model, out_dir):
    from geoml_plugin.core.sampledata import make_sample_scene
    from geoml_plugin.gui.predict_dialog import PredictDialog

    big = make_sample_scene(str(tmp_path / "big"), size=1024, seed=3)
    layer = QgsRasterLayer(big.image, "big", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dlg = PredictDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    dlg.inputLayer.setLayer(layer)
    dlg.modelFile.setFilePath(sample_model)
    dlg.outputFile.setFilePath(str(out_dir / "cancelled.tif"))
    dlg.batchSpin.setValue(1)
    dlg.run()
    task = dlg.task
    qtbot.waitUntil(lambda: task.progress() > 0, timeout=60_000)
    qtbot.mouseClick(dlg.cancelButton, Qt.MouseButton.LeftButton)
    wait_for_task(qtbot, dlg)
    assert "Cancelled; nothing was written." in dlg.logView.toPlainText()
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values()] == ["big"]


def test_dialog_can_limit_to_the_map_view(qtbot, qgis_iface, qgis_new_project, scene, sample_model, out_dir):
    from qgis.core import QgsRectangle

    from geoml_plugin.core.raster.io import raster_info

    dlg = _dialog(qtbot, qgis_iface, scene)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(dlg.inputLayer.currentLayer().crs())
    src = raster_info(scene.image)
    x0, y0 = src.pixel_to_world(10, 10)
    x1, y1 = src.pixel_to_world(60, 40)
    canvas.setExtent(QgsRectangle(x0, y1, x1, y0))
    canvas.refresh()
    dlg.modelFile.setFilePath(sample_model)
    dlg.outputFile.setFilePath(str(out_dir / "view.tif"))
    dlg.extentCheck.setChecked(True)
    dlg.run()
    wait_for_task(qtbot, dlg)
    info = raster_info(str(out_dir / "view.tif"))
    # the canvas keeps its aspect ratio, so the view covers at least the requested box
    assert 50 <= info.width < src.width and 30 <= info.height <= src.height


def test_running_again_to_the_same_file_replaces_the_layer_instead_of_stacking_a_stale_one(
        qgis_new_project, tmp_path):
    """A second run over the same output replaces the file; the layer of the first run showed the old contents
    under the same name."""
    import numpy as np
    from osgeo import gdal

    from geoml_plugin.styling import add_raster_layer
    from tests.conftest import write_raster

    path = str(tmp_path / "m_classes.tif")
    write_raster(path, np.full((1, 8, 8), 1, np.uint8))
    first_id = add_raster_layer(path).id()
    write_raster(str(tmp_path / "new.tif"), np.full((1, 8, 8), 2, np.uint8))
    os.replace(tmp_path / "new.tif", path)  # as the atomic writer does
    other = QgsRasterLayer(path, "kept: another name the analyst gave it", "gdal")
    QgsProject.instance().addMapLayer(other)
    second = add_raster_layer(path)
    layers = QgsProject.instance().mapLayers().values()
    assert [lyr.name() for lyr in layers if lyr.name() == "m_classes"] == ["m_classes"]
    assert QgsProject.instance().mapLayer(first_id) is None and second.isValid()
    assert QgsProject.instance().mapLayer(other.id()) is not None  # renamed by the analyst: theirs, left alone
    assert gdal.Open(path).ReadAsArray().max() == 2
    assert second.dataProvider().sample(second.extent().center(), 1)[0] == 2


def test_an_unexpected_error_when_showing_the_result_is_a_message(qtbot, qgis_iface, qgis_new_project, scene,
                                                                  monkeypatch):
    from types import SimpleNamespace

    from qgis.core import Qgis

    from geoml_plugin.gui import predict_dialog

    def broken(result):
        raise RuntimeError("the layer tree is gone")

    monkeypatch.setattr(predict_dialog, "add_prediction_layers", broken)
    dlg = _dialog(qtbot, qgis_iface, scene)
    dlg._done(SimpleNamespace(error=None, result=None, cancelled=False))  # before: the RuntimeError escaped
    text = "Showing the result failed: the layer tree is gone"
    assert text in dlg.logView.toPlainText()
    assert any(text in m for m in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical))
    assert dlg.task is None and dlg.runButton.isEnabled()


def test_the_confidence_raster_is_added_below_the_classes_and_hidden(qtbot, qgis_iface, qgis_new_project, scene,
                                                                     sample_model, out_dir):
    """Issue 21 point 5: the class map is what shows first, not the confidence ramp above it."""
    dlg = _dialog(qtbot, qgis_iface, scene)
    dlg.modelFile.setFilePath(sample_model)
    dlg.outputFile.setFilePath(str(out_dir / "order.tif"))
    dlg.deviceCombo.setCurrentText("cpu")
    for _ in range(2):  # a second run replaces both layers and keeps the order
        qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
        if dlg.task is None:  # asked about replacing the first run's files: the test's answer is below
            break
        wait_for_task(qtbot, dlg)
        dlg.ask_replace = lambda existing: True
    root = QgsProject.instance().layerTreeRoot()
    order = [node.name() for node in root.findLayers()]
    assert order.index("order") < order.index("order_confidence"), order
    assert [n for n in order if n.startswith("order")] == ["order", "order_confidence"]
    visible = {node.name(): node.isVisible() for node in root.findLayers()}
    assert visible["order"] and not visible["order_confidence"]


def test_export_button_writes_onnx_which_the_dialog_then_applies_without_the_torch_check(
        qtbot, qgis_iface, qgis_new_project, scene, sample_model, out_dir, monkeypatch):
    import pytest

    pytest.importorskip("onnxruntime")
    from osgeo import gdal

    from geoml_plugin.deps import detect as deps

    dlg = _dialog(qtbot, qgis_iface, scene)
    dlg.modelFile.setFilePath(sample_model)
    assert dlg.exportButton.isEnabled() and dlg.exportButton.text() == "Export…"
    onnx_path = str(out_dir / "model.onnx")
    assert dlg.export_model(onnx_path) is not None
    wait_for_task(qtbot, dlg)
    assert os.path.exists(onnx_path) and "Exported" in dlg.logView.toPlainText()
    dlg.modelFile.setFilePath(onnx_path)
    assert "ONNX GeoML export" in dlg.modelInfo.text() and "Water" in dlg.modelInfo.text()
    assert not dlg.exportButton.isEnabled()
    # PyTorch reported missing: an ONNX model is still applied
    monkeypatch.setattr(deps, "quick_problem", lambda: "PyTorch is not installed.")
    out = str(out_dir / "onnx_pred.tif")
    dlg.outputFile.setFilePath(out)
    dlg.deviceCombo.setCurrentText("cpu")
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert dlg.task is not None
    wait_for_task(qtbot, dlg)
    truth = gdal.Open(scene.landcover).ReadAsArray()
    pred = gdal.Open(out).ReadAsArray()
    assert (pred == truth)[truth > 0].mean() > 0.95


def test_copy_as_command_line_gives_the_geoml_command_of_the_settings(qtbot, qgis_iface, qgis_new_project, scene,
                                                                       sample_model, out_dir):
    """The button copies the `geoml predict` command of the dialog's settings; it parses back to the same job."""
    import shlex

    from qgis.PyQt.QtWidgets import QApplication

    from geoml_plugin.cli import build_parser
    from geoml_plugin.cli.commands import build_predict

    dlg = _dialog(qtbot, qgis_iface, scene)
    dlg.modelFile.setFilePath(sample_model)
    dlg.outputFile.setFilePath(str(out_dir / "cmd.tif"))
    dlg.deviceCombo.setCurrentText("cpu")
    dlg.viewsCombo.setCurrentText("4")
    dlg.minRegionSpin.setValue(256)
    qtbot.mouseClick(dlg.copyCommandButton, Qt.MouseButton.LeftButton)
    text = QApplication.clipboard().text()
    assert text.startswith("geoml predict --input ") and "--views 4" in text and "--device cpu" in text
    assert "--min-region 256" in text and dlg.build_config().min_region == 256
    assert build_predict(build_parser().parse_args(shlex.split(text)[1:])) == dlg.build_config()
    assert text in dlg.logView.toPlainText() and dlg.task is None and not os.path.exists(out_dir / "cmd.tif")
    dlg.modelFile.setFilePath("")
    assert dlg.copy_command_line() == "" and "Choose a GeoML model file." in dlg.logView.toPlainText()

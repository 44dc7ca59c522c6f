"""Train GAN dialog on a real QGIS: background training, report preview, hand-over to the map tool, cancel."""
import os

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt

from geoml_plugin.core.modelfile import read_metadata
from tests.conftest import leftovers
from tests.gan_helpers import FakePlugin, one_torch_thread  # noqa: F401
from tests.qgis.conftest import wait_for_task


def _dialog(qtbot, qgis_iface, scene):
    from geoml_plugin.gui.traingan_dialog import TrainGanDialog

    layer = QgsRasterLayer(scene.dem, "dem", "gdal")
    QgsProject.instance().addMapLayer(layer)
    plugin = FakePlugin(qgis_iface)
    dlg = TrainGanDialog(plugin)
    qtbot.addWidget(dlg)
    dlg.inputLayer.setLayer(layer)
    dlg.deviceCombo.setCurrentText("cpu")
    return dlg, plugin


def test_dialog_trains_in_background_and_opens_the_tile_tool(qtbot, qgis_iface, qgis_new_project, scene, out_dir):
    dlg, plugin = _dialog(qtbot, qgis_iface, scene)
    assert dlg.targetLayer.currentLayer() is None and "tile generator" in dlg.modeInfo.text()
    model = str(out_dir / "dem_gan.safetensors")
    dlg.outputFile.setFilePath(model)
    dlg.iterationsSpin.setValue(4)
    dlg.batchSpin.setValue(2)
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert dlg.task is not None and not dlg.runButton.isEnabled()
    wait_for_task(qtbot, dlg)
    assert read_metadata(model).task == "generation"
    assert os.path.exists(str(out_dir / "dem_gan_report.png"))
    assert dlg.reportPreview.pixmap() is not None and not dlg.reportPreview.pixmap().isNull()
    assert "Done in" in dlg.logView.toPlainText() and "value_w1" in dlg.logView.toPlainText()
    panel = plugin.dialogs["gan_panel"]
    assert panel.modelFile.filePath() == model and panel.pickButton.isEnabled()
    panel.close()
    qgis_iface.removeDockWidget(panel)
    panel.deleteLater()  # no dock left in the main window for later tests (test_plugin counts them)


def test_cancel_leaves_nothing(qtbot, qgis_iface, qgis_new_project, scene, out_dir):
    dlg, _ = _dialog(qtbot, qgis_iface, scene)
    dlg.outputFile.setFilePath(str(out_dir / "never.safetensors"))
    dlg.iterationsSpin.setValue(100000)
    dlg.run()
    task = dlg.task
    qtbot.waitUntil(lambda: task.progress() > 2, timeout=60_000)
    qtbot.mouseClick(dlg.cancelButton, Qt.MouseButton.LeftButton)
    wait_for_task(qtbot, dlg)
    assert "Cancelled; nothing was written." in dlg.logView.toPlainText()
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


def test_architecture_options_use_the_dialogs_wording(qtbot, qgis_iface, qgis_new_project, scene):
    dlg, _ = _dialog(qtbot, qgis_iface, scene)
    texts = [dlg.archCombo.itemText(i) for i in range(dlg.archCombo.count())]
    assert dlg.targetLabel.text() == "Target raster"
    assert not any("TARGET" in t for t in texts), texts  # before: Processing's parameter name
    assert texts[0] == "Automatic (dcgan_sn without a target raster, pix2pix with one)"
    assert sum("needs a target raster" in t for t in texts) == 2


def test_copy_as_command_line_gives_the_geoml_traingan_command(qtbot, qgis_iface, qgis_new_project, scene, out_dir):
    """The button copies the `geoml traingan` command of the settings; it parses back to the same job, and
    nothing is trained or written."""
    import shlex

    from qgis.PyQt.QtWidgets import QApplication

    from geoml_plugin.cli import build_parser
    from geoml_plugin.cli.commands import build_traingan

    dlg, _ = _dialog(qtbot, qgis_iface, scene)
    target = QgsRasterLayer(scene.image, "image", "gdal")
    QgsProject.instance().addMapLayer(target)
    dlg.targetLayer.setLayer(target)
    dlg.outputFile.setFilePath(str(out_dir / "translator model.safetensors"))
    dlg.iterationsSpin.setValue(7)
    dlg.tileSizeCombo.setCurrentText("128")
    dlg.l1Spin.setValue(25.0)
    dlg.targetBandsEdit.setText("1,2")
    qtbot.mouseClick(dlg.copyCommandButton, Qt.MouseButton.LeftButton)
    text = QApplication.clipboard().text()
    assert text.startswith("geoml traingan --input ") and f"--target {scene.image}" in text
    assert "'" + str(out_dir / "translator model.safetensors") + "'" in text  # quoted for a shell
    assert "--iterations 7" in text and "--tile-size 128" in text and "--device cpu" in text
    cfg = build_traingan(build_parser().parse_args(shlex.split(text)[1:]))
    assert cfg == dlg.build_config() and cfg.l1_weight == 25.0 and cfg.target_bands == "1,2"
    assert cfg.report_path == str(out_dir / "translator model_report.png")
    assert text in dlg.logView.toPlainText() and dlg.task is None and list(out_dir.iterdir()) == []
    dlg.reportCheck.setChecked(False)
    assert "--output-report" not in dlg.copy_command_line()
    dlg.inputLayer.setLayer(None)
    assert dlg.copy_command_line() == "" and "Choose an input raster layer." in dlg.logView.toPlainText()

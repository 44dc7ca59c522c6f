"""Issue 21 point 8 on real widgets: a reopened dialog or a new project starts clean; GAN tile groups have names of
their own."""
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings
from qgis.PyQt.QtCore import Qt

from tests.gan_helpers import FakePlugin, one_torch_thread, tiny_generator_model  # noqa: F401


def test_a_reopened_dialog_or_a_new_project_shows_no_old_error_or_progress(qtbot, qgis_iface, qgis_new_project,
                                                                           scene):
    from geoml_plugin.gui.predict_dialog import PredictDialog

    layer = QgsRasterLayer(scene.image, "image", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dlg = PredictDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.modelFile.setFilePath("")
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    dlg.progressBar.setValue(100)
    assert "Choose a GeoML model file." in dlg.logView.toPlainText()
    dlg.close()
    dlg.show()  # reopened from the menu
    assert dlg.logView.toPlainText() == "" and dlg.progressBar.value() == 0
    qtbot.mouseClick(dlg.runButton, Qt.MouseButton.LeftButton)
    assert "Choose a GeoML model file." in dlg.logView.toPlainText()
    dlg.showMinimized()
    dlg.showNormal()
    QgsProject.instance().clear()
    assert dlg.logView.toPlainText() == ""
    dlg.close()


def test_two_tile_groups_of_one_seed_have_different_names_and_a_new_project_forgets_them(
        qtbot, qgis_iface, qgis_canvas, qgis_new_project, tmp_path):
    from qgis.core import QgsPointXY

    from geoml_plugin.gui.gan_panel import GanPanel

    keep = QgsSettings().value("geoml/gan_panel/folder")
    crs = QgsCoordinateReferenceSystem("EPSG:32632")
    QgsProject.instance().setCrs(crs)
    qgis_canvas.setDestinationCrs(crs)
    qgis_canvas.setExtent(QgsRectangle(499000, 5099000, 503000, 5102000))
    panel = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    panel.modelFile.setFilePath(tiny_generator_model(tmp_path / "gen.safetensors"))
    assert "trained at 10 m per pixel" in panel.modelInfo.text()  # the unit named (was '10 units per pixel')
    panel.folderWidget.setFilePath(str(tmp_path / "tiles"))
    panel.tileSizeCombo.setCurrentText("64")
    panel.seedSpin.setValue(0)
    assert panel.generate_at(QgsPointXY(500000, 5100000)) is not None
    assert panel.generate_at(QgsPointXY(502000, 5101000)) is not None
    groups = [n.name() for n in QgsProject.instance().layerTreeRoot().children()]
    assert sorted(groups) == ["GeoML tiles · seed 0", "GeoML tiles · seed 0 (2)"]
    assert f"Files in {tmp_path / 'tiles'}." in panel.statusLabel.text()
    assert QgsSettings().value("geoml/gan_panel/folder") == str(tmp_path / "tiles")  # remembered
    QgsProject.instance().clear()
    assert panel.shown == [] and panel.statusLabel.text() == "" and not panel.growButton.isEnabled()
    panel.set_tool_active(False)
    if keep is None:
        QgsSettings().remove("geoml/gan_panel/folder")
    else:
        QgsSettings().setValue("geoml/gan_panel/folder", keep)

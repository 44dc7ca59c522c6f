"""Issue 21 on the few-shot panel's real widgets: colours that suit the class names and an overlay unlike any
class (point 6)."""
import numpy as np
import pytest
from qgis.core import QgsCoordinateTransform, QgsPointXY, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor

from geoml_plugin.core.sampledata import CLASS_NAMES, read_label_points
from tests.qgis import test_fewshot_panel as _fewshot
from tests.qgis.test_fewshot_panel import WEB_MERCATOR, choose_class, click

# the few-shot panel's fixtures: a shown canvas in Web Mercator over the sample scene, the panel, a meta-model
qgis_canvas, panel, meta_model = _fewshot.qgis_canvas, _fewshot.panel, _fewshot.meta_model


def _rgb(color) -> tuple:
    c = QColor(color)
    return c.red(), c.green(), c.blue()


def _bluish(color) -> bool:
    r, g, b = _rgb(color)
    return b > r + 40 and b > g


def _greenish(color) -> bool:
    r, g, b = _rgb(color)
    return g > r + 20 and g > b + 20


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(_rgb(a), _rgb(b))))


def test_class_colours_follow_the_names_not_the_click_order(panel, qgis_canvas):
    panel.pickButton.setChecked(True)
    choose_class(panel, "Forest")  # clicked first: before, it got the palette's first colour, blue
    click(panel.tool, qgis_canvas, 100, 80)
    choose_class(panel, "SeaLake")
    click(panel.tool, qgis_canvas, 200, 150)
    choose_class(panel, "Thing")  # no usual colour: a palette colour unlike the others
    click(panel.tool, qgis_canvas, 250, 150)
    colours = {panel.classTable.item(r, 0).text(): panel.classTable.item(r, 0).data(Qt.ItemDataRole.DecorationRole)
               for r in range(panel.classTable.rowCount())}
    assert _greenish(colours["Forest"]) and _bluish(colours["SeaLake"]), {k: _rgb(v) for k, v in colours.items()}
    assert _distance(colours["Thing"], colours["Forest"]) > 60 and _distance(colours["Thing"], colours["SeaLake"]) > 60
    marker_colours = {m.color().name() for m in panel.markers.markers}
    assert QColor(colours["Forest"]).name() in marker_colours and QColor(colours["SeaLake"]).name() in marker_colours


def test_the_map_uses_those_colours_and_the_overlay_is_unlike_every_class(panel, qtbot, meta_model):
    layer = panel.rasterLayer.currentLayer()
    panel.modelFile.setFilePath(meta_model)
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    xy, ids = read_label_points(layer.source().replace("image.tif", "labels_points.gpkg"))
    order = ["Urban", "Cropland", "Forest", "Water"]  # click order unlike the names' usual colours
    for name in order:
        choose_class(panel, name)
        for i in np.flatnonzero(ids == CLASS_NAMES.index(name) + 1)[:4]:
            panel.add_point(to_canvas.transform(QgsPointXY(*xy[i])))
    assert panel.run() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
    names = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    palette = {c.label: c.color for c in names["Few-shot classes"].renderer().classes()}
    assert _bluish(palette["Water"]) and _greenish(palette["Forest"]), {k: _rgb(v) for k, v in palette.items()}
    for row in range(panel.classTable.rowCount()):  # the panel's table shows the map's colours
        name = panel.classTable.item(row, 0).text()
        assert QColor(panel.classTable.item(row, 0).data(Qt.ItemDataRole.DecorationRole)).name() == \
            palette[name].name()
    items = names["Few-shot low confidence"].renderer().shader().rasterShaderFunction().colorRampItemList()
    overlay = items[0].color
    assert overlay.alpha() > 0
    assert min(_distance(overlay, c) for c in palette.values()) > 100, (_rgb(overlay), palette)


@pytest.fixture(autouse=True)
def _clear(qgis_iface):
    qgis_iface.messageBar().clearWidgets()


def test_maps_go_to_the_remembered_output_folder_and_points_to_a_file(panel, qtbot, meta_model, tmp_path,
                                                                      monkeypatch, qgis_iface, qgis_canvas):
    """Point 7: an output folder (remembered), the log says where; Save as layer writes a GeoPackage."""
    from qgis.core import QgsSettings
    from qgis.PyQt.QtWidgets import QFileDialog

    from geoml_plugin.gui.fewshot_panel import FewShotPanel
    from tests.qgis.conftest import FakePlugin

    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "fewshot_1.tif").write_bytes(b"a map of an earlier session")
    panel.folderWidget.setFilePath(str(folder))
    layer = panel.rasterLayer.currentLayer()
    panel.modelFile.setFilePath(meta_model)
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    xy, ids = read_label_points(layer.source().replace("image.tif", "labels_points.gpkg"))
    for k, name in enumerate(CLASS_NAMES[:2], start=1):
        choose_class(panel, name)
        for i in np.flatnonzero(ids == k)[:3]:
            panel.add_point(to_canvas.transform(QgsPointXY(*xy[i])))
    assert panel.run() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
    assert f"maps go to {folder}." in panel.logView.toPlainText()
    # the log names the meta-model as one (it said 'patch classifier, 3 classes')
    assert "few-shot meta-model (prototypical networks), meta-trained on" in panel.logView.toPlainText()
    assert "patch classifier" not in panel.logView.toPlainText()
    names = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert names["Few-shot classes"].source() == str(folder / "fewshot_2.tif")  # the earlier map is kept
    assert (folder / "fewshot_1.tif").read_bytes() == b"a map of an earlier session"
    assert QgsSettings().value("geoml/fewshot/folder") == str(folder)
    other = FewShotPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(other)
    assert other.folderWidget.filePath() == str(folder)  # remembered

    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(folder / "my_points"), ""))
    qtbot.mouseClick(panel.saveButton, Qt.MouseButton.LeftButton)
    saved = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.name() == "few-shot points"]
    assert (folder / "my_points.gpkg").exists() and saved and saved[0].providerType() == "ogr"
    assert saved[0].featureCount() == 6 and {f["class_name"] for f in saved[0].getFeatures()} == set(CLASS_NAMES[:2])
    QgsSettings().remove("geoml/fewshot/folder")


def test_a_new_project_clears_the_points_extent_and_log(panel, qgis_canvas):
    """Point 8: support points of one project are not applied to a raster of the next (in another CRS)."""
    panel.pickButton.setChecked(True)
    choose_class(panel, "Water")
    click(panel.tool, qgis_canvas, 100, 80)
    panel.logView.appendPlainText("Click points of at least two classes.")
    panel.progressBar.setValue(40)
    QgsProject.instance().clear()
    assert panel.points.points == [] and panel.points.classes == [] and panel.markers.markers == []
    assert panel.classTable.rowCount() == 0 and panel.logView.toPlainText() == "" and panel.progressBar.value() == 0
    assert panel.drawn_extent is None and not panel.saveButton.isEnabled()


def test_cancel_gives_the_panel_back_within_a_second(panel, qtbot):
    """Point 9: a classification block of many seconds no longer keeps 'Cancelling…' for 10–25 s."""
    import time

    from geoml_plugin.tasks import GeoMLTask

    started = []

    def long_block(fb):
        started.append(True)
        fb.progress(0.1, "block 1/2")
        time.sleep(4.0)
        fb.progress(0.6, "block 2/2")

    task = panel._start(GeoMLTask("GeoML: few-shot classification", long_block, panel._full_done))
    ends = []
    task.taskCompleted.connect(lambda: ends.append("complete"))
    task.taskTerminated.connect(lambda: ends.append("terminated"))
    qtbot.waitUntil(lambda: bool(started), timeout=10_000)
    t0 = time.monotonic()
    qtbot.mouseClick(panel.cancelButton, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.task is None, timeout=3_000)
    assert time.monotonic() - t0 < 1.8 and not panel.cancelButton.isEnabled()
    assert panel.logView.toPlainText().endswith("Cancelled; nothing was written.")
    qtbot.waitUntil(lambda: bool(ends), timeout=15_000)
    assert ends == ["complete"]  # not "Task failed" in QGIS
    assert panel.logView.toPlainText().count("Cancelled") == 1


def test_too_few_classes_is_a_warning_not_critical(panel, qgis_iface, qgis_canvas, meta_model):
    """Point 9: a user's slip is a warning in the message bar (and so in QGIS's log), not CRITICAL."""
    from qgis.core import Qgis

    panel.modelFile.setFilePath(meta_model)
    panel.pickButton.setChecked(True)
    choose_class(panel, "Water")
    click(panel.tool, qgis_canvas, 100, 80)
    qtbot_click = panel.runButton.click
    qtbot_click()
    bar = qgis_iface.messageBar()
    assert any("Click points of at least two classes." in m for m in bar.get_messages(Qgis.MessageLevel.Warning))
    assert not bar.get_messages(Qgis.MessageLevel.Critical)


def test_the_panel_has_a_band_selector_that_reaches_the_job(panel, qtbot, meta_model, qgis_canvas):
    """Point 10: the band-count message says 'select the bands'; the panel now has them to select."""
    panel.modelFile.setFilePath(meta_model)
    assert panel.bandsCombo.count() == 4 and panel.selected_bands() is None  # all checked: the core chooses
    panel.bandsCombo.setItemCheckState(1, Qt.CheckState.Unchecked)
    assert panel.selected_bands() == [1, 3, 4]
    panel.pickButton.setChecked(True)
    for name, (x, y) in (("Water", (100, 80)), ("Forest", (300, 200))):
        choose_class(panel, name)
        click(panel.tool, qgis_canvas, x, y)
    cfg, _ = panel.make_config()
    assert cfg.bands == [1, 3, 4]
    assert panel.run() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    assert "The model expects 4 band(s); 3 were selected." in panel.logView.toPlainText()

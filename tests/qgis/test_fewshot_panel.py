"""The few-shot panel and its map tool on a real QGIS canvas."""
import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt

from geoml_plugin.core.raster.io import category_names_of
from geoml_plugin.core.sampledata import CLASS_NAMES, read_label_points
from tests.qgis.conftest import FakePlugin

WEB_MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")


@pytest.fixture(scope="module")
def meta_model(scene, tmp_path_factory):
    from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain

    path = str(tmp_path_factory.mktemp("panelmeta") / "meta.safetensors")
    run_metatrain(MetaTrainConfig([scene.image], scene.points, "class_name", path, ways=3, shots=2, query=3,
                                  patch_size=16, iterations=30, meta_batch=2, val_episodes=8, device="cpu"))
    return path


@pytest.fixture()
def qgis_canvas(qtbot, qgis_app):
    """A shown 400×300 canvas (pytest-qgis's canvas is never shown, so its map size stays stale)."""
    from qgis.gui import QgsMapCanvas

    canvas = QgsMapCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(400, 300)
    canvas.show()
    qtbot.waitExposed(canvas)
    return canvas


@pytest.fixture()
def panel(qtbot, qgis_iface, qgis_canvas, qgis_new_project, scene):
    from geoml_plugin.gui.fewshot_panel import FewShotPanel

    layer = QgsRasterLayer(scene.image, "sample image", "gdal")
    QgsProject.instance().addMapLayer(layer)
    # the canvas shows the scene in Web Mercator while the raster is in UTM 32N
    qgis_canvas.setDestinationCrs(WEB_MERCATOR)
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    qgis_canvas.setLayers([layer])
    qgis_canvas.setExtent(to_canvas.transformBoundingBox(layer.extent()))
    qgis_canvas.refresh()
    p = FewShotPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(p)
    p.rasterLayer.setLayer(layer)
    p.deviceCombo.setCurrentText("cpu")
    yield p
    p.cleanup()


def click(tool, canvas, x, y, button=Qt.MouseButton.LeftButton):
    event = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, QPoint(x, y), button)
    tool.canvasReleaseEvent(event)


def choose_class(panel, name):
    panel.classCombo.setCurrentText(name)
    panel.add_typed_class()


def test_clicks_become_points_in_the_raster_crs_with_markers_undo_and_remove(panel, qgis_canvas):
    layer = panel.rasterLayer.currentLayer()
    panel.pickButton.setChecked(True)
    assert qgis_canvas.mapTool() is panel.tool
    choose_class(panel, "Water")
    click(panel.tool, qgis_canvas, 100, 80)
    click(panel.tool, qgis_canvas, 120, 90)
    choose_class(panel, "Forest")
    click(panel.tool, qgis_canvas, 300, 200)
    assert panel.points.counts() == {"Water": 2, "Forest": 1}
    assert len(panel.markers.markers) == 2 * 3
    assert panel.classTable.rowCount() == 2 and panel.classTable.item(0, 1).text() == "2"

    # map clicks are transformed from the canvas CRS (EPSG:3857) to the raster's (EPSG:32632)
    expected = QgsCoordinateTransform(WEB_MERCATOR, layer.crs(), QgsProject.instance()).transform(
        qgis_canvas.getCoordinateTransform().toMapCoordinates(300, 200))
    x, y, cls = panel.points.in_crs(layer.crs())[2]
    assert cls == "Forest" and abs(x - expected.x()) < 1e-6 and abs(y - expected.y()) < 1e-6
    assert layer.extent().contains(QgsPointXY(x, y))

    panel.undo()
    assert panel.points.counts() == {"Water": 2, "Forest": 0} and len(panel.markers.markers) == 2 * 2
    click(panel.tool, qgis_canvas, 103, 82, Qt.MouseButton.RightButton)  # near the first point: removes it
    assert len(panel.points.points) == 1 and panel.points.points[0].point == \
        qgis_canvas.getCoordinateTransform().toMapCoordinates(120, 90)
    click(panel.tool, qgis_canvas, 390, 10, Qt.MouseButton.RightButton)  # nothing near: nothing removed
    assert len(panel.points.points) == 1

    vl = panel.save_layer()
    assert vl.crs() == layer.crs() and vl.featureCount() == 1
    feat = next(vl.getFeatures())
    assert feat["class_name"] == "Water"
    assert vl.id() in QgsProject.instance().mapLayers()


def test_adapt_and_classify_previews_then_adds_styled_layers(panel, qtbot, meta_model):
    layer = panel.rasterLayer.currentLayer()
    panel.modelFile.setFilePath(meta_model)
    assert "prototypical" in panel.modelInfo.text()
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    xy, ids = read_label_points(layer.source().replace("image.tif", "labels_points.gpkg"))
    for k, name in enumerate(CLASS_NAMES, start=1):
        choose_class(panel, name)
        for i in np.flatnonzero(ids == k)[:4]:
            panel.add_point(to_canvas.transform(QgsPointXY(*xy[i])))
    task = panel.run()
    assert task is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
    log = panel.logView.toPlainText()
    assert "Preview of the visible area" in log and "Classified 128×128 px" in log, log
    names = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert "Few-shot preview" not in names  # replaced by the full result
    classes, conf = names["Few-shot classes"], names["Few-shot low confidence"]
    assert classes.renderer().type() == "paletted"
    assert [c.label for c in classes.renderer().classes()] == CLASS_NAMES
    assert conf.renderer().type() == "singlebandpseudocolor"
    items = conf.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert items[0].value == pytest.approx(0.6) and items[0].color.alpha() > 0 and items[1].color.alpha() == 0
    assert category_names_of(classes.source()) == [""] + CLASS_NAMES
    truth = gdal.Open(layer.source().replace("image.tif", "landcover.tif")).ReadAsArray()
    pred = gdal.Open(classes.source()).ReadAsArray()
    assert (pred == truth)[truth > 0].mean() > 0.75  # class order of the panel = scene's class ids

    # more points, run again: re-adapts, the new map replaces the old one
    panel.add_point(to_canvas.transform(QgsPointXY(*xy[np.flatnonzero(ids == 1)[5]])))
    panel.run()
    qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values()].count("Few-shot classes") == 1
    assert panel.run_count == 2

    # the panel's own outputs are no raster to map: when the analyst removes the input raster, the chooser
    # does not fall back to the low-confidence overlay (a 1-band raster the next run would refuse)
    own = {lyr.id() for lyr in QgsProject.instance().mapLayers().values() if lyr.name().startswith("Few-shot")}
    assert panel.rasterLayer.count() == 1
    QgsProject.instance().removeMapLayer(layer.id())
    assert panel.rasterLayer.currentLayer() is None or panel.rasterLayer.currentLayer().id() not in own


def test_cancel_during_the_full_classification_removes_the_preview(panel, qtbot, meta_model):
    layer = panel.rasterLayer.currentLayer()
    panel.modelFile.setFilePath(meta_model)
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    xy, ids = read_label_points(layer.source().replace("image.tif", "labels_points.gpkg"))
    for k, name in enumerate(CLASS_NAMES[:2], start=1):
        choose_class(panel, name)
        for i in np.flatnonzero(ids == k)[:2]:
            panel.add_point(to_canvas.transform(QgsPointXY(*xy[i])))
    start = panel._start

    def start_and_cancel_the_full_run(task):  # as if Cancel (or closing the panel) came once the preview is shown
        start(task)
        if task.description() == "GeoML: few-shot classification":
            panel.cancel()
        return task

    panel._start = start_and_cancel_the_full_run
    panel.run()
    qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
    log = panel.logView.toPlainText()
    assert "Preview of the visible area" in log and "Cancelled; nothing was written." in log, log
    names = [lyr.name() for lyr in QgsProject.instance().mapLayers().values()]
    assert names == ["sample image"]  # no coarse preview left behind as if it were the result
    assert panel.preview_layers == []


def add_scene_points(panel, scene, per_class, classes=CLASS_NAMES):
    """Points of the scene's label layer, clicked as the analyst would (in the canvas CRS)."""
    layer = panel.rasterLayer.currentLayer()
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    xy, ids = read_label_points(scene.points)
    for k, name in enumerate(classes, start=1):
        choose_class(panel, name)
        for i in np.flatnonzero(ids == k)[:per_class]:
            panel.add_point(to_canvas.transform(QgsPointXY(*xy[i])))


def test_panel_maps_name_the_meta_model_and_the_support_like_geoml_fewshot(panel, qtbot, meta_model, scene,
                                                                          tmp_path):
    """The preview and the map run geoml:fewshot's adapt and classify steps (before: predict_raster directly,
    and the rasters said GEOML_MODEL "in-memory")."""
    panel.folderWidget.setFilePath(str(tmp_path))
    try:
        panel.modelFile.setFilePath(meta_model)
        add_scene_points(panel, scene, 3)
        panel.run()
        qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
        assert "Classified 128×128 px" in panel.logView.toPlainText(), panel.logView.toPlainText()
        support = ", ".join(f"{name}: 3" for name in CLASS_NAMES)
        for name in ("fewshot_1.tif", "fewshot_1_preview.tif", "fewshot_1_confidence.tif"):
            md = gdal.Open(str(tmp_path / name)).GetMetadata()
            assert md["GEOML_MODEL"] == "meta.safetensors" and md["GEOML_SUPPORT"] == support, (name, md)
    finally:
        panel.folderWidget.setFilePath("")  # the folder is remembered: later tests write to a temporary one


def test_panel_refuses_an_output_that_is_the_input_raster_with_the_jobs_message(panel, qtbot, meta_model, scene,
                                                                                 tmp_path):
    import shutil

    from geoml_plugin.core.errors import InputError
    from geoml_plugin.core.fewshot.job import FewShotConfig
    from geoml_plugin.core.progress import Feedback
    from geoml_plugin.gui.fewshot_panel import preview_then_full_jobs

    # the panel's run: its confidence raster would be the raster being mapped
    raster = tmp_path / "fewshot_1_confidence.tif"
    shutil.copy(scene.image, raster)
    before = raster.read_bytes()
    layer = QgsRasterLayer(str(raster), "image copy", "gdal")
    QgsProject.instance().addMapLayer(layer)
    panel.rasterLayer.setLayer(layer)
    panel.folderWidget.setFilePath(str(tmp_path))
    try:
        panel.modelFile.setFilePath(meta_model)
        add_scene_points(panel, scene, 2, CLASS_NAMES[:2])
        panel.run()
        qtbot.waitUntil(lambda: panel.task is None, timeout=120_000)
    finally:
        panel.folderWidget.setFilePath("")
    message = f"The output '{raster}' is the input raster: writing it would destroy the input raster."
    assert message in panel.logView.toPlainText(), panel.logView.toPlainText()
    assert raster.read_bytes() == before and not (tmp_path / "fewshot_1.tif").exists()

    # the preview step: the same check (before: the panel's preview skipped the job's checks of the model file)
    pts = [(float(x), float(y), n) for x, y, n in panel.points.in_crs(layer.crs())]
    cfg = FewShotConfig(scene.image, meta_model, str(tmp_path / "full.tif"), points=pts, device="cpu")
    preview, _ = preview_then_full_jobs(cfg, (0, 0, 64, 64), 8, (meta_model,))
    model_before = open(meta_model, "rb").read()
    with pytest.raises(InputError, match="is the model file: writing it would destroy the model file"):
        preview(Feedback())
    assert open(meta_model, "rb").read() == model_before


def test_a_model_that_cannot_be_adapted_is_flagged_when_chosen(panel, tmp_path, sample_model):
    from tests.gan_helpers import tiny_generator_model

    panel.modelFile.setFilePath(str(tiny_generator_model(tmp_path / "gan.safetensors", bands=4)))
    text = panel.modelInfo.text()
    assert "color:#b00" in text and "needs a GeoML meta-model or a patch classifier" in text, text
    panel.modelFile.setFilePath(sample_model)  # a per-pixel classifier: not a patch classifier either
    assert "needs a GeoML meta-model or a patch classifier" in panel.modelInfo.text()
    assert panel.modelInfo.text().count("band(s)") == 1


def test_bad_point_sets_give_messages_and_start_nothing(panel, meta_model):
    panel.modelFile.setFilePath(meta_model)
    choose_class(panel, "Water")
    panel.add_point(panel.canvas.extent().center())
    assert panel.run() is None
    assert "at least two classes" in panel.logView.toPlainText()
    choose_class(panel, "Forest")  # a class without points
    assert panel.run() is None
    assert "Class 'Forest' has no points" in panel.logView.toPlainText()
    panel.modelFile.setFilePath("")
    assert panel.run() is None and "Choose a meta-model" in panel.logView.toPlainText()
    assert panel.task is None


def test_an_unexpected_error_when_showing_the_preview_is_a_message(panel, qgis_iface, scene, monkeypatch):
    from types import SimpleNamespace

    from qgis.core import Qgis

    from geoml_plugin.gui import fewshot_panel

    def broken(path, name=None):
        raise RuntimeError("the layer tree is gone")

    monkeypatch.setattr(fewshot_panel, "add_raster_layer", broken)
    adapted = SimpleNamespace(method="prototypes", support_accuracy=1.0)
    task = SimpleNamespace(error=None, log_lines=[], result=(adapted, SimpleNamespace(output_path=scene.image,
                                                                                      seconds=0.1)))
    panel.task = task
    panel.cancelButton.setEnabled(True)
    panel._preview_done(task, None)  # before: the RuntimeError escaped to QGIS's Python error dialog
    text = "Few-shot mapping failed: the layer tree is gone"
    assert text in panel.logView.toPlainText()
    assert any(text in m for m in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical))
    assert panel.task is None and not panel.cancelButton.isEnabled()


@pytest.mark.parametrize("grid", ["south-up", "rotated"])
def test_the_pixel_window_of_an_extent_follows_a_south_up_or_rotated_raster_grid(panel, tmp_path, grid):
    """The window the job reads is in the file's own pixel grid, not in QGIS's north-up view of the raster."""
    import math

    from geoml_plugin.core.raster.io import raster_info, window_from_extent

    t = math.radians(30)
    gt = ((500000.0, 10.0, 0.0, 5099800.0, 0.0, 10.0) if grid == "south-up" else
          (500000.0, 10 * math.cos(t), -10 * math.sin(t), 5100000.0, -10 * math.sin(t), -10 * math.cos(t)))
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "grid.tif"), 30, 20, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    ds.SetProjection(QgsCoordinateReferenceSystem("EPSG:32632").toWkt())
    ds.GetRasterBand(1).Fill(1)
    ds = None
    layer = QgsRasterLayer(str(tmp_path / "grid.tif"), "grid", "gdal")
    assert layer.isValid()
    info = raster_info(str(tmp_path / "grid.tif"))
    if grid == "south-up":
        # the north-west quarter of the map is columns 0-14 of rows 10-19 (row 0 is the southern edge)
        rect = QgsRectangle(500000.0, 5099900.0, 500150.0, 5100000.0)
        assert panel._pixel_window(layer, rect, layer.crs()) == (0, 10, 15, 10)
    else:
        # the map box of pixels (5..10, 4..8) covers those pixels in the file's grid
        xs, ys = zip(*(gdal.ApplyGeoTransform(gt, c, r) for c in (5, 10) for r in (4, 8)))
        rect = QgsRectangle(min(xs), min(ys), max(xs), max(ys))
        x, y, w, h = panel._pixel_window(layer, rect, layer.crs())
        assert (x, y, w, h) == window_from_extent(info, min(xs), min(ys), max(xs), max(ys))
        assert x <= 5 and y <= 4 and x + w >= 10 and y + h >= 8
    # a view far away is outside; the whole extent, even seen in Web Mercator, is the whole raster
    assert panel._pixel_window(layer, QgsRectangle(0, 0, 10, 10), layer.crs()) is None
    to_merc = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    assert panel._pixel_window(layer, to_merc.transformBoundingBox(QgsRectangle(*info.extent)),
                               WEB_MERCATOR) == (0, 0, 30, 20)


def test_device_badge_is_filled_in_when_the_background_check_ends(qtbot, qgis_iface, qgis_canvas, qgis_new_project,
                                                                 monkeypatch):
    from geoml_plugin.deps import detect as deps
    from geoml_plugin.gui.deps import badge as deps_ui
    from geoml_plugin.gui.fewshot_panel import FewShotPanel

    waiting = []
    monkeypatch.setattr(deps, "gpu_summary", lambda block=True: "")  # torch not loaded yet: the check runs
    monkeypatch.setattr(deps_ui, "check_in_background", waiting.append)
    p = FewShotPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(p)
    try:
        assert p.deviceBadge.text() == deps_ui.CHECKING_BADGE and len(waiting) == 1  # before: never subscribed
        cuda = p.deviceCombo.model().item(p.deviceCombo.findText("cuda"))
        p.deviceCombo.setCurrentText("cuda")
        monkeypatch.setattr(deps, "summary_of", lambda st: st)
        waiting[0]("CPU only — jobs will be slower")  # the check ends
        assert p.deviceBadge.text() == "CPU only — jobs will be slower"
        assert not cuda.isEnabled() and p.deviceCombo.currentText() == "auto"
        p.set_device_badge("GPU: NVIDIA RTX A2000 (8 GB)")
        assert cuda.isEnabled() and "GPU:" in p.deviceBadge.text()
    finally:
        p.cleanup()


def test_copy_as_command_line_gives_the_geoml_fewshot_command_of_the_points(panel, qtbot, meta_model, scene,
                                                                          tmp_path):
    """The button copies a `geoml fewshot` command: the clicked points as a GeoPackage (the one saved with Save as
    layer while the points are unchanged), the whole raster; it parses back to the same job, which maps the
    panel's classes; nothing is classified by the panel."""
    import shlex

    from qgis.core import QgsVectorLayer
    from qgis.PyQt.QtWidgets import QApplication

    from geoml_plugin.cli import build_parser
    from geoml_plugin.cli.commands import build_fewshot
    from geoml_plugin.core.fewshot.job import run_fewshot

    panel.folderWidget.setFilePath(str(tmp_path))
    try:
        panel.modelFile.setFilePath(meta_model)
        assert panel.copy_command_line() == "" and "Click points of at least two classes." in panel.logView.toPlainText()
        add_scene_points(panel, scene, 3)
        qtbot.mouseClick(panel.copyCommandButton, Qt.MouseButton.LeftButton)
        text = QApplication.clipboard().text()
        support = str(tmp_path / "fewshot_points_1.gpkg")
        assert text.startswith(f"geoml fewshot --input {scene.image} --model {meta_model} --support {support} "
                               "--label-field class_name --output "), text
        assert "--device cpu" in text and text in panel.logView.toPlainText()
        cfg = build_fewshot(build_parser().parse_args(shlex.split(text)[1:]))
        assert cfg == panel.command_config() and cfg.output_path == str(tmp_path / "fewshot_1.tif")
        saved = QgsVectorLayer(support, "s", "ogr")
        assert saved.featureCount() == 3 * len(CLASS_NAMES) and sorted({f["class_name"] for f in saved.getFeatures()}) == \
            sorted(CLASS_NAMES)
        assert panel.task is None and not (tmp_path / "fewshot_1.tif").exists()
        # the points saved with Save as layer are used while they are unchanged; a change writes a new file
        panel.save_layer(str(tmp_path / "mine.gpkg"))
        assert f"--support {tmp_path / 'mine.gpkg'} " in panel.copy_command_line()
        panel.undo()
        assert f"--support {tmp_path / 'fewshot_points_2.gpkg'} " in panel.copy_command_line()
        # what the command runs: the map of the panel's classes
        result = run_fewshot(cfg)
        assert sorted(result.class_counts) == sorted(CLASS_NAMES)
        assert sorted(category_names_of(cfg.output_path)[1:]) == sorted(CLASS_NAMES)
        # a drawn extent or unchecked bands have no command-line option: said, nothing copied
        panel.extentCombo.setCurrentIndex(1)
        assert panel.copy_command_line() == "" and "choose Whole raster" in panel.logView.toPlainText()
    finally:
        panel.folderWidget.setFilePath("")  # the folder is remembered: later tests write to a temporary one

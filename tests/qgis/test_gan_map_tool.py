"""Interactive tile generation on a real QGIS canvas: click, Shift-click, grow; failures of the main-thread
steps after the tiles were written (style, layer, switching to the grown mosaic)."""
import numpy as np
import pytest
from osgeo import gdal
from qgis.core import Qgis, QgsCoordinateReferenceSystem, QgsProject, QgsRectangle
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QPainter

from tests.gan_helpers import FakePlugin, one_torch_thread, tiny_generator_model  # noqa: F401


@pytest.fixture()
def panel(qtbot, qgis_iface, qgis_canvas, qgis_new_project, tmp_path):
    from geoml_plugin.gui.gan_panel import GanPanel

    crs = QgsCoordinateReferenceSystem("EPSG:32632")
    QgsProject.instance().setCrs(crs)
    qgis_canvas.setDestinationCrs(crs)
    qgis_canvas.setExtent(QgsRectangle(499000, 5099000, 503000, 5102000))
    qgis_canvas.refresh()
    p = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(p)
    p.modelFile.setFilePath(tiny_generator_model(tmp_path / "gen.safetensors"))
    p.folderWidget.setFilePath(str(tmp_path / "tiles"))
    p.tileSizeCombo.setCurrentText("64")
    p.seedSpin.setValue(3)
    yield p
    p.set_tool_active(False)


def _click(canvas, tool, px, py, shift=False):
    mods = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    ev = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, QPoint(px, py), Qt.MouseButton.LeftButton,
                          Qt.MouseButton.LeftButton, mods)
    point = ev.mapPoint()
    tool.canvasReleaseEvent(ev)
    return point


def _group_layers(panel):
    return [QgsProject.instance().mapLayer(lid) for lid, _ in panel.shown[-1].layers]


def test_click_adds_a_styled_tile_centred_on_the_point(panel, qgis_canvas):
    assert panel.pickButton.isEnabled()
    panel.pickButton.setChecked(True)
    assert qgis_canvas.mapTool() is panel.tool
    point = _click(qgis_canvas, panel.tool, 150, 120)
    layers = _group_layers(panel)
    assert [lyr.name() for lyr in layers] == ["shaded relief", "elevation (m)"]
    assert "Tile generator of elevation (m)" in panel.modelInfo.text()
    assert [lyr.renderer().type() for lyr in layers] == ["hillshade", "singlebandpseudocolor"]
    assert layers[0].blendMode() == QPainter.CompositionMode.CompositionMode_Multiply  # shades the colours
    lyr = layers[1]
    assert lyr.crs().authid() == "EPSG:32632"
    assert (lyr.width(), lyr.height()) == (64, 64) and lyr.rasterUnitsPerPixelX() == pytest.approx(10.0)
    c = lyr.extent().center()
    assert abs(c.x() - point.x()) <= 5.0 and abs(c.y() - point.y()) <= 5.0
    assert "GeoTIFF in" in panel.statusLabel.text()
    tif = panel.shown[-1].session.tiles[(0, 0)]
    assert gdal.Open(tif).GetMetadata()["GEOML_SEED"] == "3"
    assert QgsProject.instance().layerTreeRoot().children()[0].name() == "GeoML tiles · seed 3"


def test_shift_click_regenerates_in_place_with_a_new_seed(panel, qgis_canvas):
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    first = gdal.Open(panel.shown[-1].session.tiles[(0, 0)]).ReadAsArray()
    n_layers = len(QgsProject.instance().mapLayers())
    _click(qgis_canvas, panel.tool, 200, 150, shift=True)
    assert panel.seedSpin.value() != 3 and len(panel.shown) == 1  # the old tile was replaced
    assert len(QgsProject.instance().mapLayers()) == n_layers
    second = gdal.Open(panel.shown[-1].session.tiles[(0, 0)]).ReadAsArray()
    assert second.shape == first.shape and np.abs(second - first).mean() > 1.0


def test_grow_adds_neighbours_that_join_the_first_tile(panel, qgis_canvas, qtbot):
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    shown = panel.shown[-1]
    before = _group_layers(panel)[1].extent()
    tile0 = gdal.Open(shown.session.tiles[(0, 0)]).ReadAsArray()
    assert panel.growButton.isEnabled()
    panel.grow()
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    lyr = _group_layers(panel)[1]
    after = lyr.extent()
    assert after.width() == pytest.approx(3 * before.width()) and after.center() == before.center()
    mosaic = gdal.Open(lyr.source()).ReadAsArray()
    np.testing.assert_array_equal(mosaic[64:128, 64:128], tile0)
    # no seam: steps across tile edges are like steps inside tiles
    edge = np.abs(mosaic[:, 63] - mosaic[:, 64]).mean()
    inside = np.abs(np.diff(mosaic[:, 70:120], axis=1)).mean()
    assert edge < 3 * inside
    assert "Added 8 tiles" in panel.statusLabel.text()


def test_classifier_model_is_refused_with_a_message(panel, sample_model, qgis_canvas):
    panel.modelFile.setFilePath(sample_model)
    assert "not a GAN model" in panel.modelInfo.text()
    assert not panel.pickButton.isEnabled()


def test_click_where_the_map_crs_is_not_valid_gives_a_message(panel, qgis_canvas):
    crs = QgsCoordinateReferenceSystem("EPSG:4326")
    QgsProject.instance().setCrs(crs)
    qgis_canvas.setDestinationCrs(crs)
    qgis_canvas.setExtent(QgsRectangle(400, 200, 600, 300))  # zoomed out far past the lon/lat range
    qgis_canvas.refresh()
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 150, 120)
    assert "not a longitude/latitude" in panel.statusLabel.text()
    assert panel.shown == [] and not panel.growButton.isEnabled()


def test_click_with_a_tiles_folder_that_cannot_be_made_gives_a_message(panel, qgis_canvas, tmp_path):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    panel.folderWidget.setFilePath(str(a_file / "tiles"))
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 150, 120)
    assert "tiles folder" in panel.statusLabel.text() and panel.shown == []


def test_an_unexpected_error_on_click_is_a_message_and_a_logged_traceback(panel, qgis_canvas, qgis_iface,
                                                                         monkeypatch):
    from qgis.core import Qgis, QgsApplication

    from geoml_plugin.core.gan.tile_session import TileSession

    logged = []

    def on_log(message, tag, level):
        logged.append((tag, message))

    QgsApplication.messageLog().messageReceived.connect(on_log)
    panel.set_tool_active(True)

    def out_of_memory(self):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TileSession, "start", out_of_memory)
    try:
        _click(qgis_canvas, panel.tool, 150, 120)  # before: the RuntimeError went to QGIS's Python error dialog
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(on_log)
    assert "Tile generation failed: CUDA out of memory" in panel.statusLabel.text()
    bar = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    assert any("Tile generation failed: CUDA out of memory" in m for m in bar)
    assert any(tag == "GeoML" and "Traceback" in m and "out_of_memory" in m for tag, m in logged)
    monkeypatch.undo()
    _click(qgis_canvas, panel.tool, 150, 120)  # the panel is still usable
    assert len(panel.shown) == 1 and panel.growButton.isEnabled()


def test_closing_the_panel_during_grow_is_an_info_and_keeps_only_the_tiles_on_the_map(
        panel, qgis_canvas, qgis_iface, qtbot, tmp_path, monkeypatch):
    import time

    from qgis.core import Qgis

    from geoml_plugin.core.gan.generate import TileSource

    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    before = sorted(p.name for p in (tmp_path / "tiles").iterdir())
    write = TileSource.write

    def slow_write(self, *args, **kwargs):  # the close comes before the ring is done
        time.sleep(0.05)
        return write(self, *args, **kwargs)

    monkeypatch.setattr(TileSource, "write", slow_write)
    panel.grow()
    panel.close()  # cancels the grow
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    bar = qgis_iface.messageBar()
    assert not any("ancel" in m for m in bar.get_messages(Qgis.MessageLevel.Critical))
    assert any("Grow cancelled: the tiles already on the map were kept" in m
               for m in bar.get_messages(Qgis.MessageLevel.Info))
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == before
    assert len(panel.shown[-1].session.tiles) == 1 and _group_layers(panel)[1].width() == 64



def _files(tmp_path):
    folder = tmp_path / "tiles"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _groups():
    return [node.name() for node in QgsProject.instance().layerTreeRoot().children()]


def _critical(iface):
    return iface.messageBar().get_messages(Qgis.MessageLevel.Critical)


def _assert_nothing_left_and_usable(panel, qgis_canvas, tmp_path, monkeypatch):
    assert panel.shown == [] and not panel.growButton.isEnabled()
    assert QgsProject.instance().mapLayers() == {}  # no half-added layer
    assert _groups() == []  # no empty group
    assert _files(tmp_path) == []  # the tile, mosaic and styles of a session never shown
    monkeypatch.undo()
    _click(qgis_canvas, panel.tool, 150, 120)  # the next click works
    assert len(panel.shown) == 1 and panel.growButton.isEnabled()
    assert [lyr.isValid() for lyr in QgsProject.instance().mapLayers().values()] == [True, True]
    assert _groups() == ["GeoML tiles · seed 3"]


@pytest.mark.parametrize("failing_call", [1, 2])  # the first style (no layer yet) or the second (one layer added)
def test_a_style_that_cannot_be_written_on_click_is_a_message_and_leaves_nothing(
        panel, qgis_canvas, qgis_iface, tmp_path, monkeypatch, failing_call):
    from geoml_plugin.core.errors import OutputError
    from geoml_plugin.core.gan.tile_session import TileSession

    write_style = TileSession.write_style
    calls = []

    def full_disk(self, style, blend_mode=0):
        calls.append(style)
        if len(calls) == failing_call:
            raise OutputError(f"Cannot write '{style}.qml': the disk is full.")
        return write_style(self, style, blend_mode)

    monkeypatch.setattr(TileSession, "write_style", full_disk)
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 150, 120)
    assert "the disk is full" in panel.statusLabel.text() and "Traceback" not in panel.statusLabel.text()
    assert any("the disk is full" in m for m in _critical(qgis_iface))
    _assert_nothing_left_and_usable(panel, qgis_canvas, tmp_path, monkeypatch)


def test_a_mosaic_qgis_cannot_open_on_click_is_a_message_and_leaves_nothing(
        panel, qgis_canvas, qgis_iface, tmp_path, monkeypatch):
    from geoml_plugin.gui import gan_panel

    real_layer = gan_panel.QgsRasterLayer

    def unreadable(path, name, provider):  # as if GDAL could not open the VRT
        return real_layer(path + ".missing", name, provider)

    monkeypatch.setattr(gan_panel, "QgsRasterLayer", unreadable)
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 150, 120)
    assert "QGIS cannot open the generated tiles" in panel.statusLabel.text()
    assert any("QGIS cannot open the generated tiles" in m for m in _critical(qgis_iface))
    _assert_nothing_left_and_usable(panel, qgis_canvas, tmp_path, monkeypatch)


def _same_files(after, before):
    """The same files, but for GDAL's statistics (.aux.xml) of a kept tile, written when QGIS closes it."""
    stats = [n for n in after if n.endswith(".aux.xml")]
    return ([n for n in after if n not in stats] == [n for n in before if not n.endswith(".aux.xml")]
            and all(n[:-len(".aux.xml")] in before for n in stats))


def _grown_then(panel, qtbot, monkeypatch, after):
    """Grow, with ``after(session, mosaic)`` run in the task once the ring and its mosaic are written."""
    from geoml_plugin.core.gan.tile_session import TileSession

    grow = TileSession.grow

    def grow_then(self, feedback=None):
        mosaic = grow(self, feedback)
        after(self, mosaic)
        return mosaic

    monkeypatch.setattr(TileSession, "grow", grow_then)
    panel.grow()
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)


def _assert_first_tile_shown_and_grow_works(panel, qtbot, tmp_path, monkeypatch, before, mosaic):
    layers = _group_layers(panel)
    assert [(lyr.isValid(), lyr.source(), lyr.width()) for lyr in layers] == [(True, mosaic, 64)] * 2
    assert len(panel.shown[-1].session.tiles) == 1
    assert _same_files(_files(tmp_path), before)  # no tile or mosaic of the failed ring
    assert panel.growButton.isEnabled()
    monkeypatch.undo()
    panel.grow()  # the next Grow works: the same ring, then shown
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    assert [(lyr.isValid(), lyr.width()) for lyr in _group_layers(panel)] == [(True, 192)] * 2
    assert "Added 8 tiles" in panel.statusLabel.text()


def test_a_grown_mosaic_qgis_cannot_open_keeps_the_tiles_on_the_map_and_deletes_the_ring(
        panel, qgis_canvas, qgis_iface, qtbot, tmp_path, monkeypatch):
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    before, mosaic = _files(tmp_path), panel.shown[-1].session.mosaic_path

    def unreadable(session, new_mosaic):
        with open(new_mosaic, "w") as fh:
            fh.write("not a VRT")

    _grown_then(panel, qtbot, monkeypatch, unreadable)
    assert "QGIS cannot open the grown tiles" in panel.statusLabel.text()
    assert any("QGIS cannot open the grown tiles" in m for m in _critical(qgis_iface))
    _assert_first_tile_shown_and_grow_works(panel, qtbot, tmp_path, monkeypatch, before, mosaic)


def test_an_error_while_switching_to_the_grown_mosaic_keeps_the_tiles_on_the_map_and_deletes_the_ring(
        panel, qgis_canvas, qgis_iface, qtbot, tmp_path, monkeypatch):
    from qgis.core import QgsRasterLayer

    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    before, mosaic = _files(tmp_path), panel.shown[-1].session.mosaic_path
    load_style = QgsRasterLayer.loadNamedStyle
    calls = []

    def fails_on_the_second_layer(self, *args):  # the first layer has switched already
        calls.append(self.name())
        if len(calls) == 2:
            raise RuntimeError("style broke")
        return load_style(self, *args)

    _grown_then(panel, qtbot, monkeypatch,
                lambda *_: monkeypatch.setattr(QgsRasterLayer, "loadNamedStyle", fails_on_the_second_layer))
    assert "Showing the grown tiles failed: style broke" in panel.statusLabel.text()
    _assert_first_tile_shown_and_grow_works(panel, qtbot, tmp_path, monkeypatch, before, mosaic)


def test_a_grow_whose_tiles_were_replaced_meanwhile_deletes_its_ring_and_does_not_claim_tiles(
        panel, qgis_canvas, qtbot, tmp_path, monkeypatch):
    import time

    from geoml_plugin.core.gan.tile_session import TileSession

    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    grown = panel.shown[-1].session
    before = _files(tmp_path)
    grow, started = TileSession.grow, []

    def slow_grow(self, feedback=None):  # the Shift-click comes before the ring is done
        started.append(self)
        time.sleep(0.3)
        return grow(self, feedback)

    monkeypatch.setattr(TileSession, "grow", slow_grow)
    panel.grow()
    qtbot.waitUntil(lambda: bool(started), timeout=10_000)
    _click(qgis_canvas, panel.tool, 200, 150, shift=True)  # replaces the tiles being grown
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    assert "Added 8 tiles" not in panel.statusLabel.text()
    assert "Grow discarded" in panel.statusLabel.text()
    assert len(grown.tiles) == 1
    assert _same_files([n for n in _files(tmp_path) if grown.token in n], before)  # no tile or mosaic of the ring
    assert len(panel.shown) == 1 and panel.shown[-1].session is not grown


def test_a_grow_cancelled_after_its_ring_was_written_deletes_the_ring(
        panel, qgis_canvas, qtbot, tmp_path, monkeypatch):
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    before, mosaic = _files(tmp_path), panel.shown[-1].session.mosaic_path
    _grown_then(panel, qtbot, monkeypatch, lambda *_: panel.task.cancel())  # Cancel pressed just as it ended
    assert "Grow cancelled" in panel.statusLabel.text()
    _assert_first_tile_shown_and_grow_works(panel, qtbot, tmp_path, monkeypatch, before, mosaic)


@pytest.mark.parametrize("failing", ["start", "write_style"])
def test_a_shift_click_that_fails_keeps_the_tile_it_would_have_replaced(
        panel, qgis_canvas, qgis_iface, tmp_path, monkeypatch, failing):
    from geoml_plugin.core.errors import OutputError
    from geoml_plugin.core.gan.tile_session import TileSession

    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    shown, layers, before = panel.shown[-1], sorted(QgsProject.instance().mapLayers()), _files(tmp_path)

    def full_disk(self, *args):
        raise OutputError("Cannot write the tile: the disk is full.")

    monkeypatch.setattr(TileSession, failing, full_disk)
    _click(qgis_canvas, panel.tool, 200, 150, shift=True)
    assert "the disk is full" in panel.statusLabel.text()
    assert panel.shown == [shown] and sorted(QgsProject.instance().mapLayers()) == layers
    assert all(lyr.isValid() for lyr in _group_layers(panel)) and _groups() == ["GeoML tiles · seed 3"]
    assert panel.seedSpin.value() == 3  # the seed of the tile on the map
    assert _same_files(_files(tmp_path), before)
    monkeypatch.undo()
    _click(qgis_canvas, panel.tool, 200, 150, shift=True)  # works, and replaces it
    assert len(panel.shown) == 1 and panel.shown[-1] is not shown and panel.seedSpin.value() != 3


@pytest.mark.parametrize("when", ["during the ring", "as the ring is done"])
def test_unloading_during_grow_leaves_no_ring_and_calls_nothing_on_the_deleted_panel(
        panel, qgis_canvas, qtbot, tmp_path, monkeypatch, when):
    """Plugin unload (Plugin Reloader, an update): cancel_all() detaches the task, then the panel is deleted."""
    import threading
    import time

    from geoml_plugin import tasks
    from geoml_plugin.core.gan.generate import TileSource
    from geoml_plugin.core.gan.tile_session import TileSession

    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 200, 150)
    before = _files(tmp_path)
    ring_done, unloaded = threading.Event(), threading.Event()
    write, grow = TileSource.write, TileSession.grow

    def slow_write(self, *args, **kwargs):  # the unload comes before the ring is done
        time.sleep(0.05)
        return write(self, *args, **kwargs)

    def grow_then_wait(self, feedback=None):  # the unload comes after the ring, before finished()
        mosaic = grow(self, feedback)
        ring_done.set()
        unloaded.wait(10)
        return mosaic

    if when == "during the ring":
        monkeypatch.setattr(TileSource, "write", slow_write)
    else:
        monkeypatch.setattr(TileSession, "grow", grow_then_wait)
    task = panel.grow()
    if when != "during the ring":
        qtbot.waitUntil(ring_done.is_set, timeout=60_000)
    tasks.cancel_all()  # what GeoMLPlugin.unload does, then it closes and deletes the panel
    panel.close()
    unloaded.set()
    qtbot.waitUntil(lambda: task not in tasks._running, timeout=60_000)
    qtbot.wait(100)  # pytest-qt fails the test on an exception in a callback
    assert _same_files(_files(tmp_path), before)
    panel.task = None  # unload deletes the panel; this one lives on to the fixture's teardown (a second close)


def test_copy_as_command_line_makes_the_tiles_shown_last(panel, qgis_canvas, qtbot, tmp_path):
    """The button copies the `geoml generate` command of the last click (and its Grow): it parses back to the same
    config, and running it gives the values of the mosaic on the map (the very values for one tile, within float32
rounding for a grown block), on the same grid."""
    import shlex

    from qgis.PyQt.QtWidgets import QApplication

    from geoml_plugin.cli import build_parser
    from geoml_plugin.cli.commands import build_generate
    from geoml_plugin.core.gan.generate import run_generate

    assert panel.copy_command_line() == "" and "Click on the map to generate tiles first" in panel.statusLabel.text()
    panel.set_tool_active(True)
    _click(qgis_canvas, panel.tool, 170, 130)
    for grown in (False, True):
        if grown:
            panel.grow()
            qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
        qtbot.mouseClick(panel.copyCommandButton, Qt.MouseButton.LeftButton)
        text = QApplication.clipboard().text()
        assert text.startswith("geoml generate --model ") and "--output-crs EPSG:32632" in text, text
        assert "--seed 3" in text and "--tile-size 64" in text and ("--tiles 3x3" in text) == grown
        assert text in panel.statusLabel.text()
        cfg = build_generate(build_parser().parse_args(shlex.split(text)[1:]))
        assert cfg == panel.command_config() and cfg.output_path == str(tmp_path / "tiles" / "geoml_tiles_seed3.tif")
        run_generate(cfg)
        mosaic = gdal.Open(_group_layers(panel)[1].source())
        made = gdal.Open(cfg.output_path)
        assert made.GetGeoTransform() == pytest.approx(mosaic.GetGeoTransform())
        if grown:  # one 192 px block against nine 64 px tiles: float32 rounding, nothing more (1 ulp at ~500 m)
            np.testing.assert_allclose(made.ReadAsArray(), mosaic.ReadAsArray(), rtol=1e-6, atol=0)
        else:
            np.testing.assert_array_equal(made.ReadAsArray(), mosaic.ReadAsArray())
        made = None
        gdal.Unlink(cfg.output_path)

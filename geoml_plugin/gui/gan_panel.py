"""Dock panel for interactive GAN tile generation (with :class:`GanMapTool`).

Click on the map → a tile centred on the point appears, in the map's CRS at
the model's ground pixel size, styled (terrain colours + hillshade for
elevation, RGB for imagery). Shift-click → the same with a new seed (it
replaces the tile under the click). *Grow* → the ring of neighbouring tiles,
seamless with what is there. Tiles of one click form a session
(``core/gan/tile_session.py``) shown as one mosaic in a layer group.

A 256 px tile takes well under a second on a CPU, so a click is generated on
the main thread (the map answers at once); *Grow* (8 or more tiles) runs as a
background task with progress.
"""
from __future__ import annotations

import html
import os
import random
import time
from dataclasses import dataclass, field

from qgis.core import Qgis, QgsDataProvider, QgsProject, QgsRasterLayer, QgsSettings
from qgis.gui import QgsDockWidget, QgsFileWidget
from qgis.PyQt.QtWidgets import QFrame, QScrollArea

from ..core.errors import GeoMLError, InputError
from ..core.gan.generate import GenerateConfig
from ..core.outputs import OutputFolder
from ..file_filters import MODEL_FILTER
from .forms import load_ui
from .gan_tool import GanMapTool
from .job_dialog import add_copy_command_button
from .layer_defaults import mark_output
from .messages import error_level, push_to_bar, unexpected_failure
from .spec_widgets import spec_default
from .task_controller import TaskController, current_task_property

FORM = load_ui("gan_panel.ui")
SETTINGS = "geoml/gan_panel/"
TILE_SIZES = ["64", "128", "256", "512"]
STYLES = [("colour+hillshade", "Terrain colours + hillshade"), ("hillshade", "Hillshade"),
          ("pseudocolor", "Terrain colours")]

HELP = """<p><b>Generate tiles</b> with a GAN model made by <i>Train GAN</i>.</p>
<ul><li>Press <i>Generate on click</i>, then click on the map: a tile centred on the point appears,
in the map's CRS and the model's ground pixel size, in the training raster's units (e.g. metres).</li>
<li><b>Shift-click</b>: regenerate with a new random seed (it replaces the tile under the click and
shows in <i>Seed</i>).</li>
<li><b>Grow</b>: add the neighbouring tiles, in the background; they join the existing ones without
seams (all tiles of a seed come from one endless field). Cancelling keeps the tiles already on the map;
closing the panel cancels a running Grow.</li>
<li>A click, Shift-click or Grow that fails (e.g. a full disk) says why and keeps the tiles the map showed
(a failed Shift-click keeps the tile it would have replaced, and its seed); the files it made are deleted.</li></ul>
<p>A translation model (trained with a target raster) maps a whole raster instead: the panel then offers
<i>Translate a layer…</i>, which opens <i>Apply model to raster</i>.</p>
<p>The tiles are GeoTIFFs in the tiles folder (a temporary folder when empty); the seed and model are
in their metadata. For an exact area or a batch, use Processing ‣ GeoML ‣ <i>Generate tiles / translate raster (GAN)</i>.</p>
<p>The copy button beside <i>Grow</i> (<b>Copy as command line</b>) copies the <code>geoml generate …</code> command
that makes the tiles shown last (all of them after Grow, as one GeoTIFF <code>geoml_tiles_seedN.tif</code> in the
tiles folder) on a server without QGIS: the same centre, tiles, seed, pixel size and CRS, so the same values
(for a grown block computed at once, within float rounding).</p>"""


@dataclass
class _Shown:
    session: object  # core.gan.tile_session.TileSession
    layers: list = field(default_factory=list)  # (layer id, qml path)
    group: object = None


class GanPanel(QgsDockWidget, FORM):
    task = current_task_property()  # a running Grow, None when idle

    def __init__(self, plugin=None, canvas=None, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        # in a short dock the panel scrolls instead of squeezing the wrapped texts over the fields below
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.panelContents)
        self.setWidget(scroll)
        self.plugin = plugin
        self.canvas = canvas if canvas is not None else plugin.iface.mapCanvas()
        self.tool = GanMapTool(self.canvas, self.generate_at)
        self.shown: list[_Shown] = []
        self.runner = TaskController()  # Grow's lifecycle: start, progress, cancel, end
        self._source = None
        self._source_key = None
        self._tiles_folder = OutputFolder("tiles")  # the chosen folder, else a temporary one made on first use
        self.tileSizeCombo.addItems(TILE_SIZES)
        for key, label in STYLES:
            self.styleCombo.addItem(label, key)
        self.modelFile.setFilter(MODEL_FILTER)
        self.folderWidget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folderWidget.lineEdit().setPlaceholderText("a temporary folder")
        self.folderWidget.setFilePath(_setting("folder", ""))  # remembered
        self.folderWidget.fileChanged.connect(lambda path: QgsSettings().setValue(SETTINGS + "folder", path))
        self.helpBrowser.setHtml(HELP)
        self.tileSizeCombo.setCurrentText(_setting("tile", str(spec_default(GenerateConfig, "tile_size"))))
        self.styleCombo.setCurrentIndex(max(0, self.styleCombo.findData(_setting("style", STYLES[0][0]))))
        self.modelFile.fileChanged.connect(self.describe_model)
        self.pickButton.toggled.connect(self.set_tool_active)
        self.growButton.clicked.connect(self.grow)
        self.translateButton.clicked.connect(self.open_translate)
        self.copyCommandButton = add_copy_command_button(self, "generate", self.copy_command_line,
                                                         before=self.growButton)
        self.canvas.mapToolSet.connect(self._tool_changed)
        QgsProject.instance().cleared.connect(self.reset)  # New Project / Open: forget the last one's tiles
        self.destroyed.connect(lambda *_: _disconnect(QgsProject.instance().cleared, self.reset))
        self.modelFile.setFilePath(_setting("model", ""))
        self.describe_model(self.modelFile.filePath())

    def reset(self) -> None:
        """A new or opened project: its layers are gone, so are the sessions shown; a running Grow is cancelled."""
        self.runner.cancel()
        self.shown = []
        self.statusLabel.setText("")
        self.progressBar.setVisible(False)
        self.growButton.setEnabled(False)

    # model -------------------------------------------------------------
    def describe_model(self, path: str) -> None:
        from ..core.gan.generate import require_generator
        from ..core.modelfile import read_metadata

        self._source = None
        self.pickButton.setEnabled(False)
        self.translateButton.setVisible(False)
        if not path:
            self.modelInfo.setText("Choose a GAN model made by Train GAN.")
            return
        try:
            meta = read_metadata(path)
            require_generator(meta, path)
        except GeoMLError as exc:
            self.modelInfo.setText(f"<span style='color:#b00'>{html.escape(str(exc), quote=False)}</span>")  # names from the file
            self.set_tool_active(False)
            return
        QgsSettings().setValue(SETTINGS + "model", path)
        t = meta.target
        units = f" ({t.get('units')})" if t.get("units") else ""
        px = f"{meta.pixel_size[0]:g}" if meta.pixel_size else "?"
        if meta.task == "translation":
            self.modelInfo.setText(f"Translation model: {meta.in_bands} → {t.get('bands', 1)} band(s){units}. "
                                   "It maps a raster, so use <i>Translate a layer…</i>.")
            self.translateButton.setVisible(True)
            self.set_tool_active(False)
            return
        self.modelInfo.setText(f"Tile generator of {_what(t)}{units}, trained at {px} {_crs_unit(meta.crs_wkt)} per pixel. "
                               "Click on the map to place a tile.")
        self.pickButton.setEnabled(True)

    def source(self):
        """The loaded generator (cached per file version)."""
        from ..core.gan.generate import TileSource

        path = self.modelFile.filePath()
        if not path:
            raise InputError("Choose a GAN model file first.")
        key = (path, os.path.getmtime(path) if os.path.exists(path) else 0)
        if self._source is None or self._source_key != key:
            self._source, self._source_key = TileSource(path, "auto"), key
        return self._source

    # map tool ----------------------------------------------------------
    def set_tool_active(self, active: bool) -> None:
        if active:
            try:
                self.source()  # load the model now, so that the first click is as quick as the others
            except GeoMLError as exc:
                self.show_error(str(exc))
                active = False
            except Exception as exc:  # e.g. torch cannot load it: a message, not QGIS's Python error
                self.show_error(unexpected_failure("Loading the model", exc))
                active = False
        if active and self.canvas.mapTool() is not self.tool:
            self.canvas.setMapTool(self.tool)
        elif not active and self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
        if self.pickButton.isChecked() != active:
            self.pickButton.setChecked(active)

    def _tool_changed(self, new_tool, _old=None) -> None:
        if new_tool is not self.tool and self.pickButton.isChecked():
            self.pickButton.setChecked(False)

    def _folder(self) -> str:
        return self._tiles_folder.resolve(self.folderWidget.filePath())

    def generate_at(self, point, new_seed: bool = False):
        """Generate a tile centred on ``point`` (map CRS); returns the session or None."""
        from ..core.gan.tile_session import TileSession
        from ..layer_sources import crs_wkt

        seed = self.seedSpin.value()
        try:
            t0 = time.perf_counter()
            source = self.source()
            if new_seed:
                self.seedSpin.setValue(random.randrange(1, 2**31 - 1))
            last = self._last_shown()
            replaced = last if new_seed and last is not None and last.session.contains(point.x(), point.y()) else None
            wkt = crs_wkt(self.canvas.mapSettings().destinationCrs())
            tile = int(self.tileSizeCombo.currentText())
            session = TileSession(source, wkt, point.x(), point.y(), self.seedSpin.value(), tile, self._folder())
            session.start()
            self._show(session)
            if replaced is not None:  # only once its replacement is on the map
                self.remove(replaced)
        except Exception as exc:  # e.g. CUDA out of memory: a message, not QGIS's Python error dialog
            self.seedSpin.setValue(seed)  # the seed of the tiles still on the map
            if isinstance(exc, GeoMLError):
                self.show_error(str(exc), error_level(exc))
            else:
                self.show_error(unexpected_failure("Tile generation", exc))
            return None
        QgsSettings().setValue(SETTINGS + "tile", self.tileSizeCombo.currentText())
        QgsSettings().setValue(SETTINGS + "style", self.styleCombo.currentData())
        where = self.folderWidget.filePath() or f"{self._folder()} (temporary: choose a tiles folder to keep them)"
        self.statusLabel.setText(
            f"{tile}×{tile} px tile, seed {session.seed}: GeoTIFF in {session.last_seconds[0] * 1000:.0f} ms, "
            f"on the map in {(time.perf_counter() - t0) * 1000:.0f} ms. Files in {where}.")
        self.growButton.setEnabled(self.task is None)
        return session

    # layers ------------------------------------------------------------
    def _specs(self, session) -> list:
        from ..core.raster.styles import MULTIPLY

        target = session.source.meta.target
        units = f" ({target['units']})" if target.get("units") else ""
        name = _what(target) + ("" if _what(target) == target.get("name") else units)
        if target.get("kind") == "rgb":
            return [("imagery", "rgb", 0)]
        style = self.styleCombo.currentData()
        if target.get("kind") != "elevation":
            return [(name, "auto", 0)]
        relief = ("shaded relief", "hillshade", MULTIPLY if style == "colour+hillshade" else 0)
        colour = (name, "pseudocolor", 0)
        return {"hillshade": [relief], "pseudocolor": [colour]}.get(style, [relief, colour])

    def _show(self, session) -> _Shown:
        """Add the session's layers in a new group. A failure (a style that cannot be written, a mosaic QGIS
        cannot open) removes what was added and the session's files, and raises: nothing of it stays."""
        project = QgsProject.instance()
        group = project.layerTreeRoot().insertGroup(0, _unique_group_name(f"GeoML tiles · seed {session.seed}"))
        shown = _Shown(session, [], group)
        try:
            for label, style, blend in self._specs(session):
                qml = session.write_style(style, blend)
                layer = QgsRasterLayer(session.mosaic_path, label, "gdal")
                if not layer.isValid():
                    raise GeoMLError(f"QGIS cannot open the generated tiles '{session.mosaic_path}'.")
                layer.loadNamedStyle(qml)
                mark_output(layer)
                project.addMapLayer(layer, False)
                group.addLayer(layer)
                shown.layers.append((layer.id(), qml))
        except BaseException:
            for lid, _ in shown.layers:
                project.removeMapLayer(lid)
            if group.parent() is not None:
                group.parent().removeChildNode(group)
            session.delete_files()
            raise
        self.shown.append(shown)
        return shown

    def _layers(self, shown: _Shown) -> list:
        project = QgsProject.instance()
        return [(project.mapLayer(lid), qml) for lid, qml in shown.layers if project.mapLayer(lid) is not None]

    def _last_shown(self):
        while self.shown and not self._layers(self.shown[-1]):
            self.shown.pop()  # its layers were removed by the user
        return self.shown[-1] if self.shown else None

    def remove(self, shown: _Shown) -> None:
        project = QgsProject.instance()
        for layer, _ in self._layers(shown):
            project.removeMapLayer(layer.id())
        if shown.group is not None and shown.group.parent() is not None:
            shown.group.parent().removeChildNode(shown.group)
        self.shown.remove(shown)

    def _refresh(self, shown: _Shown) -> None:
        """Switch the layers to the session's new mosaic. A failure (QGIS cannot open it, an error part way)
        switches them all back to what they showed and takes back the session's last change, and raises."""
        session = shown.session
        layers = self._layers(shown)
        before = [layer.source() for layer, _ in layers]
        try:
            for layer, qml in layers:
                _set_source(layer, session.mosaic_path, qml)
                if not layer.isValid():
                    raise GeoMLError(f"QGIS cannot open the grown tiles '{session.mosaic_path}'.",
                                     "The tiles on the map were kept; the new ones were deleted.")
        except BaseException:
            for (layer, qml), source in zip(layers, before):
                _set_source(layer, source, qml)
            session.undo_last_change()
            raise
        session.discard_old_mosaics()

    # grow ----------------------------------------------------------------
    def grow(self):
        shown = self._last_shown()
        if shown is None or self.task is not None:
            return None
        n = len(shown.session.ring())
        self.growButton.setEnabled(False)
        self.progressBar.setVisible(True)
        self.progressBar.setValue(0)
        t0 = time.perf_counter()
        return self.runner.start(
            lambda fb: shown.session.grow(fb), f"GeoML: grow {n} tiles",
            on_progress=lambda p: self.progressBar.setValue(int(p)),
            on_finished=lambda task: self._grown(task, shown, n, t0),
            on_cancelled=lambda task: self._grow_cancelled(task, shown),
            on_failed=self._grow_failed, on_error=self._grow_not_shown,
            # the panel is deleted (plugin unload) after the ring was written: no layer will show it
            on_detached=lambda task: shown.session.undo_last_change() if task.result is not None else None)

    def _grow_ended(self) -> None:
        self.progressBar.setVisible(False)
        self.growButton.setEnabled(True)

    def _grow_cancelled(self, task, shown: _Shown) -> None:
        """The user's doing (Cancel, or the panel closed): not an error."""
        self._grow_ended()
        if task.result is not None:  # cancelled just as the ring was done: it is not shown, so not kept
            shown.session.undo_last_change()
        text = "Grow cancelled: the tiles already on the map were kept; no new tiles were added."
        self.statusLabel.setText(text)
        push_to_bar(self.plugin, text, Qgis.MessageLevel.Info, 5)

    def _grow_failed(self, task) -> None:
        self._grow_ended()
        self.show_error(task.error_text())

    def _grown(self, task, shown: _Shown, n: int, t0: float) -> None:
        if task.cancelled:  # cancelled as the ring was done (the job did not stop): treated as cancelled
            return self._grow_cancelled(task, shown)
        self._grow_ended()
        if shown not in self.shown or not self._layers(shown):  # replaced (Shift-click) or removed meanwhile
            shown.session.undo_last_change()
            self.statusLabel.setText("Grow discarded: its tiles were replaced or removed from the map meanwhile.")
            return None
        self._refresh(shown)
        secs = time.perf_counter() - t0
        self.statusLabel.setText(f"Added {n} tiles around seed {shown.session.seed} in {secs:.1f} s "
                                 f"({secs / max(n, 1) * 1000:.0f} ms per tile).")
        return None

    def _grow_not_shown(self, exc: Exception) -> None:
        """Showing the grown mosaic failed (:meth:`_refresh` took it back): say so, keep the panel usable."""
        if isinstance(exc, GeoMLError):
            self.show_error(str(exc))
        else:
            self.show_error(unexpected_failure("Showing the grown tiles", exc)
                            + " The tiles on the map were kept; the new ones were deleted.")

    # Copy as command line -----------------------------------------------------
    def command_config(self) -> GenerateConfig:
        """The tiles shown last (one click, grown or not) as the GenerateConfig of ``geoml generate``: the
        centre of their block, its columns × rows, the session's seed, tile size, pixel size and CRS — the
        same grid, so the same values — written as one GeoTIFF in the tiles folder."""
        from qgis.core import QgsCoordinateReferenceSystem

        from ..cli.commands import crs_to_wkt

        last = self._last_shown()
        if last is None:
            raise InputError("Click on the map to generate tiles first: the command makes the tiles shown last.")
        session = last.session
        base, tile = session.base, session.tile
        ii, jj = [i for i, _ in session.tiles], [j for _, j in session.tiles]
        cols, rows = max(ii) - min(ii) + 1, max(jj) - min(jj) + 1
        # the block's centre on the session's grid: plan_grid puts its corner on the same pixel
        col = base.col0 + min(ii) * tile + cols * tile / 2
        row = base.row0 + min(jj) * tile + rows * tile / 2
        wkt = base.crs_wkt  # the map's CRS when the tiles were made
        auth = QgsCoordinateReferenceSystem.fromWkt(wkt).authid() if wkt else ""
        n, folder = session.seed, self._folder()
        out = os.path.join(folder, f"geoml_tiles_seed{n}.tif")
        k = 1
        while os.path.exists(out):
            k += 1
            out = os.path.join(folder, f"geoml_tiles_seed{n}_{k}.tif")
        style = {"hillshade": "hillshade", "pseudocolor": "pseudocolor"}.get(self.styleCombo.currentData(), "auto")
        return GenerateConfig(
            model_path=self.modelFile.filePath(), output_path=out, center=(col * base.px, -row * base.py),
            crs_wkt=crs_to_wkt(auth if auth and not auth.startswith("USER:") else wkt) if wkt else "",
            pixel_size=base.px if base.px == base.py else None, seed=session.seed, tiles=(cols, rows),
            tile_size=tile, style=style)

    def copy_command_line(self) -> str:
        """Put the ``geoml generate …`` command of the tiles shown last on the clipboard; '' (and the reason in
        the status line) when there are none."""
        from qgis.PyQt.QtWidgets import QApplication

        from ..cli.command_line import command_line

        try:
            text = command_line("generate", self.command_config())
        except GeoMLError as exc:
            self.show_error(html.escape(str(exc), quote=False), error_level(exc))
            return ""
        QApplication.clipboard().setText(text)
        self.statusLabel.setText("Copied to the clipboard: " + html.escape(text, quote=False))
        return text

    # other -----------------------------------------------------------------
    def open_translate(self) -> None:
        if self.plugin is None:
            return
        dlg = self.plugin.open_tool("gui.predict_dialog:open_dialog")
        dlg.modelFile.setFilePath(self.modelFile.filePath())

    def show_error(self, text: str, level=Qgis.MessageLevel.Critical) -> None:
        self.statusLabel.setText(f"<span style='color:#b00'>{text}</span>")
        push_to_bar(self.plugin, text, level, 10)

    def closeEvent(self, event):  # noqa: N802
        self.set_tool_active(False)
        self.runner.cancel()
        super().closeEvent(event)


def _unique_group_name(name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``… when the layer tree has a group of that name (two clicks with one
    seed made two groups that read the same)."""
    root = QgsProject.instance().layerTreeRoot()
    taken = {g.name() for g in root.findGroups()} if hasattr(root, "findGroups") else set()
    taken |= {n.name() for n in root.children()}
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


def _disconnect(signal, slot) -> None:
    try:
        signal.disconnect(slot)
    except (TypeError, RuntimeError):
        pass


def _set_source(layer, path: str, qml: str) -> None:
    layer.setDataSource(path, layer.name(), "gdal", QgsDataProvider.ProviderOptions())
    layer.loadNamedStyle(qml)
    layer.triggerRepaint()


def _setting(key: str, default: str) -> str:
    """A remembered text value; ``default`` for anything else (e.g. a list from a hand-edited QGIS3.ini)."""
    value = QgsSettings().value(SETTINGS + key, default)
    return value if isinstance(value, str) else default


def _crs_unit(wkt: str) -> str:
    """The training CRS's unit, short: 'm', 'ft', '°'; 'units' when unknown (a local CRS)."""
    from ..core.raster.georef import is_local, srs_from_wkt

    if not wkt or is_local(wkt):
        return "units"
    srs = srs_from_wkt(wkt)
    if srs.IsGeographic():
        return "°"
    name = (srs.GetLinearUnitsName() or "").lower()
    if name in ("metre", "meter", "metres", "meters", "m"):
        return "m"
    if "foot" in name or "feet" in name:
        return "ft"
    return name or "units"


def _what(target: dict) -> str:
    """What a generator makes, in words: 'elevation', 'imagery (4 bands)' or the band name."""
    kind, n = target.get("kind"), int(target.get("bands", 1))
    if kind == "elevation":
        return "elevation"
    if kind == "rgb":
        return f"imagery ({n} bands)"
    return target.get("name") or "values"


def open_panel(plugin):
    from qgis.PyQt.QtCore import Qt

    panel = plugin.dialogs.get("gan_panel")
    if panel is None:
        panel = GanPanel(plugin, plugin.iface.mapCanvas(), plugin.iface.mainWindow())
        plugin.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, panel)
        plugin.dialogs["gan_panel"] = panel
    panel.show()
    panel.raise_()
    return panel

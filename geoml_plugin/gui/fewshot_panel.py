"""The few-shot panel: click points of each class on the map, get a land-cover map.

"Adapt & classify" runs in two background steps: the model is adapted to the
clicked points and the *visible extent* is classified coarsely (a preview in
seconds); then the same adapted model classifies the whole raster (or a drawn
extent) and the result replaces the preview, with a confidence layer that
shows only the low-confidence areas — where the next points should go.
Clicking more points and pressing the button again re-adapts from scratch.
"""
from __future__ import annotations

import dataclasses
import html
import math
import os
from typing import Optional

from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRectangle,
    QgsSettings,
    QgsSingleBandPseudoColorRenderer,
    QgsWkbTypes,
)
from qgis.gui import QgsFileWidget, QgsMapToolExtent, QgsRubberBand
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QFrame, QHeaderView, QScrollArea, QTableWidgetItem, QWidget

from ..core.device import DEVICE_CHOICES
from ..core.errors import GeoMLError, InputError
from ..core.outputs import OutputFolder, default_output, output_name, sidecar_name
from ..deps.torch_preload import preload_torch
from ..file_filters import MODEL_FILTER
from ..styling import add_raster_layer
from ..tasks import GeoMLTask
from .deps.badge import refresh_badge, set_badge
from .fewshot_maptool import PointPickerTool
from .fewshot_points import MarkerSet, SupportPointSet
from .forms import load_ui
from .job_dialog import add_copy_command_button, copy_command_to_log, request_cancel
from .layer_defaults import ComboDefaults, mark_output, pick_input_raster, pick_labels, remember
from .map_window import pixel_window
from .messages import error_level, push_to_bar, unexpected_failure
from .task_controller import TaskController, current_task_property

FORM = load_ui("fewshot_panel.ui")
SETTINGS = "geoml/fewshot/"
PREVIEW_WINDOWS = 3000  # at most this many classified windows in the preview

HELP = """<h3>Few-shot mapping</h3>
<ol>
<li>Choose the <b>raster</b> to map and a <b>model</b>: a meta-model made by
<i>Meta-train a few-shot model</i> (best) or any GeoML patch classifier.</li>
<li>Type a <b>class</b> name (Enter adds it), press <b>Click points on the map</b> and
click a few points of that class (1–10 are enough). Change class and repeat.
Right click removes the nearest point; <b>Undo</b> removes the last one.</li>
<li><b>Adapt &amp; classify</b>: the visible area is previewed within seconds, then the whole
raster (or a drawn extent) is classified in the background and added to the map.</li>
<li>The <b>confidence</b> layer shows where the model is unsure (below the
<i>Low confidence</i> threshold): add points there and run again.</li>
</ol>
<p><b>Save as layer</b> keeps the points as a point layer (field <code>class_name</code>) for
<i>geoml:fewshot</i> in the Processing toolbox, batch mode or <code>qgis_process</code>. The copy button beside
<i>Adapt &amp; classify</i> (<b>Copy as command line</b>) copies the <code>geoml fewshot …</code> command that maps
the whole raster from these points on a server without QGIS; the points go into the GeoPackage last saved with
<i>Save as layer</i> or, when they changed since, into <code>fewshot_points_N.gpkg</code> in the output folder (the
log says which). A drawn extent and unchecked bands have no command-line option: copy with the whole raster and
all bands.</p>
<p>The maps are GeoTIFFs (<code>fewshot_N.tif</code> with its confidence raster and preview) in the
<b>Output folder</b>, which is remembered; left empty, a temporary folder (<code>geoml_fewshot_…</code>) that the
system may clear. The log says where each run writes. <b>Save as layer</b> asks for a GeoPackage to keep the points
in. A new or opened project clears the points, the drawn extent and the log. Closing the panel cancels a running
classification.</p>"""


def preview_then_full_jobs(cfg, preview_window, preview_stride, preview_paths):
    """Core work of one run, split so the preview shows before the full map: geoml:fewshot's own steps
    (``adapt``, then ``classify`` for the visible window and again for the full map), so the panel's rasters get
    the job's output checks and metadata. Each step returns ``predict_raster``'s result for the map."""

    def preview(fb):
        from ..core.fewshot.job import adapt, classify

        adapted = adapt(cfg, fb.sub(0.0, 0.4))
        pred = None
        if preview_window is not None:
            coarse = dataclasses.replace(cfg, output_path=preview_paths[0], confidence_path=None,
                                         window=preview_window, stride=preview_stride)
            pred = classify(coarse, adapted, fb.sub(0.4, 1.0)).prediction
        return adapted, pred

    def full(adapted):
        from ..core.fewshot.job import classify, clone_adapted

        mine = clone_adapted(adapted)
        return lambda fb: classify(cfg, mine, fb).prediction

    return preview, full


def style_low_confidence(layer: QgsRasterLayer, threshold: float) -> None:
    """Show only pixels whose confidence is below ``threshold``, in magenta (a colour no class gets, see
    ``core.raster.classes.LOW_CONFIDENCE_COLOR``); the rest transparent."""
    from ..core.raster.classes import LOW_CONFIDENCE_COLOR

    overlay = QColor(LOW_CONFIDENCE_COLOR)
    overlay.setAlpha(170)
    shader_fn = QgsColorRampShader(0.0, 1.0)
    shader_fn.setColorRampType(QgsColorRampShader.Type.Discrete)
    shader_fn.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(threshold, overlay, f"below {threshold:.0%}: add points here"),
        QgsColorRampShader.ColorRampItem(1.0001, QColor(0, 0, 0, 0), "confident"),
    ])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    layer.setRenderer(QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader))
    layer.triggerRepaint()


class FewShotPanel(QWidget, FORM):
    task = current_task_property()  # the running step (adapt and preview, or the full map), None when idle

    def __init__(self, plugin=None, canvas=None, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.plugin = plugin
        self.canvas = canvas if canvas is not None else plugin.iface.mapCanvas()
        self.points = SupportPointSet()
        self.markers = MarkerSet(self.canvas)
        self.tool = PointPickerTool(self.canvas)
        self.tool.pointClicked.connect(self.add_point)
        self.tool.removeClicked.connect(self.remove_near)
        self.extent_tool = QgsMapToolExtent(self.canvas)
        self.extent_tool.extentChanged.connect(self.set_drawn_extent)
        self.extent_band: Optional[QgsRubberBand] = None
        self.drawn_extent = None  # (QgsRectangle, crs)
        self.runner = TaskController()  # the two steps' lifecycle: start, progress, cancel, end
        self.adapted = None
        self.run_count = 0
        self._out_folder = OutputFolder("fewshot")  # the chosen folder, else a temporary one made on first use
        self.preview_layers: list = []
        self.result_layers: list = []
        self._saved_support: Optional[tuple] = None  # (GeoPackage, the points it holds): for Copy as command line

        self.rasterLayer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.folderWidget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folderWidget.lineEdit().setPlaceholderText("a temporary folder")
        folder = QgsSettings().value(SETTINGS + "folder", "")
        self.folderWidget.setFilePath(folder if isinstance(folder, str) else "")
        self.folderWidget.fileChanged.connect(lambda path: QgsSettings().setValue(SETTINGS + "folder", path))
        self.rasterLayer.layerChanged.connect(self.fill_bands)
        self._raster_defaults = ComboDefaults(self.rasterLayer, lambda: pick_input_raster("input"), self)
        self.fill_bands(self.rasterLayer.currentLayer())
        self.modelFile.setFilter(MODEL_FILTER)
        self.modelFile.fileChanged.connect(self.describe_model)
        self.deviceCombo.addItems(list(DEVICE_CHOICES))
        refresh_badge(self.set_device_badge)  # filled in when the background PyTorch/GPU check ends
        self.helpBrowser.setHtml(HELP)
        self.classTable.setColumnCount(2)
        self.classTable.setHorizontalHeaderLabels(["Class", "Points"])
        # the class names get the width (they were elided beside a wide column of 1-digit counts)
        header = self.classTable.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.classCombo.lineEdit().returnPressed.connect(self.add_typed_class)
        self.addClassButton.clicked.connect(self.add_typed_class)
        self.classTable.itemSelectionChanged.connect(self._select_class_from_table)
        self.pickButton.toggled.connect(self.set_picking)
        self.drawExtentButton.toggled.connect(self.set_drawing_extent)
        self.undoButton.clicked.connect(self.undo)
        self.removeClassButton.clicked.connect(self.remove_selected_class)
        self.saveButton.clicked.connect(self.save_points_clicked)
        self.runButton.clicked.connect(self.run)
        self.cancelButton.clicked.connect(self.cancel)
        self.copyCommandButton = add_copy_command_button(self, "fewshot", self.copy_command_line)
        self.canvas.mapToolSet.connect(self._tool_changed)
        QgsProject.instance().cleared.connect(self.reset)  # New Project / Open: nothing of the last one stays
        self.destroyed.connect(lambda *_: _disconnect(QgsProject.instance().cleared, self.reset))
        self.refresh()

    @property
    def out_dir(self) -> str:
        """Where maps are written: the chosen output folder, else a temporary folder (made once)."""
        return self._out_folder.resolve(self.folderWidget.filePath())

    def reset(self) -> None:
        """Forget the last project's points, extent, layers, progress and log (its CRS may not be the next one's);
        a running classification is cancelled."""
        self.runner.detach(cancel=True)
        self.cancelButton.setEnabled(False)
        self.points = SupportPointSet()
        self.drawn_extent = None
        if self.extent_band is not None:
            self.extent_band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        self.extentCombo.setCurrentIndex(0)
        self.preview_layers, self.result_layers = [], []
        self.adapted = None
        self.progressBar.setValue(0)
        self.progressBar.setFormat("%p%")
        self.logView.clear()
        self.classCombo.setCurrentText("")
        self.refresh()

    def fill_bands(self, layer) -> None:
        """The raster's bands, all checked (the model then reads them as Apply model would choose)."""
        self.bandsCombo.clear()
        if isinstance(layer, QgsRasterLayer):
            for b in range(1, layer.bandCount() + 1):
                self.bandsCombo.addItemWithCheckState(layer.bandName(b), Qt.CheckState.Checked, b)

    def selected_bands(self) -> Optional[list]:
        """The checked bands; None when all are (the core chooses, e.g. the model's bands of a larger raster)."""
        checked = sorted(int(b) for b in self.bandsCombo.checkedItemsData())
        if not checked:
            raise InputError("Check the raster bands the model should read.")
        return None if len(checked) == self.bandsCombo.count() else checked

    # -- model --------------------------------------------------------------
    def set_device_badge(self, text: str) -> None:
        set_badge(self.deviceBadge, self.deviceCombo, text)

    def describe_model(self, path: str) -> None:
        from ..core.fewshot.job import model_kind
        from ..core.modelfile import read_metadata

        if not path:
            self.modelInfo.setText("Choose a meta-model (.safetensors).")
            return
        try:
            meta = read_metadata(path)
            model_kind(meta)  # a GAN, a regression or a per-pixel model cannot be adapted: say so now
            fs = meta.extra.get("fewshot") or {}
            kind = {"protonet": "meta-model (prototypical networks)", "maml": "meta-model (MAML)",
                    "fomaml": "meta-model (first-order MAML)"}.get(fs.get("algorithm"))
            # describe() already names the bands and patch size
            text = meta.describe() if kind is None else f"{kind}; {meta.in_bands} band(s), patch {meta.patch_size} px"
            acc = meta.metrics.get("meta_validation_accuracy")
            if acc is not None:
                text += f"; meta-validation accuracy {acc:.0%}"
            self.modelInfo.setText(f"<span>{html.escape(text, quote=False)}</span>")  # rich text: names from the file escaped
        except GeoMLError as exc:
            self.modelInfo.setText(f"<span style='color:#b00'>{html.escape(str(exc), quote=False)}</span>")  # names from the file

    # -- classes and points -------------------------------------------------
    def current_class(self) -> str:
        return self.classCombo.currentText().strip()

    def add_typed_class(self) -> None:
        name = self.points.add_class(self.current_class())
        if name:
            self.refresh()
            self.classCombo.setCurrentText(name)

    def add_point(self, point) -> None:
        name = self.current_class()
        if not name:
            self.show_error("Type a class name first, then click its points.", Qgis.MessageLevel.Warning)
            return
        self.points.add(point, self.canvas.mapSettings().destinationCrs(), name)
        self.refresh()
        self.classCombo.setCurrentText(name)

    def remove_near(self, point, tolerance: float) -> None:
        i = self.points.nearest(point, self.canvas.mapSettings().destinationCrs(), tolerance)
        if i is not None:
            self.points.remove(i)
            self.refresh()

    def undo(self) -> None:
        if self.points.undo() is not None:
            self.refresh()

    def remove_selected_class(self) -> None:
        rows = self.classTable.selectionModel().selectedRows()
        name = self.classTable.item(rows[0].row(), 0).text() if rows else self.current_class()
        self.points.remove_class(name)
        self.refresh()

    def _select_class_from_table(self) -> None:
        rows = self.classTable.selectionModel().selectedRows()
        if rows:
            self.classCombo.setCurrentText(self.classTable.item(rows[0].row(), 0).text())

    def refresh(self) -> None:
        """Class list, table and markers from the point set."""
        current = self.current_class()
        self.classCombo.blockSignals(True)
        self.classCombo.clear()
        self.classCombo.addItems(self.points.classes)
        self.classCombo.setCurrentText(current)
        self.classCombo.blockSignals(False)
        counts = self.points.counts()
        self.classTable.setRowCount(len(counts))
        for row, (name, n) in enumerate(counts.items()):
            item = QTableWidgetItem(name)
            item.setData(Qt.ItemDataRole.DecorationRole, QColor(self.points.color(name)))
            self.classTable.setItem(row, 0, item)
            self.classTable.setItem(row, 1, QTableWidgetItem(str(n)))
        self.markers.rebuild(self.points)
        self.undoButton.setEnabled(bool(self.points.points))
        self.saveButton.setEnabled(bool(self.points.points))

    def save_points_clicked(self):
        """Save as layer: asks for a GeoPackage (in the output folder by default); Cancel saves nothing."""
        from qgis.PyQt.QtWidgets import QFileDialog

        start = os.path.join(self.folderWidget.filePath() or os.path.expanduser("~"), "fewshot_points.gpkg")
        path, _ = QFileDialog.getSaveFileName(self, "Save the support points", start, "GeoPackage (*.gpkg)")
        if not path:
            return None
        path = output_name(path, "geopackage")
        try:
            return self.save_layer(path)
        except GeoMLError as exc:
            self.show_error(str(exc), error_level(exc))
            return None

    def save_layer(self, path: Optional[str] = None):
        """The points as a layer in the project: written to the GeoPackage ``path``, or a memory layer."""
        layer = self.rasterLayer.currentLayer()
        crs = layer.crs() if layer is not None else self.canvas.mapSettings().destinationCrs()
        vl = self.points.save(path, crs) if path else self.points.to_layer(crs)
        if path:
            self._saved_support = (path, self._points_key())
        QgsProject.instance().addMapLayer(vl)
        where = f" in {path}" if path else " (a memory layer: Save as layer to a file to keep it)"
        self.push_message(f"Added '{vl.name()}' ({vl.featureCount()} points, field class_name){where}.")
        return vl

    # -- map tools ------------------------------------------------------------
    def set_picking(self, on: bool) -> None:
        if on:
            self.drawExtentButton.setChecked(False)
            self.canvas.setMapTool(self.tool)
        elif self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)

    def set_drawing_extent(self, on: bool) -> None:
        if on:
            self.pickButton.setChecked(False)
            self.canvas.setMapTool(self.extent_tool)
        elif self.canvas.mapTool() is self.extent_tool:
            self.canvas.unsetMapTool(self.extent_tool)

    def _tool_changed(self, new_tool, old_tool=None) -> None:
        self.pickButton.setChecked(new_tool is self.tool)
        self.drawExtentButton.setChecked(new_tool is self.extent_tool)

    def set_drawn_extent(self, rect: QgsRectangle) -> None:
        if rect.isEmpty():
            return
        self.drawn_extent = (QgsRectangle(rect), self.canvas.mapSettings().destinationCrs())
        if self.extent_band is None:
            self.extent_band = QgsRubberBand(self.canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
            self.extent_band.setColor(QColor(30, 120, 230, 40))
            self.extent_band.setStrokeColor(QColor(30, 120, 230))
            self.extent_band.setWidth(2)
        self.extent_band.setToGeometry(QgsGeometry.fromRect(rect), None)
        self.extentCombo.setCurrentIndex(1)
        self.drawExtentButton.setChecked(False)

    # -- running --------------------------------------------------------------
    def _pixel_window(self, layer: QgsRasterLayer, rect: QgsRectangle, rect_crs) -> Optional[tuple]:
        return pixel_window(layer, rect, rect_crs)

    def _checked_inputs(self) -> tuple:
        """(raster layer, model file) once the form is complete: a raster, a model and points of two classes."""
        layer = self.rasterLayer.currentLayer()
        if layer is None:
            raise InputError("Choose the raster to map.")
        model = self.modelFile.filePath()
        if not model:
            raise InputError("Choose a meta-model or a GeoML classifier.")
        counts = self.points.counts()
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            raise InputError(f"Class '{empty[0]}' has no points.", "Click some, or remove the class.")
        if len([c for c, n in counts.items() if n]) < 2:
            raise InputError("Click points of at least two classes.")
        return layer, model

    def make_config(self):
        from ..core.fewshot.job import FewShotConfig

        layer, model = self._checked_inputs()
        self.run_count += 1
        remember("input", layer)
        out = default_output(f"fewshot_{self.run_count}", "raster", self.out_dir)
        while os.path.exists(out):  # an output folder used before: never overwrite an earlier map
            self.run_count += 1
            out = default_output(f"fewshot_{self.run_count}", "raster", self.out_dir)
        window = None
        if self.extentCombo.currentIndex() == 1:
            if self.drawn_extent is None:
                raise InputError("Draw the extent to classify first (Draw…), or choose Whole raster.")
            window = self._pixel_window(layer, *self.drawn_extent)
            if window is None:
                raise InputError("The drawn extent does not overlap the raster.")
        # points in class order, so raster values and colours follow the panel's classes
        order = {c: i for i, c in enumerate(self.points.classes)}
        pts = sorted(self.points.in_crs(layer.crs()), key=lambda p: order[p[2]])
        return FewShotConfig(input_path=layer.source(), model_path=model, output_path=out,
                             confidence_path=sidecar_name(out, "confidence"), points=pts,
                             device=self.deviceCombo.currentText(), window=window,
                             bands=self.selected_bands()), os.path.splitext(out)[0]

    # -- Copy as command line ------------------------------------------------
    def _points_key(self) -> tuple:
        return tuple((p.point.x(), p.point.y(), p.crs.authid() or p.crs.toWkt(), p.class_name)
                     for p in self.points.points)

    def support_file(self, layer) -> str:
        """A GeoPackage with the clicked points (field ``class_name``) for ``geoml fewshot --support``: the one
        last saved with Save as layer when the points have not changed since, else one written now into the
        output folder (``fewshot_points_N.gpkg``; the log says where)."""
        saved = self._saved_support
        if saved is not None and saved[1] == self._points_key() and os.path.exists(saved[0]):
            return saved[0]
        n = 1
        while os.path.exists(os.path.join(self.out_dir, f"fewshot_points_{n}.gpkg")):
            n += 1
        path = os.path.join(self.out_dir, f"fewshot_points_{n}.gpkg")
        self.points.save(path, layer.crs())
        self._saved_support = (path, self._points_key())
        self.logView.appendPlainText(f"The support points are saved in {path} for the command line.")
        return path

    def command_config(self):
        """The panel's job as ``geoml fewshot`` runs it: the clicked points as a GeoPackage, the whole raster, the
        next map name in the output folder."""
        from ..core.fewshot.job import FewShotConfig

        layer, model = self._checked_inputs()
        if self.extentCombo.currentIndex() == 1:
            raise InputError("geoml fewshot classifies the whole raster: choose Whole raster to copy the command.")
        if self.selected_bands() is not None:
            raise InputError("geoml fewshot reads the bands as Apply model chooses them: check all bands to copy "
                             "the command.")
        n = self.run_count + 1
        while os.path.exists(default_output(f"fewshot_{n}", "raster", self.out_dir)):
            n += 1
        out = default_output(f"fewshot_{n}", "raster", self.out_dir)
        return FewShotConfig(input_path=layer.source(), model_path=model, output_path=out,
                             support=self.support_file(layer), label_field="class_name",
                             confidence_path=sidecar_name(out, "confidence"), device=self.deviceCombo.currentText())

    def copy_command_line(self) -> str:
        """Put the ``geoml fewshot …`` command of the panel's points and settings on the clipboard and in the log;
        '' (and the reason in the log) when they are not complete."""
        return copy_command_to_log("fewshot", self.command_config, self.logView)

    def run(self) -> Optional[GeoMLTask]:
        try:
            cfg, base = self.make_config()
        except GeoMLError as exc:
            self.show_error(str(exc), error_level(exc))
            return None
        if self.task is not None:  # re-adapt: the running job is superseded
            self.task.cancel()
        preload_torch()  # on the main thread: see deps/torch_preload.py
        layer = self.rasterLayer.currentLayer()
        try:
            visible = self._pixel_window(layer, self.canvas.extent(), self.canvas.mapSettings().destinationCrs())
        except GeoMLError:
            visible = None  # the job itself reports why the raster cannot be read
        from ..core.modelfile import read_metadata

        try:
            patch = read_metadata(cfg.model_path).patch_size
        except GeoMLError as exc:
            self.show_error(str(exc))
            return None
        stride = None
        if visible is not None:
            stride = max(patch // 4, int(math.ceil(math.sqrt(visible[2] * visible[3] / PREVIEW_WINDOWS))))
        preview, full = preview_then_full_jobs(cfg, visible, stride, (sidecar_name(cfg.output_path, "preview"),))
        self.logView.appendPlainText(f"Adapting to {len(cfg.points)} points of "
                                     f"{len(self.points.classes)} classes; maps go to {os.path.dirname(base)}"
                                     f"{'' if self.folderWidget.filePath() else ' (temporary: choose an output folder to keep them)'}.")
        task = GeoMLTask("GeoML: few-shot adapt and preview", preview, lambda t: self._preview_done(t, full))
        return self._start(task)

    def _start(self, task: GeoMLTask) -> GeoMLTask:
        """Run one step (``task``, whose end goes to :meth:`_preview_done` or :meth:`_full_done`)."""
        self.progressBar.setValue(0)
        self.cancelButton.setEnabled(True)
        # progress text goes on the bar; the job's log lines go to the log when it ends
        return self.runner.adopt(task, on_progress=lambda p: self.progressBar.setValue(int(p)),
                                 on_message=lambda m: self.progressBar.setFormat(f"%p%  {m}"),
                                 on_cancelled=self._cancelled)

    def _step_ends(self) -> dict:
        """The callbacks for the end of a step that did not succeed (:meth:`TaskController.finish`)."""
        return dict(on_failed=self._failed, on_cancelled=self._cancelled, on_error=self._unexpected)

    def _preview_done(self, task: GeoMLTask, full) -> None:
        self.runner.finish(task, on_finished=lambda t: self._show_preview(t, full), **self._step_ends())

    def _full_done(self, task: GeoMLTask) -> None:
        self.runner.finish(task, on_finished=self._show_full, **self._step_ends())

    def _step_ended(self, task: GeoMLTask) -> None:
        self.progressBar.setFormat("%p%")
        for line in task.log_lines:
            self.logView.appendPlainText(line)

    def _stopped(self) -> None:
        """No step runs any more, and none will follow."""
        self.cancelButton.setEnabled(False)
        # the coarse preview is no result: without the full map it must not stay behind looking like one
        self._remove_layers(self.preview_layers)
        self.preview_layers = []

    def _failed(self, task: GeoMLTask) -> None:
        self._step_ended(task)
        self._stopped()
        self.show_error(task.error_text(), error_level(task.error))

    def _cancelled(self, task: GeoMLTask) -> None:
        """The step stopped at Cancel, or was let go of a second later (:func:`request_cancel`): then it is still
        running and its log is not complete, so it is left out."""
        if task.detached:
            self.progressBar.setFormat("%p%")
        else:
            self._step_ended(task)
        self._stopped()
        self.progressBar.setValue(0)
        self.logView.appendPlainText("Cancelled; nothing was written.")

    def _unexpected(self, exc: Exception) -> None:
        self.task = None  # the step that failed ran on the main thread: nothing runs in the background
        self.cancelButton.setEnabled(False)
        self.show_error(unexpected_failure("Few-shot mapping", exc))

    def _show_preview(self, task: GeoMLTask, full) -> None:
        self._step_ended(task)
        adapted, pred = task.result
        self.adapted = adapted
        self.logView.appendPlainText(f"Adapted ({adapted.method}); support accuracy {adapted.support_accuracy:.0%}")
        self._remove_layers(self.preview_layers)
        if pred is not None:
            lyr = add_raster_layer(pred.output_path, "Few-shot preview")
            self.preview_layers = [lyr.id()]
            self._exclude_own_layers()
            self.logView.appendPlainText(f"Preview of the visible area in {pred.seconds:.1f} s; classifying the raster…")
        nxt = GeoMLTask("GeoML: few-shot classification", full(adapted), self._full_done)
        self._start(nxt)

    def _show_full(self, task: GeoMLTask) -> None:
        self._step_ended(task)
        self.cancelButton.setEnabled(False)
        self.progressBar.setValue(100)
        res = task.result
        self._remove_layers(self.preview_layers + self.result_layers)
        self.preview_layers = []
        conf = QgsRasterLayer(res.confidence_path, "Few-shot low confidence", "gdal")
        style_low_confidence(conf, self.thresholdSpin.value())
        mark_output(conf)
        QgsProject.instance().addMapLayer(conf)
        classes = add_raster_layer(res.output_path, "Few-shot classes")
        self.result_layers = [conf.id(), classes.id()]
        self._exclude_own_layers()
        # the low-confidence overlay sits above the classes
        root = QgsProject.instance().layerTreeRoot()
        node = root.findLayer(conf.id())
        if node is not None:
            root.insertChildNode(0, node.clone())
            node.parent().removeChildNode(node)
        counts = ", ".join(f"{k} {v}" for k, v in res.class_counts.items())
        self.logView.appendPlainText(f"Classified {res.width}×{res.height} px in {res.seconds:.1f} s: {counts}")
        self.push_message(f"Few-shot map added ({res.width}×{res.height} px).", Qgis.MessageLevel.Success)

    def _exclude_own_layers(self) -> None:
        """The panel's outputs are not offered as the raster to map (e.g. when the input layer is removed,
        the chooser would otherwise fall back to the 1-band low-confidence overlay)."""
        project = QgsProject.instance()
        own = [project.mapLayer(lid) for lid in self.preview_layers + self.result_layers]
        self.rasterLayer.setExceptedLayerList([lyr for lyr in own if lyr is not None])

    def _remove_layers(self, ids: list) -> None:
        for lid in ids:
            if QgsProject.instance().mapLayer(lid) is not None:
                QgsProject.instance().removeMapLayer(lid)

    def cancel(self) -> None:
        """Ask the job to stop; one still running after about a second (a long block of the classification) is
        let go: the panel says it was cancelled and is usable again, the job ends in the background unheard."""
        request_cancel(self)

    # -- messages / lifecycle -------------------------------------------------
    def push_message(self, text: str, level=Qgis.MessageLevel.Info) -> None:
        push_to_bar(self.plugin, text, level, 8)

    def show_error(self, text: str, level=Qgis.MessageLevel.Critical) -> None:
        """``text`` in the log and the message bar; ``level`` Warning for a user's slip (:func:`error_level`)."""
        self.logView.appendPlainText(text)
        push_to_bar(self.plugin, text, level, 0)

    def cleanup(self) -> None:
        """Cancel work and remove canvas items (on close / plugin unload)."""
        self.runner.cancel()
        self.set_picking(False)
        self.set_drawing_extent(False)
        self.markers.clear()
        if self.extent_band is not None:
            self.canvas.scene().removeItem(self.extent_band)
            self.extent_band = None


def _disconnect(signal, slot) -> None:
    try:
        signal.disconnect(slot)
    except (TypeError, RuntimeError):
        pass


def open_panel(plugin):
    """Show the panel docked on the right (one per session)."""
    from qgis.gui import QgsDockWidget

    dock = plugin.dialogs.get("fewshot")
    if dock is None:
        dock = QgsDockWidget("GeoML — Few-shot mapping", plugin.iface.mainWindow())
        dock.setObjectName("GeoMLFewShotDock")
        panel = FewShotPanel(plugin, plugin.iface.mapCanvas(), dock)
        # in a short dock the panel scrolls instead of being squeezed or cut off
        scroll = QScrollArea(dock)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(panel)
        dock.setWidget(scroll)
        dock.panel = panel
        dock.closed.connect(panel.cleanup)
        plugin.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        plugin.dialogs["fewshot"] = dock
    dock.show()
    dock.raise_()
    return dock


def open_metatrain_dialog(plugin):
    """The Processing dialog of geoml:metatrain (runs in the background with progress and Cancel), with the last
    used (or plausible) layers, the MAML settings offered only for MAML, and Copy as command line."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById("geoml:metatrain")
    parent = plugin.iface.mainWindow() if plugin is not None and plugin.iface is not None else None
    dlg = AlgorithmDialog(alg, False, parent)
    dlg.setParameters(metatrain_defaults())
    link_maml_settings(dlg)
    add_metatrain_copy_button(dlg)
    dlg.show()
    if plugin is not None and hasattr(plugin, "dialogs"):
        plugin.dialogs["metatrain"] = dlg  # kept alive while shown
    return dlg


def add_metatrain_copy_button(dlg):
    """"Copy as command line" in the meta-train dialog's button row: :func:`copy_metatrain_command`."""
    import weakref

    from qgis.PyQt.QtWidgets import QDialogButtonBox, QPushButton

    button = QPushButton("Copy as command line", dlg)
    button.setObjectName("copyCommandButton")
    button.setAutoDefault(False)
    button.setToolTip("Copy as command line: the `geoml metatrain` command that runs this job with these settings, "
                      "for a server or cluster without QGIS (README: Command line)")
    dlg.buttonBox().addButton(button, QDialogButtonBox.ButtonRole.ActionRole)
    ref = weakref.ref(dlg)  # the button (the dialog's child) must not keep the dialog's wrapper alive
    button.clicked.connect(lambda: copy_metatrain_command(ref()) if ref() is not None else None)
    return button


def copy_metatrain_command(dlg) -> str:
    """Put the ``geoml metatrain …`` command of the dialog's parameters on the clipboard (built as Run builds the
    job: the algorithm's ``build_config``); '' with the reason in the dialog's message bar when they are not
    complete."""
    from processing.gui.AlgorithmDialogBase import AlgorithmDialogBase
    from processing.tools import dataobjects
    from qgis.core import QgsProcessingException, QgsProcessingFeedback
    from qgis.PyQt.QtWidgets import QApplication

    from ..cli.command_line import command_line

    try:
        params = dlg.createProcessingParameters()
        if params.get("OUTPUT_MODEL") in (None, "", "TEMPORARY_OUTPUT"):
            raise InputError("Choose the meta-model file to write: a temporary file is no use to a command line.")
        cfg = dlg.algorithm().build_config(params, dataobjects.createContext(), QgsProcessingFeedback())
    except AlgorithmDialogBase.InvalidParameterValue as exc:
        dlg.messageBar().pushWarning("GeoML", f"Wrong or missing value: {exc.parameter.description()}.")
        return ""
    except (GeoMLError, QgsProcessingException) as exc:
        dlg.messageBar().pushWarning("GeoML", str(exc))
        return ""
    text = command_line("metatrain", cfg)
    QApplication.clipboard().setText(text)
    dlg.messageBar().pushSuccess("GeoML", "Copied to the clipboard: " + text)
    return text


MAML_ONLY = ("INNER_STEPS", "INNER_LR")


def link_maml_settings(dlg) -> None:
    """Enable MAML's inner steps and learning rate only when the Algorithm is a MAML variant (prototypical networks
    use neither)."""
    from ..core.fewshot.choices import ALGORITHM_CHOICES

    panel = dlg.mainWidget()
    wrappers = getattr(panel, "wrappers", {}) or {}
    algo = wrappers.get("ALGORITHM")
    if algo is None:
        return

    def update(*_args):
        try:
            index = int(algo.parameterValue() or 0)
        except (TypeError, ValueError):
            index = 0
        is_maml = ALGORITHM_CHOICES[index][0] in ("maml", "fomaml") if 0 <= index < len(ALGORITHM_CHOICES) else True
        for name in MAML_ONLY:
            w = wrappers.get(name)
            if w is None:
                continue
            for widget in (w.wrappedWidget(), w.wrappedLabel()):
                if widget is not None:
                    widget.setEnabled(is_maml)
                    widget.setToolTip("" if is_maml else "Only for MAML (prototypical networks do not use it).")

    algo.widgetValueHasChanged.connect(update)
    update()


def metatrain_defaults() -> dict:
    """Meta-train's first values: the last used (else plausible) imagery and point/polygon labels, not the
    active layer (often a confidence raster GeoML wrote)."""
    params = {}
    raster = pick_input_raster("input")
    if raster is not None:
        params["INPUT"] = raster
    labels = pick_labels("labels", input_layer=raster, allow_raster=False)
    if labels is not None:
        from .finetune_dialog import default_label_field

        params["LABELS"] = labels
        field = default_label_field(labels.fields())  # a class field, not fid
        if field:
            params["LABEL_FIELD"] = field
    return params

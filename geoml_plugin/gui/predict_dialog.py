"""'Apply model to raster' dialog: runs core.predict in the background."""
from __future__ import annotations

import html
import os

from qgis.core import Qgis, QgsMapLayerProxyModel
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from ..core.errors import GeoMLError, InputError
from ..core.outputs import default_output, output_name, sidecar_name
from ..core.predict import PredictConfig
from ..file_filters import APPLY_MODEL_FILTER, ONNX_MODEL
from ..styling import add_raster_layer
from .forms import load_ui
from .job_dialog import JobDialogBase
from .layer_defaults import ComboDefaults, pick_input_raster, remember
from .single_instance import show_single
from .spec_widgets import apply_spec, spec_default

FORM = load_ui("predict_dialog.ui")

HELP = """<h3>Apply model to raster</h3>
<p>Runs a GeoML model over a raster layer, tile by tile, in the background.</p>
<ul>
<li><b>Input raster</b>: needs the bands the model was trained on (from a raster with more bands,
the model's own bands are used).</li>
<li><b>Model file</b>: a GeoML model (.safetensors), or an ONNX model (.onnx: a GeoML export or a Deepness
Segmentor/Regressor, run with onnxruntime, no PyTorch needed: <i>Install dependencies…</i> ▸ <i>Apply-only</i>
installs onnxruntime alone). <b>Export…</b> writes the chosen GeoML model as
ONNX (as <code>geoml:export</code>). A GeoML model is one made by Fine-tune, Few-shot mapping, Meta-train
(prototypical networks) or Train GAN with a target raster (translation).
Pickled PyTorch files are refused: they can run code.</li>
<li><b>Output raster</b>: a classified GeoTIFF styled with the class colours and names
(or a continuous raster for regression and translation models); <code>.tif</code> is added to a name
without it. Left empty, it goes to a new temporary folder (<code>geoml_…</code>), which the system may
clear. When the output or its confidence raster exists, <b>Run</b> asks once, naming each, before
replacing them (a regression or translation model writes no confidence raster, so an existing one is
neither asked about nor replaced; an output just chosen with the file browser, which asked already, is
not asked about again); the input raster and the model file are never overwritten.</li>
<li><b>Only the area shown in the map view</b>: a quick look at one area before
running the whole raster.</li>
<li><b>Also write a confidence raster</b>: <code>&lt;output&gt;_confidence.tif</code>, the winning
class's probability (0–1): low values show where more training labels would help. Classifiers only.</li>
<li><b>Device</b>: <i>auto</i> uses a CUDA GPU when available.</li>
<li><b>Stride</b> (Advanced, patch models): pixels between classified windows; 0 = automatic, an
eighth of the patch. Each pixel takes the classes of the windows around it, weighted toward the
nearer ones, so the map does not depend on where the windows fall.</li>
<li><b>Overlap</b> (Advanced, dense models): pixels cropped at each side of a tile, at least;
<i>Automatic</i> (the lowest value): half a patch (for patches over 64 px: 32 px, or a quarter patch
if more), on tiles of 8 patches up to 512 px (2 patches for patches over 256 px) placed on the network's pooling grid. Larger is closer to one
pass over the whole raster and slower; it must stay under half the tile.</li>
<li><b>Test-time views</b> (Advanced): average the prediction over 2, 4 or 8 flips/rotations of
each window, as many times slower. It helps models trained without flips/rotations most; a
model fine-tuned with GeoML's default augmentation gains little (under a point of accuracy on the EuroSAT benchmark).</li>
<li><b>Minimum region</b> (Advanced, class maps): regions of fewer pixels take the class of their
largest neighbour, as QGIS's <i>Sieve</i> tool does, before the map is written; <i>Keep all</i> (0)
leaves every pixel's class. The confidence raster keeps the network's values. On the Dubai aerial
benchmark 256 px raised pixel accuracy by about a point; choose it from the smallest object you need
to map (256 px is 2.6 ha at 10 m).</li>
</ul>
<p>The same tool is in the Processing toolbox as <i>GeoML › Apply model to raster</i>
(batch mode, modeler, <code>qgis_process run geoml:predict</code>). The copy button beside <i>Run</i>
(<b>Copy as command line</b>) copies the <code>geoml predict …</code> command of these settings, which runs the
same job on a server or cluster without QGIS (also on several GPUs with <code>torchrun</code>).</p>
<p>Closing the dialog while it runs asks whether to keep the job running in the background (the
result is added to the map when it ends), cancel it, or stay.</p>"""


class PredictDialog(JobDialogBase, FORM):
    SETTINGS_KEY = "predict"
    COMMAND = "predict"
    # widget → PredictConfig field: range, default and tooltip from the field's specification
    SPEC_WIDGETS = {"batchSpin": "batch_size", "strideSpin": "stride", "overlapSpin": "overlap",
                    "viewsCombo": "views", "minRegionSpin": "min_region"}
    HELP_HTML = HELP

    def __init__(self, plugin=None, parent=None):
        super().__init__(plugin, parent)
        self.inputLayer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.modelFile.setFilter(APPLY_MODEL_FILTER)
        self.modelFile.fileChanged.connect(self.describe_model)
        self.exportButton = QPushButton("Export…", self)
        self.exportButton.setObjectName("exportButton")
        self.exportButton.setToolTip("Write the model as ONNX, for Deepness, GeoML without PyTorch or any ONNX "
                                     "runtime (geoml:export)")
        self.exportButton.clicked.connect(lambda: self.export_model())
        row = QWidget(self)  # the model file widget and the button side by side in the form's field
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        self.form.replaceWidget(self.modelFile, row)
        box.addWidget(self.modelFile, 1)
        box.addWidget(self.exportButton)
        self.outputFile.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.outputFile.setFilter("GeoTIFF (*.tif *.tiff)")
        self.watch_browse(self.outputFile)
        self.modelFile.setFilePath(self.settings_value("model", ""))
        self.deviceCombo.setCurrentText(self.settings_value("device", "auto"))
        for widget, name in self.SPEC_WIDGETS.items():
            apply_spec(getattr(self, widget), PredictConfig, name)
        self.batchSpin.setValue(self.settings_value("batch", spec_default(PredictConfig, "batch_size"), int))
        self.strideSpin.setValue(spec_default(PredictConfig, "stride"))
        self.overlapSpin.setValue(spec_default(PredictConfig, "overlap"))
        self.viewsCombo.setCurrentText(str(self.settings_value("views", spec_default(PredictConfig, "views"), int)))
        self.minRegionSpin.setValue(self.settings_value("min_region", spec_default(PredictConfig, "min_region"), int))
        self._input_defaults = ComboDefaults(self.inputLayer, lambda: pick_input_raster("input"), self)

    def needs_torch(self) -> bool:
        from ..core.onnx_runtime import is_onnx

        return not is_onnx(self.modelFile.filePath())

    def export_model(self, output: str | None = None):
        """Export the chosen GeoML model to ONNX in the background (asks for the file when ``output`` is None)."""
        from ..core.onnx_export import export_onnx
        from ..core.onnx_runtime import is_onnx

        model = self.modelFile.filePath()
        if self.task is not None:
            return None
        if not model or is_onnx(model):
            self.show_error("Choose a GeoML model file (.safetensors) to export.")
            return None
        if output is None:
            output, _ = QFileDialog.getSaveFileName(self, "Export model to ONNX", os.path.splitext(model)[0] + ".onnx",
                                                    ONNX_MODEL)
            if not output:
                return None
        output = output_name(output, "onnx")
        from ..deps import detect

        problem = detect.quick_problem()
        if problem:
            self.show_dependency_problem(problem)
            return None
        return self.start_job(f"GeoML: export {os.path.basename(model)} to ONNX",
                              lambda fb: export_onnx(model, output, fb))

    def describe_model(self, path: str) -> None:
        from ..core.modelfile import read_metadata
        from ..core.onnx_runtime import is_onnx

        if not path:
            self.modelInfo.setText("Choose a GeoML model (.safetensors) or an ONNX model (.onnx).")
            return
        self.exportButton.setEnabled(not is_onnx(path))
        try:
            if is_onnx(path):
                from ..core.onnx_runtime import read_onnx

                info = read_onnx(path)
                meta = info.meta
                kind = "GeoML export" if info.kind == "geoml" else "Deepness model"
                text = html.escape(f"ONNX {kind} (onnxruntime, no PyTorch needed): {meta.task}, "
                                   f"{meta.in_bands} input band(s)", quote=False)
                if meta.classes:
                    text += "<br>Classes: " + html.escape(", ".join(c.name for c in meta.classes), quote=False)
                self.modelInfo.setText(text)
                return
            meta = read_metadata(path)
            text = html.escape(meta.describe(), quote=False)
            if meta.classes:
                text += "<br>Classes: " + html.escape(", ".join(c.name for c in meta.classes), quote=False)
            self.modelInfo.setText(text)
        except GeoMLError as exc:
            self.modelInfo.setText(f"<span style='color:#b00'>{html.escape(str(exc), quote=False)}</span>")  # names from the file

    def build_config(self):
        from ..core.predict import PredictConfig

        layer = self.inputLayer.currentLayer()
        if layer is None:
            raise InputError("Choose an input raster layer.")
        model = self.modelFile.filePath()
        if not model:
            raise InputError("Choose a GeoML model file.")
        out = self.outputFile.filePath()
        out = output_name(out, "raster") if out else default_output(f"{layer.name()}_prediction", "raster")
        conf = sidecar_name(out, "confidence") if self.confidenceCheck.isChecked() else None
        cfg = PredictConfig(
            input_path=layer.source(), model_path=model, output_path=out, confidence_path=conf,
            device=self.deviceCombo.currentText(), batch_size=self.batchSpin.value(),
            stride=self.strideSpin.value() or None, window=self.view_window(layer),
            views=int(self.viewsCombo.currentText()),
            overlap=self.overlapSpin.value() if self.overlapSpin.value() >= 0 else None,
            min_region=self.minRegionSpin.value(),
        )
        return cfg

    def make_job(self):
        from ..core.predict import run_predict

        cfg = self.build_config()
        layer, model, out, conf = self.inputLayer.currentLayer(), cfg.model_path, cfg.output_path, cfg.confidence_path
        if not self.confirm_replace([out, conf if self._writes_confidence(model) else None], self.outputFile):
            return None
        self.set_settings_value("model", model)
        remember("input", layer)
        self.set_settings_value("device", cfg.device)
        self.set_settings_value("batch", cfg.batch_size)
        self.set_settings_value("views", cfg.views)
        self.set_settings_value("min_region", cfg.min_region)
        return f"GeoML: apply {os.path.basename(model)} to {layer.name()}", lambda fb: run_predict(cfg, fb)

    @staticmethod
    def _writes_confidence(model: str) -> bool:
        """Whether ``model`` gets a confidence raster: classifiers only (a regression model writes none, so an
        existing ``_confidence.tif`` beside the output is not replaced and not asked about)."""
        from ..core.modelfile import read_metadata

        try:
            return read_metadata(model).is_classifier
        except GeoMLError:
            return True  # the job itself reports the unreadable model

    def view_window(self, layer):
        """Pixel window of the map view over ``layer``, or None for the whole raster."""
        if not self.extentCheck.isChecked() or self.plugin is None or self.plugin.iface is None:
            return None
        from .map_window import canvas_window

        return canvas_window(self.plugin.iface.mapCanvas(), layer)

    def on_success(self, result) -> None:
        from ..core.onnx_export import ExportResult

        if isinstance(result, ExportResult):
            self.logView.appendPlainText(f"Exported → {result.output_path} ({result.model_type}; onnxruntime "
                                         f"equals PyTorch within {result.max_difference:.1e})")
            self.push_message(f"Exported {os.path.basename(result.output_path)}.", Qgis.MessageLevel.Success)
            return
        layer = add_prediction_layers(result)
        self.logView.appendPlainText(f"Done in {result.seconds:.1f} s → {result.output_path}")
        self.push_message(f"Added '{layer.name()}' ({result.width}×{result.height} px).", Qgis.MessageLevel.Success)


def add_prediction_layers(result):
    """Add a prediction's raster (and its confidence raster) to the project, styled; returns the first.

    The confidence raster goes below the map and hidden (tick it to see it): the first thing shown is the
    classes, not a viridis ramp over them."""
    from qgis.core import QgsProject

    conf = add_raster_layer(result.confidence_path) if result.confidence_path else None
    layer = add_raster_layer(result.output_path)
    if conf is not None:
        root = QgsProject.instance().layerTreeRoot()
        node, above = root.findLayer(conf.id()), root.findLayer(layer.id())
        if node is not None and above is not None:
            parent = above.parent()
            index = parent.children().index(above)
            clone = node.clone()
            clone.setItemVisibilityChecked(False)
            parent.insertChildNode(index + 1, clone)
            node.parent().removeChildNode(node)
    return layer


def open_dialog(plugin):
    parent = plugin.iface.mainWindow() if plugin.iface is not None else None
    return show_single(plugin, "predict", lambda: PredictDialog(plugin, parent))

"""'Fine-tune a model' dialog: trains in the background, then classifies the raster.

Runs core.finetune.job as a background task with live progress (epoch, loss,
validation accuracy) and Cancel. When training succeeds it applies the new
model to the raster (the whole raster or the current map view) with
core.predict, as a second background task, and adds the styled result.
"""
from __future__ import annotations

import os
import re
import time

from qgis.core import (
    Qgis,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, QTimer

from ..core.errors import GeoMLError, InputError
from ..core.finetune.job import (
    AUTO_PATCH,
    AUTO_PATCH_AREAS,
    AUTO_SEGMENTATION_PATCH,
    TASKS,
    FinetuneConfig,
    map_paths_for,
    output_paths,
    report_path_for,
)
from ..core.outputs import default_output, output_name
from ..core.remaining import duration_text
from ..core.spec import to_core
from ..file_filters import GEOML_MODEL, NEW_GEOML_MODEL
from .forms import load_ui
from .job_dialog import JobDialogBase
from .layer_defaults import ComboDefaults, pick_input_raster, pick_labels, remember
from .single_instance import show_single
from .spec_widgets import apply_spec, spec_default

FORM = load_ui("finetune_dialog.ui")

WEIGHT_ITEMS = [("none", "None — train from scratch"),
                ("imagenet", "ImageNet (torchvision, from the local cache)"),
                ("file", "An earlier GeoML model (transfer)…")]
EPOCH_PROGRESS = re.compile(r"^epoch \d+/\d+ ·")
OTHER_PROGRESS = re.compile(r"^(block \d+/|tile \d+/|reading |saving$|done$)")
EXTENT_ITEMS = [("raster", "the whole raster"), ("view", "the current map view")]

HELP = """<h3>Fine-tune a model</h3>
<p>Trains a CNN on your raster and labels in the background, then classifies the raster with it
(patch classifiers: windows every 1/8 of the patch, each pixel weighted between the windows around it, as
<i>Apply model to raster</i> does by default).</p>
<ul>
<li><b>Input raster</b> and <b>bands</b>: any band count (an alpha band that holds transparency starts unchecked: it is a nodata mask, not image data, and its 0 pixels still mark nodata; a band GDAL merely labels alpha, e.g. near-infrared, stays checked); per-band statistics are saved with the model.</li>
<li><b>Labels</b>: points (a patch around each), polygons (patches inside them; masks for
segmentation, where pixels outside every polygon are ignored, not background), or a label raster. Labels outside the raster or on nodata are skipped and counted.
A label raster of continuous values (fractions, or more than 255 different values: a DTM) is refused for classes; use
<i>regression</i> for it. Preselected: the labels used last, else a point or polygon layer (never the input raster).</li>
<li><b>Label field</b>: the class (name or number), or a number for regression. Preselected: a field
named like a class (class, label, landcover, type…) or, for regression, a numeric one; never an id
when another field will do. Your last choice is remembered.</li>
<li><b>Task</b>: <i>classification</i> gives one class per patch (a dense map at prediction);
<i>segmentation</i> a class per pixel (U-Net); <i>regression</i> a continuous value.</li>
<li><b>Backbone</b>: the small residual CNN trains in minutes on a CPU; the ResNets are
stronger with ImageNet weights or on a GPU.</li>
<li><b>Starting weights</b>: for a ResNet, ImageNet or a remote-sensing backbone from GeoML's
catalogue (Sentinel-2 SSL4EO-S12 MoCo/DINO and SeCo, Landsat SSL4EO-L), read from the torch cache. A
catalogue entry that is not cached is downloaded only after you agree (Run asks, naming its size, source and
licence): in the background, with progress and Cancel, through QGIS's proxy, checked against its published
checksum before it is kept. <b>Weights…</b> lists what is cached, where and how big, and downloads, verifies or
removes files. <b>Weight bands</b>: which band of the weights each of your bands is (e.g.
<code>B04,B03,B02,B08</code>, <code>-</code> for one they do not know; <b>Map bands…</b> sets it in a table);
empty reads the band descriptions (B4, B04, red…). Named bands start from their pretrained kernels and get the scaling the weights expect (e.g.
Sentinel-2 ÷ 10000, saved in the model and applied when it is used); other bands get the mean kernel. An
earlier GeoML model with the same backbone and bands transfers its backbone.</li>
<li><b>Patch size</b>: <i>automatic</i> is {auto} px, and {seg} px for segmentation and pixel regression of a
raster at least {side} px on its shorter side (more of the scene around each pixel: better maps of unseen images,
up to 2.5× the training time of a small raster; {auto} px when a class would then lie in a single validation
area, as the log says).</li>
<li><b>Epochs / learning rate</b>: <i>automatic</i> suits most cases.</li>
<li><b>Model file</b>: where the model (.safetensors) is saved, with its report and maps beside it
(<code>x_report.html</code> and <code>x_report.json</code> with the report, <code>x_classes.tif</code> and
<code>x_confidence.tif</code>, or <code>x_values.tif</code> for regression, when the raster is classified,
for <code>x.safetensors</code>). Left
empty, they go to a new temporary folder (<code>geoml_…</code> in the system's temp folder; the log shows
the path), which the system may clear: choose a file to keep the model. When any of the files this run
writes exists, <b>Run</b> asks once, naming each of them, before replacing them (No returns to the form
and changes nothing); a model file just chosen with the file browser, which asked already, is not asked
about again, but an existing report or map beside it is. <b>Classify</b> asks the same about existing
maps.</li>
<li><b>Advanced</b>: validation fraction (kept apart per class for the metrics), augmentation
(random shifts, flips and quarter turns; for classes also a mild contrast/brightness jitter),
freezing the backbone (only the head trains; pretrained weights and their normalisation statistics stay
as loaded: for very few labels), seed.</li>
</ul>
<p>The same tool is in the Processing toolbox as <i>GeoML › Fine-tune a model on your labels</i>
(batch, modeler, <code>qgis_process run geoml:finetune</code>). The copy button beside <i>Run</i>
(<b>Copy as command line</b>) copies the <code>geoml finetune …</code> command of these settings, which trains
on a server or cluster without QGIS (also on several GPUs with <code>torchrun</code>).</p>
<p>Closing the dialog while it runs asks whether to keep the job running in the background (the
result is added to the map when it ends), cancel it, or stay. Cancelling the classification after
training keeps the model file. The classification shows its own progress and an estimate of the time left
in the status line; <b>Classify now</b> applies the last trained model (or the saved model in <i>Model file</i>)
and is off while a job runs. The form is read-only while a job runs.</p>""".format(
    auto=AUTO_PATCH, seg=AUTO_SEGMENTATION_PATCH, side=AUTO_PATCH_AREAS * AUTO_SEGMENTATION_PATCH)


def band_descriptions(layer: QgsRasterLayer, bands: list) -> list:
    """GDAL's descriptions of ``bands`` (what the core matches against the weights' bands), '' where none."""
    from ..core.errors import GeoMLError
    from ..core.raster.io import open_raster

    try:
        ds = open_raster(layer.source())  # kept referenced while its bands are read
        return [ds.GetRasterBand(b).GetDescription() or "" for b in bands]
    except (GeoMLError, AttributeError, RuntimeError):
        return [""] * len(bands)


class SavedModel:
    """A model file on disk standing in for a training result (Classify now without a training in this session)."""

    def __init__(self, path: str, meta):
        self.model_path, self.meta, self.task = path, meta, meta.task

    def summary(self) -> str:
        return f"saved model {os.path.basename(self.model_path)}"


def _trained(result) -> str:
    """'Trained: overall accuracy …' after a training; 'Model: saved model x.safetensors' for a file."""
    return f"Model: {result.summary()}" if isinstance(result, SavedModel) else f"Trained: {result.summary()}"


def map_progress_text(what: str, fraction: float, elapsed: float) -> str:
    """The status line of the map step: 'Classifying x: 9 %, about 12 min left'. The estimate comes from the
    rate so far; it shows once there is one to make (after 1 % and 2 s)."""
    text = f"{what}: {fraction * 100:.0f} %"
    if 0.01 <= fraction < 1.0 and elapsed >= 2.0:
        text += f", about {duration_text(elapsed * (1.0 - fraction) / fraction)} left"
    return text


def default_bands(layer: QgsRasterLayer) -> list:
    """The bands a training job uses when given none: all but alpha bands (core ``RasterReader(skip_alpha)``)."""
    from ..core.errors import GeoMLError
    from ..core.raster.io import alpha_bands, open_raster

    every = list(range(1, layer.bandCount() + 1))
    try:
        alpha = alpha_bands(open_raster(layer.source()))
    except GeoMLError:  # a source GDAL cannot open: the job itself will say so
        return every
    bands = [b for b in every if b not in alpha]
    return bands if alpha and bands else every

CLASS_FIELD_NAMES = ("class", "class_name", "label", "landcover", "type", "category", "cover", "name")
ID_FIELD_NAMES = ("fid", "id", "ogc_fid", "objectid", "gid", "oid", "uid", "uuid", "pk")


def _is_id(name: str) -> bool:
    n = name.lower()
    return n in ID_FIELD_NAMES or n.endswith("_id") or n.startswith("id_")


def default_label_field(fields, task: str = "classification") -> str:
    """The label field to preselect when none was remembered (the first field is often ``fid``: one class
    per feature): for regression the first numeric field that is not an id; otherwise a field named like a
    class (:data:`CLASS_FIELD_NAMES`, case-insensitive, exact before prefix), else the first text field that
    is not an id, else the first field other than ``fid``. ``fields``: a layer's QgsFields."""
    fields = list(fields)
    if not fields:
        return ""
    if task == "regression":
        numeric = [f for f in fields if f.isNumeric() and not _is_id(f.name())]
        if numeric:
            return numeric[0].name()
    lower = [f.name().lower() for f in fields]
    for exact in (True, False):
        for want in CLASS_FIELD_NAMES:
            for f, n in zip(fields, lower):
                if n == want if exact else n.startswith(want):
                    return f.name()
    text = [f for f in fields if not f.isNumeric() and not _is_id(f.name())]
    if text:
        return text[0].name()
    return next((f.name() for f in fields if f.name().lower() != "fid"), fields[0].name())


class FinetuneDialog(JobDialogBase, FORM):
    SETTINGS_KEY = "finetune"
    COMMAND = "finetune"
    HELP_HTML = HELP
    # widget → FinetuneConfig field: range, items, default and tooltip from the field's specification
    SPEC_WIDGETS = {"taskCombo": "task", "backboneCombo": "backbone", "patchSpin": "patch_size",
                    "epochsSpin": "epochs", "batchSpin": "batch_size", "lrSpin": "learning_rate",
                    "valSpin": "validation_fraction", "seedSpin": "seed", "maxSamplesSpin": "max_raster_samples",
                    "augmentCheck": "augment", "freezeCheck": "freeze_backbone"}

    def __init__(self, plugin=None, parent=None):
        super().__init__(plugin, parent)
        self.last_result = None
        self._classify_task = None
        self.inputLayer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.labelsLayer.setFilters(QgsMapLayerProxyModel.Filter.PointLayer | QgsMapLayerProxyModel.Filter.PolygonLayer
                                    | QgsMapLayerProxyModel.Filter.RasterLayer)
        for widget, name in self.SPEC_WIDGETS.items():  # task and backbone items, ranges, tooltips
            apply_spec(getattr(self, widget), FinetuneConfig, name)
        for key, text in WEIGHT_ITEMS:
            self.weightsCombo.addItem(text, key)
        for key, text in EXTENT_ITEMS:
            self.extentCombo.addItem(text, key)
        self.weightsFile.setFilter(GEOML_MODEL)
        self.outputFile.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.outputFile.setFilter(NEW_GEOML_MODEL)
        self.watch_browse(self.outputFile)
        self.inputLayer.layerChanged.connect(self.fill_bands)
        self.labelsLayer.layerChanged.connect(self.labels_changed)
        self.weightsCombo.currentIndexChanged.connect(self.weights_changed)
        self.taskCombo.currentIndexChanged.connect(self.task_changed)
        self.labelField.activated.connect(self.field_chosen)
        self._field_picked = False
        self._maps_asked = False  # the last Run asked about the maps it then writes
        self.classifyButton.clicked.connect(self.classify_clicked)
        self._add_pretrained_row()
        self.outputFile.fileChanged.connect(lambda *_: self.update_classify_button())
        self._map_timer = QTimer(self)
        self._map_timer.setInterval(1000)
        self._map_timer.timeout.connect(self._tick_map_status)
        self.restore_settings()
        # the last used layers, else imagery and point/polygon labels; never GeoML's outputs or the input itself
        self.labelsLayer.setAllowEmptyLayer(True)
        self._input_defaults = ComboDefaults(self.inputLayer, lambda: pick_input_raster("input"), self)
        self._labels_defaults = ComboDefaults(
            self.labelsLayer, lambda: pick_labels("labels", input_layer=self.inputLayer.currentLayer()), self)
        self.fill_bands(self.inputLayer.currentLayer())
        self.labels_changed(self.labelsLayer.currentLayer())
        self.weights_changed()
        self.update_classify_button()

    # form ----------------------------------------------------------------
    def fill_bands(self, layer) -> None:
        """All bands checked but an alpha band (the core's default: a mask, not image data)."""
        self.bandsCombo.clear()
        if isinstance(layer, QgsRasterLayer):
            default = default_bands(layer)
            for b in range(1, layer.bandCount() + 1):
                state = Qt.CheckState.Checked if b in default else Qt.CheckState.Unchecked
                self.bandsCombo.addItemWithCheckState(layer.bandName(b), state, b)

    def labels_changed(self, layer) -> None:
        is_vector = layer is not None and layer.type() == QgsMapLayer.LayerType.VectorLayer
        self.labelField.setLayer(layer if is_vector else None)
        self.labelField.setEnabled(is_vector)
        if is_vector:
            remembered = self.settings_value("field", "")
            if remembered and layer.fields().indexOf(remembered) >= 0:
                self.labelField.setField(remembered)
                self._field_picked = False
            else:
                self.labelField.setField(default_label_field(layer.fields(), self.taskCombo.currentData()))
                self._field_picked = True  # re-picked when the task changes (a numeric field for regression)
            self.labelsInfo.setText(f"{layer.featureCount()} features")
        elif layer is not None:
            self.labelsInfo.setText("Label raster: classes (or values for regression) are read from band 1.")
        else:
            self.labelsInfo.setText("")

    def task_changed(self, *_args) -> None:
        layer = self.labelsLayer.currentLayer()
        if self._field_picked and layer is not None and layer.type() == QgsMapLayer.LayerType.VectorLayer:
            self.labelField.setField(default_label_field(layer.fields(), self.taskCombo.currentData()))

    def field_chosen(self, *_args) -> None:
        self._field_picked = False  # the user's choice: a change of task keeps it

    def weights_changed(self, *_args) -> None:
        self.weightsFile.setEnabled(self.weightsCombo.currentData() == "file")
        entry = self.catalogue_entry()
        if hasattr(self, "weightBandsEdit"):
            self.weightBandsEdit.setEnabled(entry is not None)
            self.mapBandsButton.setEnabled(entry is not None)
        self.weightsCombo.setToolTip(entry.describe() if entry is not None else "")
        if entry is not None:
            from ..core.finetune.pretrained import is_cached
            from .weights_dialog import size_text

            if not is_cached(entry):
                self.statusLabel.setText(f"Not on this computer yet: {entry.name}, {size_text(entry)} from "
                                         f"{entry.url.split('/')[2]}, licence {entry.licence.split(' ')[0]}. "
                                         "Run asks before downloading.")

    # pretrained weights (catalogue) ---------------------------------------------------------------
    def _add_pretrained_row(self) -> None:
        """Weight bands and the Weights… manager, below the weights (added here, not in the .ui)."""
        from qgis.PyQt.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QWidget

        row = QWidget(self)
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        self.weightBandsEdit = QLineEdit(row)
        self.weightBandsEdit.setObjectName("weightBandsEdit")
        self.weightBandsEdit.setPlaceholderText("from the band descriptions")
        self.weightBandsEdit.setToolTip("The weights' band of each band used, in order, e.g. B04,B03,B02,B08 "
                                        "('-' = a band the weights do not know); empty: from band descriptions")
        self.weightsManagerButton = QPushButton("Weights…", row)
        self.weightsManagerButton.setObjectName("weightsManagerButton")
        self.weightsManagerButton.setToolTip("Pretrained weights: what is cached, where, its size; download, "
                                             "verify, remove")
        self.mapBandsButton = QPushButton("Map bands…", row)
        self.mapBandsButton.setObjectName("mapBandsButton")
        self.mapBandsButton.setToolTip("A table: each band used → the weights' band (preselected from the band "
                                       "descriptions)")
        box.addWidget(self.weightBandsEdit, 1)
        box.addWidget(self.mapBandsButton)
        box.addWidget(self.weightsManagerButton)
        self.mapBandsButton.clicked.connect(self.map_bands)
        self.modelForm.insertRow(4, "Weight bands", row)
        self.weightsManagerButton.clicked.connect(self.open_weights_manager)
        self.backboneCombo.currentIndexChanged.connect(lambda *_: self.fill_weights(propose=True))
        self.fill_weights()

    def proposed_weights(self):
        """A cached catalogue entry for the chosen backbone to propose: one with the selected band count
        (catalogue order), else the ImageNet one; None when nothing suitable is cached (no download)."""
        from ..core.finetune.pretrained import is_cached
        from ..core.finetune.weights_catalog import entries_for

        cached = [e for e in entries_for(self.backboneCombo.currentData()) if is_cached(e)]
        n = len(self.selected_bands())
        same = [e for e in cached if len(e.bands) == n]
        imagenet = [e for e in cached if e.name.endswith("_imagenet")]
        return (same or imagenet or [None])[0]

    def fill_weights(self, *_args, propose: bool = False) -> None:
        """none, ImageNet, the catalogue entries for the chosen backbone, an earlier model; keeps the choice.
        ``propose`` (the backbone was changed): with starting weights 'none', a suitable cached entry
        (:meth:`proposed_weights`) is selected instead, and the status line says so."""
        from ..core.finetune.weights_catalog import entries_for

        keep = self.weightsCombo.currentData()
        backbone = self.backboneCombo.currentData()
        self.weightsCombo.blockSignals(True)
        self.weightsCombo.clear()
        for key, text in WEIGHT_ITEMS[:2]:
            if key != "imagenet" or backbone != "small_resnet":
                self.weightsCombo.addItem(text, key)
        for e in entries_for(backbone):
            if not e.name.endswith("_imagenet"):  # the ImageNet item above is that entry
                self.weightsCombo.addItem(f"{e.title} [{e.licence}]", e.name)
        self.weightsCombo.addItem(WEIGHT_ITEMS[2][1], WEIGHT_ITEMS[2][0])
        i = self.weightsCombo.findData(keep)
        self.weightsCombo.setCurrentIndex(max(0, i))
        if propose and keep in (None, "none"):
            entry = self.proposed_weights()
            key = None if entry is None else "imagenet" if entry.name.endswith("_imagenet") else entry.name
            if key is not None and self.weightsCombo.findData(key) >= 0:
                self.weightsCombo.setCurrentIndex(self.weightsCombo.findData(key))
                self.statusLabel.setText(f"Starting weights: {entry.title} (on this computer); choose None to "
                                         "train from scratch.")
        self.weightsCombo.blockSignals(False)
        self.weights_changed()

    def catalogue_entry(self):
        from ..core.finetune.weights_catalog import find_entry

        key = self.weightsCombo.currentData()
        if key in (None, "none", "file"):
            return None
        return find_entry(key, self.backboneCombo.currentData())

    def map_bands(self) -> None:
        """The band → weights' band table (:class:`weights_dialog.BandMapDialog`); OK fills Weight bands."""
        from ..core.finetune.pretrained import match_bands, parse_weight_bands
        from .weights_dialog import BandMapDialog

        entry, raster = self.catalogue_entry(), self.inputLayer.currentLayer()
        if entry is None or raster is None:
            return
        bands = self.selected_bands()
        names = [raster.bandName(b) for b in bands]
        descriptions = band_descriptions(raster, bands)
        try:
            match = match_bands(entry, descriptions, parse_weight_bands(self.weightBandsEdit.text()))
        except GeoMLError:
            match = match_bands(entry, descriptions)
        dlg = BandMapDialog(entry, names, match.names, self)
        if dlg.exec():
            self.weightBandsEdit.setText(dlg.value())

    def open_weights_manager(self) -> None:
        from .weights_dialog import WeightsDialog

        if getattr(self, "_weights_manager", None) is None:
            self._weights_manager = WeightsDialog(self.plugin, self)
        self._weights_manager.refresh()
        self._weights_manager.show()

    def weight_bands(self, entry):
        from ..core.finetune.pretrained import parse_weight_bands

        return parse_weight_bands(self.weightBandsEdit.text()) if entry is not None else None

    @staticmethod
    def proxies(download: bool):
        if not download:
            return None
        from ..proxy_settings import qgis_proxies

        return qgis_proxies()

    def selected_bands(self) -> list:
        return sorted(int(b) for b in self.bandsCombo.checkedItemsData())

    def weights_value(self) -> str:
        key = self.weightsCombo.currentData()
        if key == "file":
            path = self.weightsFile.filePath()
            if not path:
                raise InputError("Choose the earlier GeoML model file to start from, or other starting weights.")
            return path
        return key

    # settings ----------------------------------------------------------------
    def restore_settings(self) -> None:
        def pick(combo, value):
            i = combo.findData(value)
            if i >= 0:
                combo.setCurrentIndex(i)

        def default(name):
            return spec_default(FinetuneConfig, name)

        pick(self.taskCombo, self.settings_value("task", default("task")))
        pick(self.backboneCombo, self.settings_value("backbone", default("backbone")))
        pick(self.weightsCombo, self.settings_value("weights", default("weights")))
        pick(self.extentCombo, self.settings_value("extent", "raster"))
        self.weightsFile.setFilePath(self.settings_value("weights_file", ""))
        self.patchSpin.setValue(self.settings_value("patch", default("patch_size"), int))
        self.epochsSpin.setValue(self.settings_value("epochs", default("epochs"), int))
        self.batchSpin.setValue(self.settings_value("batch", default("batch_size"), int))
        self.lrSpin.setValue(self.settings_value("lr", default("learning_rate"), float))
        self.valSpin.setValue(self.settings_value("validation", default("validation_fraction"), float))
        self.seedSpin.setValue(self.settings_value("seed", default("seed"), int))
        self.maxSamplesSpin.setValue(self.settings_value("max_samples", default("max_raster_samples"), int))
        for key, box, default_ in (("augment", self.augmentCheck, default("augment")),
                                   ("freeze", self.freezeCheck, default("freeze_backbone")),
                                   ("report", self.reportCheck, True), ("classify", self.classifyCheck, True)):
            box.setChecked(self.settings_value(key, str(default_)) in ("true", "True", True))
        self.deviceCombo.setCurrentText(self.settings_value("device", "auto"))
        self.outputFile.setFilePath(self.settings_value("output", ""))

    def save_settings(self) -> None:
        values = {
            "task": self.taskCombo.currentData(), "backbone": self.backboneCombo.currentData(),
            "weights": self.weightsCombo.currentData(), "weights_file": self.weightsFile.filePath(),
            "extent": self.extentCombo.currentData(), "patch": self.patchSpin.value(),
            "epochs": self.epochsSpin.value(), "batch": self.batchSpin.value(), "lr": self.lrSpin.value(),
            "validation": self.valSpin.value(), "seed": self.seedSpin.value(),
            "max_samples": self.maxSamplesSpin.value(), "augment": self.augmentCheck.isChecked(),
            "freeze": self.freezeCheck.isChecked(), "report": self.reportCheck.isChecked(),
            "classify": self.classifyCheck.isChecked(), "device": self.deviceCombo.currentText(),
            "output": self.outputFile.filePath(), "field": self.labelField.currentField(),
        }
        for k, v in values.items():
            self.set_settings_value(k, v)

    # jobs ----------------------------------------------------------------
    def make_job(self):
        return self._train_job()

    def build_config(self, download: bool = False):
        """The FinetuneConfig of the form (``download``: the user agreed to download the catalogue weights)."""
        from ..core.finetune.job import FinetuneConfig
        from ..layer_sources import labels_source

        raster = self.inputLayer.currentLayer()
        if raster is None:
            raise InputError("Choose an input raster layer.")
        bands = self.selected_bands()
        if not bands:
            raise InputError("Choose at least one band.")
        labels = self.labelsLayer.currentLayer()
        if labels is None:
            raise InputError("Choose a labels layer (points, polygons or a label raster).")
        is_vector = labels.type() == QgsMapLayer.LayerType.VectorLayer
        field = self.labelField.currentField() if is_vector else ""
        if is_vector and not field:
            raise InputError("Choose the label field (the class, or the value for regression).")
        out = self.outputFile.filePath()
        out = (output_name(out, "model") if out
               else default_output(f"{raster.name()}_{self.taskCombo.currentData()}", "model"))
        source = labels_source(labels, transform_context=QgsProject.instance().transformContext())
        return FinetuneConfig(
            input_path=raster.source(), labels=source, label_field=field, output_model=out,
            input_bands=None if bands == default_bands(raster) else bands,  # e.g. alpha checked: as given
            task=self.taskCombo.currentData(), backbone=self.backboneCombo.currentData(),
            weights=self.weights_value(), patch_size=to_core(FinetuneConfig, "patch_size", self.patchSpin.value()),
            epochs=self.epochsSpin.value(),
            batch_size=self.batchSpin.value(), learning_rate=self.lrSpin.value(),
            validation_fraction=self.valSpin.value(), freeze_backbone=self.freezeCheck.isChecked(),
            augment=self.augmentCheck.isChecked(), device=self.deviceCombo.currentText(),
            seed=self.seedSpin.value(), max_raster_samples=self.maxSamplesSpin.value(),
            output_report=report_path_for(out) if self.reportCheck.isChecked() else None,
            download_weights=download, weight_bands=self.weight_bands(self.catalogue_entry()),
            proxies=self.proxies(download),
        )

    def _train_job(self):
        from dataclasses import replace

        from ..core.finetune.job import check_config, run_finetune

        cfg = self.build_config()  # the form's slips first, then the question about downloading weights
        raster = self.inputLayer.currentLayer()
        entry = self.catalogue_entry()
        if entry is not None:
            from ..core.finetune.pretrained import is_cached
            from .weights_dialog import ask_download_consent

            if not is_cached(entry):
                if not ask_download_consent(self, entry):
                    self.statusLabel.setText(f"Not started: the weights '{entry.name}' are not on this computer "
                                             "(Weights… shows where to copy them).")
                    return None
                cfg = replace(cfg, download_weights=True, proxies=self.proxies(True))
        labels = self.labelsLayer.currentLayer()
        classify = self.classifyCheck.isChecked()
        check_config(cfg)  # a slip in the form (e.g. heights as classes) is said before any question about files
        # the model (e.g. the remembered path of the last one), its report and the maps written beside it
        if not self.confirm_replace(output_paths(cfg, classify), self.outputFile):
            return None
        self._maps_asked = classify
        self.save_settings()
        remember("input", raster)
        remember("labels", labels)
        self.statusLabel.setText("")
        self._train_raster = raster
        return f"GeoML: fine-tune {cfg.backbone} on {raster.name()}", lambda fb: run_finetune(cfg, fb)

    def show_message(self, text: str) -> None:
        """Live progress ("epoch 3/40 · loss 0.61 · val accuracy 87.5%") goes to the status line, one log line
        per epoch to the log."""
        if EPOCH_PROGRESS.match(text):
            self.statusLabel.setText(text)
        elif not OTHER_PROGRESS.match(text):  # the progress bar shows those
            self.logView.appendPlainText(text)

    def on_success(self, result) -> None:
        from ..core.finetune.job import FinetuneResult

        if not isinstance(result, FinetuneResult):
            return self._predict_done(result)
        result.model = None  # the file is what the dialog uses; free the network's memory
        self.last_result = result
        self.statusLabel.setText(f"Trained: {result.summary()}")
        self.logView.appendPlainText(f"Model saved: {result.model_path}")
        if result.report_path:
            self.logView.appendPlainText(f"Report: {result.report_path}")
        self.push_message(f"Model trained — {result.summary()}", Qgis.MessageLevel.Success)
        self.update_classify_button()
        if self.classifyCheck.isChecked():
            if not self._maps_asked and not self.confirm_replace(self.map_paths()):  # checked while training
                self.logView.appendPlainText("No map was made: the earlier maps are kept (Classify makes one).")
                return
            self.classify()

    def map_paths(self) -> list:
        """The rasters :meth:`classify` writes beside the model just trained."""
        return map_paths_for(self.last_result.model_path, self.last_result.task)

    def set_running(self, running: bool) -> None:
        super().set_running(running)
        self.update_classify_button()

    def model_to_classify(self):
        """The model Classify now applies: the one trained last (its file was written as training ended), else the
        saved model named in Model file (e.g. after a training that failed, or a restart); None when there is none."""
        if self.last_result is not None:
            return self.last_result
        path = self.outputFile.filePath()
        if path and os.path.isfile(path):
            from ..core.modelfile import read_metadata

            try:
                meta = read_metadata(path)
            except GeoMLError:
                return None
            if meta.task in TASKS:
                return SavedModel(os.path.abspath(path), meta)
        return None

    def update_classify_button(self) -> None:
        """Classify now: enabled only when it can act (no job running, a model file to apply)."""
        self.classifyButton.setEnabled(self.task is None and self.model_to_classify() is not None)

    def classify_clicked(self) -> None:
        """The Classify button: asks before replacing maps that exist (e.g. those made after training)."""
        if self.task is not None:
            return
        model = self.model_to_classify()
        if model is None:
            return
        self.last_result = model
        if not self.confirm_replace(self.map_paths()):
            return
        self.classify()

    def classify(self) -> None:
        """Apply the model just trained to the raster (or the map view) in the background."""
        if self.last_result is None or self.task is not None:
            return
        try:
            description, job = self._predict_job()
        except GeoMLError as exc:
            self.show_error(str(exc))
            return
        self._classify_task = task = self.start_job(description, job, clear_log=False)
        self._map_started = time.monotonic()
        self._map_what = self.map_step_name()
        self._map_fraction = 0.0
        self.statusLabel.setText(f"{self._map_what}: starting…")
        if task is not None:
            task.percent.connect(lambda p, t=task: self.show_map_progress(t, p))
            # between progress reports (a block can take a while) the line keeps counting
            self._map_timer.start()

    def _project_cleared(self) -> None:
        super()._project_cleared()
        self._train_raster = None  # its layer is gone with the project; Classify maps the chosen input

    def map_step_name(self) -> str:
        raster = getattr(self, "_train_raster", None) or self.inputLayer.currentLayer()
        verb = "Mapping values of" if self.last_result.task == "regression" else "Classifying"
        where = " (map view)" if self.extentCombo.currentData() == "view" else ""
        return f"{verb} {raster.name() if raster is not None else 'the raster'}{where}"

    def show_map_progress(self, task, percent: float) -> None:
        """The map step's own status line, with an estimate of the time left (training said 'Trained: …')."""
        if task is not self.task:
            return
        self._map_fraction = percent / 100.0
        self._tick_map_status()

    def _tick_map_status(self) -> None:
        task = self.task
        if task is None or task is not self._classify_task:
            self._map_timer.stop()
            return
        elapsed = time.monotonic() - self._map_started
        text = map_progress_text(self._map_what, self._map_fraction, elapsed)
        if ", about " not in text:
            text += f" ({duration_text(elapsed)} so far)"
        self.statusLabel.setText(text)

    def _cancelled(self, task):
        super()._cancelled(task)
        if task is self._classify_task and self.last_result is not None:
            what = "mapping of values" if self.last_result.task == "regression" else "classification"
            self.statusLabel.setText(f"{_trained(self.last_result)}. The {what} was cancelled.")

    def cancelled_messages(self, task):
        if task is self._classify_task and self.last_result is not None:
            # the model file was written when training ended: only the map is missing
            what = "mapping of values" if self.last_result.task == "regression" else "classification"
            text = (f"The model was saved to {self.last_result.model_path}; the {what} was cancelled "
                    "and no map was written.")
            return text, text
        return super().cancelled_messages(task)

    def _predict_job(self):
        from ..core.predict import PredictConfig, run_predict

        raster = getattr(self, "_train_raster", None) or self.inputLayer.currentLayer()
        if raster is None:
            raise InputError("Choose the raster to classify.")
        model = self.last_result.model_path
        out, conf = (self.map_paths() + [None])[:2]  # a regression model: no confidence raster
        cfg = PredictConfig(input_path=raster.source(), model_path=model, output_path=out, confidence_path=conf,
                            device=self.deviceCombo.currentText(), window=self.view_window(raster))
        return f"GeoML: apply {os.path.basename(model)} to {raster.name()}", lambda fb: run_predict(cfg, fb)

    def view_window(self, raster):
        """Pixel window of the current map view over ``raster``, or None for the whole raster."""
        if self.extentCombo.currentData() != "view" or self.plugin is None or self.plugin.iface is None:
            return None
        from .map_window import canvas_window

        return canvas_window(self.plugin.iface.mapCanvas(), raster)

    def _predict_done(self, result) -> None:
        from .predict_dialog import add_prediction_layers

        layer = add_prediction_layers(result)
        done = "Mapped values" if self.last_result is not None and self.last_result.task == "regression" else "Classified"
        self.logView.appendPlainText(f"{done} in {result.seconds:.1f} s → {result.output_path}")
        if self.last_result is not None:
            self.statusLabel.setText(f"{_trained(self.last_result)}. {done} in "
                                     f"{duration_text(result.seconds)}.")
        self.push_message(f"Added '{layer.name()}'.", Qgis.MessageLevel.Success)


def open_dialog(plugin):
    parent = plugin.iface.mainWindow() if plugin.iface is not None else None
    return show_single(plugin, "finetune", lambda: FinetuneDialog(plugin, parent))

"""``geoml:finetune`` — train a CNN on a raster and labels, save a GeoML model file."""
from __future__ import annotations

import json

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from ..core.finetune.backbones import BACKBONE_LABELS, BACKBONES
from ..core.finetune.job import TASKS
from ..core.outputs import output_name
from ..file_filters import NEW_GEOML_MODEL
from .base import GeoMLAlgorithm

HELP = """Trains a convolutional network on a raster and your labels and saves a GeoML model file (apply it with <i>Apply model to raster</i>).

<b>Input raster</b> and <b>bands</b> (default all but an alpha band, which stays a nodata mask). Per-band statistics are stored in the model and applied at prediction.
<b>Labels</b>: points (a patch centred on each), polygons (patches sampled inside; masks for segmentation, where pixels outside every polygon are ignored, not background: label a background class if you want one) or a label raster (classes, or values for regression; its nodata value marks unlabelled pixels, so without one 0 is a class and the log says so). Labels in another CRS are reprojected; labels outside the raster or on nodata are skipped and counted in the log; labels with an empty (NULL, NaN, blank) value are refused.
<b>Label field</b>: the name of the field holding the class (name or number), or a numeric value for regression; a wrong name gets a message listing the layer's fields. Not used with a label raster.
<b>Task</b>: classification (one class per patch), segmentation (a class per pixel, U-Net), regression (a value per patch from points/polygons, per pixel from a target raster).
<b>Backbone</b>: the small residual CNN trains in minutes on a CPU; ResNet-18/34/50 are torchvision's, adapted to any band count.
<b>Weights</b>: <i>none</i> (from scratch), <i>imagenet</i> (torchvision's ImageNet weights of the chosen ResNet), a name from GeoML's weights catalogue (e.g. <i>resnet18_sentinel2_all_moco</i>, <i>resnet50_sentinel2_all_dino</i>, <i>resnet18_sentinel2_rgb_seco</i>, <i>resnet18_landsat_oli_sr_moco</i>; the <i>Weights…</i> manager lists them with bands, size and licence), or the path of an earlier GeoML model file with the same backbone and bands (transfer: its backbone, a new head). Catalogue weights are read from the torch cache (TORCH_HOME/hub/checkpoints).
<b>Download weights</b> (default no): a job downloads missing catalogue weights only when this is yes; then the file's SHA-256 is checked before it is cached, an interrupted download resumes, and the standard proxy variables (http_proxy, https_proxy, no_proxy) are used. Without it the message names the file, its URL, its checksum and the folder to copy it into.
<b>Weight bands</b>: which band of the weights each selected band is, comma-separated in band order (e.g. <i>B04,B03,B02,B08</i>; <i>-</i> for a band the weights do not know). Empty: read from the raster's band descriptions (B4, B04, B8A, red…); with no names, a raster with the weights' band count is taken in their order. Named bands take their pretrained first-layer kernels and the scaling the weights expect (e.g. Sentinel-2 reflectance ÷ 10000), which is stored in the model file and applied by prediction; other bands take the mean kernel and the raster's statistics.
<b>Epochs</b> 0 and <b>learning rate</b> 0 choose automatically. <b>Validation fraction</b>: share of the labelled features kept apart, per class, for the metrics (0 = none).
<b>Augment</b>: random shifts, flips and 90° rotations; for classes also a mild contrast/brightness jitter. <b>Freeze backbone</b>: train only the head, the backbone's weights and normalisation statistics stay as loaded (fast; for pretrained weights and very few labels).
<b>Outputs</b>: the model file (.safetensors; the extension is added when missing); optionally an HTML report with learning curves, confusion matrix and per-class metrics (IoU for segmentation) (metrics also as JSON beside it, report.html → report.json). Neither may be the input raster or the labels file. The validation metrics are returned as outputs (OVERALL_ACCURACY, KAPPA, MACRO_F1, for segmentation also MEAN_IOU, the mean over the classes of the intersection over union of predicted and labelled pixels; or RMSE, MAE, R2; METRICS as JSON, with per-class IoU for segmentation); those that do not apply are empty, and so is R2 when every held-out value is the same (R² is then undefined). Cancel stops within one batch and writes nothing.
"""

METRIC_OUTPUTS = {
    "OVERALL_ACCURACY": "overall_accuracy", "KAPPA": "kappa", "MACRO_F1": "macro_f1", "MEAN_IOU": "mean_iou",
    "RMSE": "rmse", "MAE": "mae", "R2": "r2",
}
METRIC_LABELS = {"OVERALL_ACCURACY": "Overall accuracy", "KAPPA": "Kappa", "MACRO_F1": "Macro F1",
                 "MEAN_IOU": "Mean IoU", "RMSE": "RMSE", "MAE": "MAE", "R2": "R²"}


class FinetuneAlgorithm(GeoMLAlgorithm):
    NAME = "finetune"
    DISPLAY = "Fine-tune a model on your labels"
    GROUP = "Train"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        Number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        self.addParameter(QgsProcessingParameterBand("INPUT_BANDS", "Bands (default all but alpha)", None, "INPUT",
                                                     optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterMapLayer(
            "LABELS", "Labels (points, polygons or a label raster)",
            types=[QgsProcessing.SourceType.TypeVectorPoint, QgsProcessing.SourceType.TypeVectorPolygon,
                   QgsProcessing.SourceType.TypeRaster]))
        # A text parameter, not QgsProcessingParameterField: a field parameter whose parent accepts rasters
        # crashes QGIS 3.22-3.44 when the parent holds a raster (null layer dereferenced in
        # QgsProcessingFieldWidgetWrapper::setParentLayerWrapperValue). A wrong name gets a clear message.
        self.addParameter(QgsProcessingParameterString("LABEL_FIELD", "Label field (class or value; empty for a "
                                                       "label raster)", optional=True))
        self.addParameter(QgsProcessingParameterEnum("TASK", "Task", options=list(TASKS), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("BACKBONE", "Backbone",
                                                     options=[BACKBONE_LABELS[b] for b in BACKBONES], defaultValue=0))
        self.addParameter(QgsProcessingParameterString(
            "WEIGHTS", "Starting weights: none, imagenet, a catalogue name, or an earlier GeoML model file",
            defaultValue="none"))
        self.addParameter(QgsProcessingParameterBoolean(
            "DOWNLOAD_WEIGHTS", "Download catalogue weights that are not cached (checksum verified)",
            defaultValue=False))
        self.addParameter(Number("PATCH_SIZE", "Patch size (pixels)", type=Number.Type.Integer, defaultValue=64,
                                 minValue=8, maxValue=1024))
        self.addParameter(Number("EPOCHS", "Epochs (0 = automatic)", type=Number.Type.Integer, defaultValue=0,
                                 minValue=0, maxValue=10000))
        self.addParameter(Number("BATCH_SIZE", "Batch size", type=Number.Type.Integer, defaultValue=32, minValue=2,
                                 maxValue=4096))
        self.addParameter(Number("LEARNING_RATE", "Learning rate (0 = automatic)", type=Number.Type.Double,
                                 defaultValue=0.0, minValue=0.0, maxValue=1.0))
        advanced = [
            Number("VALIDATION_FRACTION", "Validation fraction (stratified; 0 = none)", type=Number.Type.Double,
                   defaultValue=0.2, minValue=0.0, maxValue=0.9),
            QgsProcessingParameterBoolean("FREEZE_BACKBONE", "Freeze the backbone (train the head only)",
                                          defaultValue=False),
            QgsProcessingParameterBoolean("AUGMENT", "Augment (shifts, flips, 90° rotations; contrast jitter for classes)", defaultValue=True),
            Number("SEED", "Random seed", type=Number.Type.Integer, defaultValue=0, minValue=0),
            Number("MAX_SAMPLES", "Label rasters: patches sampled at most", type=Number.Type.Integer,
                   defaultValue=2000, minValue=10),
            QgsProcessingParameterString("WEIGHT_BANDS", "Weight bands: the weights' band of each band used "
                                         "(e.g. B04,B03,B02; '-' = unknown; empty = from band descriptions)",
                                         optional=True),
        ]
        self.add_advanced_parameters(*advanced)
        self.add_device_parameter()
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", "Model file", fileFilter=NEW_GEOML_MODEL))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", "Training report (HTML)", fileFilter="HTML (*.html)", optional=True,
            createByDefault=False))
        for name in METRIC_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(name, METRIC_LABELS[name]))
        self.addOutput(QgsProcessingOutputString("METRICS", "Validation metrics (JSON)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.finetune.job import FinetuneConfig, run_finetune
        from ..core.finetune.pretrained import parse_weight_bands
        from ..layer_sources import labels_source
        from ..proxy_settings import qgis_proxies

        raster = self.input_raster(parameters, context)
        labels = self.input_layer(parameters, context, "LABELS", "labels layer")
        try:
            source = labels_source(labels, QgsProcessingUtils.tempFolder(), context.transformContext())
        except Exception as exc:  # InputError from the export
            raise QgsProcessingException(str(exc)) from exc
        report = self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context) or None
        cfg = FinetuneConfig(
            input_path=raster.source(),
            input_bands=self.parameterAsInts(parameters, "INPUT_BANDS", context) or None,
            labels=source,
            label_field=self.parameterAsString(parameters, "LABEL_FIELD", context) or "",
            output_model=output_name(self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context), "model"),
            output_report=report,
            task=TASKS[self.parameterAsEnum(parameters, "TASK", context)],
            backbone=BACKBONES[self.parameterAsEnum(parameters, "BACKBONE", context)],
            weights=self.parameterAsString(parameters, "WEIGHTS", context) or "none",
            download_weights=self.parameterAsBoolean(parameters, "DOWNLOAD_WEIGHTS", context),
            weight_bands=parse_weight_bands(self.parameterAsString(parameters, "WEIGHT_BANDS", context)),
            proxies=qgis_proxies(),
            patch_size=self.parameterAsInt(parameters, "PATCH_SIZE", context),
            epochs=self.parameterAsInt(parameters, "EPOCHS", context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            learning_rate=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            validation_fraction=self.parameterAsDouble(parameters, "VALIDATION_FRACTION", context),
            freeze_backbone=self.parameterAsBoolean(parameters, "FREEZE_BACKBONE", context),
            augment=self.parameterAsBoolean(parameters, "AUGMENT", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            max_raster_samples=self.parameterAsInt(parameters, "MAX_SAMPLES", context),
            device=self.device(parameters, context),
        )
        result = self.run_job(feedback, lambda fb: run_finetune(cfg, fb))
        feedback.pushInfo(f"Validation: {result.summary()}")
        out = {"OUTPUT_MODEL": result.model_path, "OUTPUT_REPORT": result.report_path,
               "METRICS": json.dumps(result.metrics)}
        for name, key in METRIC_OUTPUTS.items():
            out[name] = result.metrics.get(key)
        return out

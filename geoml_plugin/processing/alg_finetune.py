"""``geoml:finetune`` — train a CNN on a raster and labels, save a GeoML model file."""
from __future__ import annotations

import json

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
)

from ..core.finetune.job import FinetuneConfig
from ..core.outputs import output_name
from ..core.spec import spec_of, to_core
from ..file_filters import NEW_GEOML_MODEL
from .base import GeoMLAlgorithm
from .spec_params import add_spec_params, build_help, spec_param

INTRO = """Trains a convolutional network on a raster and your labels and saves a GeoML model file (apply it with <i>Apply model to raster</i>).

"""
HELP = build_help(
    INTRO,
    (FinetuneConfig, "input_bands"),
    "<b>Labels</b>: points (a patch centred on each), polygons (patches sampled inside; masks for segmentation, "
    "where pixels outside every polygon are ignored, not background: label a background class if you want one) or "
    "a label raster (classes, or values for regression; its nodata value marks unlabelled pixels, so without one 0 "
    "is a class and the log says so). Labels in another CRS are reprojected; labels outside the raster or on nodata "
    "are skipped and counted in the log; labels with an empty (NULL, NaN, blank) value are refused.",
    (FinetuneConfig, "label_field"),
    (FinetuneConfig, "task"),
    (FinetuneConfig, "backbone"),
    (FinetuneConfig, "weights"),
    (FinetuneConfig, "download_weights"),
    (FinetuneConfig, "weight_bands"),
    (FinetuneConfig, "patch_size"),
    (FinetuneConfig, "epochs"),
    (FinetuneConfig, "augment"),
    "<b>Outputs</b>: the model file (.safetensors; the extension is added when missing); optionally an HTML report with learning curves, confusion "
    "matrix and per-class metrics (IoU for segmentation) (metrics also as JSON beside it, report.html → "
    "report.json). Neither may be the input raster or the labels file. The validation metrics are returned as "
    "outputs (OVERALL_ACCURACY, KAPPA, MACRO_F1, for segmentation also MEAN_IOU, the mean over the classes of the "
    "intersection over union of predicted and labelled pixels; or RMSE, MAE, R2; METRICS as JSON, with per-class "
    "IoU for segmentation); those that do not apply are empty, and so is R2 when every held-out value is the same "
    "(R² is then undefined). Cancel stops within one batch and writes nothing.",
)

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
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        bands = spec_of(FinetuneConfig, "input_bands")
        self.addParameter(QgsProcessingParameterBand(bands.name, bands.label, None, "INPUT", optional=True,
                                                     allowMultiple=True))
        self.addParameter(QgsProcessingParameterMapLayer(
            "LABELS", "Labels (points, polygons or a label raster)",
            types=[QgsProcessing.SourceType.TypeVectorPoint, QgsProcessing.SourceType.TypeVectorPolygon,
                   QgsProcessing.SourceType.TypeRaster]))
        # A text parameter, not QgsProcessingParameterField: a field parameter whose parent accepts rasters
        # crashes QGIS 3.22-3.44 when the parent holds a raster (null layer dereferenced in
        # QgsProcessingFieldWidgetWrapper::setParentLayerWrapperValue). A wrong name gets a clear message.
        self.addParameter(spec_param(FinetuneConfig, "label_field"))
        add_spec_params(self, FinetuneConfig, "task", "backbone", "weights", "download_weights", "patch_size",
                        "epochs", "batch_size", "learning_rate", "validation_fraction", "freeze_backbone",
                        "augment", "seed", "max_raster_samples", "weight_bands")
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
        from ..core.finetune.job import run_finetune
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
            task=spec_of(FinetuneConfig, "task").choices[self.parameterAsEnum(parameters, "TASK", context)],
            backbone=spec_of(FinetuneConfig, "backbone").choices[self.parameterAsEnum(parameters, "BACKBONE", context)],
            weights=self.parameterAsString(parameters, "WEIGHTS", context) or "none",
            download_weights=self.parameterAsBoolean(parameters, "DOWNLOAD_WEIGHTS", context),
            weight_bands=parse_weight_bands(self.parameterAsString(parameters, "WEIGHT_BANDS", context)),
            proxies=qgis_proxies(),
            patch_size=to_core(FinetuneConfig, "patch_size", self.parameterAsInt(parameters, "PATCH_SIZE", context)),
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

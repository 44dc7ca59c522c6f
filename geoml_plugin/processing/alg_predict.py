"""``geoml:predict`` — apply a GeoML model file to a raster."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.predict import PredictConfig
from ..core.spec import spec_of, to_core
from ..file_filters import APPLY_MODEL_FILTER
from .base import DEVICE_HELP, GeoMLAlgorithm, prepare_loading
from .spec_params import add_spec_params, build_help

INTRO = """Applies a GeoML model file (made by Fine-tune, Few-shot mapping, Meta-train with prototypical networks, or Train GAN with a target raster) to a raster, tile by tile.

"""
HELP = build_help(
    INTRO,
    (PredictConfig, "bands"),
    "<b>Model</b>: a GeoML model file (.safetensors). Pickled PyTorch files are refused for safety; so are GAN tile "
    "generators (use Generate tiles) and MAML meta-models (adapt them with Few-shot mapping first).",
    "An <b>ONNX model</b> (.onnx) runs with onnxruntime and needs no PyTorch: a GeoML export (Export model) or a "
    "Deepness Segmentor/Regressor with its metadata (model_type, class_names, standardization_mean/std, tiles_size, "
    "tiles_overlap). ONNX models are dense: Stride and test-time views do not apply; tiles and overlap come from the "
    "file's metadata unless set. Custom operator libraries are never loaded.",
    "<b>Output</b>: classified GeoTIFF (values 1..K, 0 = nodata, class names as categories, styled with the class "
    "colours), or a Float32 raster in the target's units for regression and translation models (nodata -9999). "
    "Outputs are GeoTIFF only (a name such as x.png is refused) and may not be the input raster or the model file.",
    "<b>Confidence</b> (optional): probability of the winning class, 0–1 (nodata -1). Classifiers only: with a "
    "regression or translation model none is written (the log says so).",
    (PredictConfig, "stride"),
    (PredictConfig, "overlap"),
    (PredictConfig, "batch_size"),
    (PredictConfig, "views"),
    (PredictConfig, "min_region"),
    "<b>Extent</b> (optional, any CRS): classify only this area of the raster; an extent that does not overlap it "
    "is refused.",
    DEVICE_HELP,
)


class PredictAlgorithm(GeoMLAlgorithm):
    NAME = "predict"
    DISPLAY = "Apply model to raster"
    GROUP = "Apply"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL", "GeoML model file", behavior=QgsProcessingParameterFile.Behavior.File,
                fileFilter=APPLY_MODEL_FILTER,
            )
        )
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Extent (empty = whole raster)", optional=True))
        self.add_device_parameter()
        add_spec_params(self, PredictConfig, "batch_size", "stride", "bands", "views", "overlap", "min_region")
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Prediction"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_CONFIDENCE", "Confidence", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.predict import run_predict

        layer = self.input_raster(parameters, context)
        conf = self.parameterAsOutputLayer(parameters, "OUTPUT_CONFIDENCE", context) or None
        window = None
        if parameters.get("EXTENT"):
            from ..core.raster.io import raster_info, window_from_extent

            ext = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
            window = self.run_job(feedback, lambda fb: window_from_extent(
                raster_info(layer.source()), ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()))
        cfg = PredictConfig(
            input_path=layer.source(),
            model_path=self.parameterAsFile(parameters, "MODEL", context),
            output_path=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            confidence_path=conf,
            device=self.device(parameters, context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            stride=to_core(PredictConfig, "stride", self.parameterAsInt(parameters, "STRIDE", context)),
            bands=self.parameterAsString(parameters, "BANDS", context) or None,
            window=window,
            views=spec_of(PredictConfig, "views").choices[self.parameterAsEnum(parameters, "VIEWS", context)],
            overlap=to_core(PredictConfig, "overlap", self.parameterAsInt(parameters, "OVERLAP", context)),
            min_region=self.parameterAsInt(parameters, "MIN_REGION", context),
        )
        from ..core.onnx_runtime import is_onnx

        result = self.run_job(feedback, lambda fb: run_predict(cfg, fb), needs_torch=not is_onnx(cfg.model_path))
        prepare_loading(context, cfg.output_path, cfg.confidence_path)
        if result.class_counts:
            feedback.pushInfo("Pixels per class: " + ", ".join(f"{k}: {v}" for k, v in result.class_counts.items()))
        return {"OUTPUT": result.output_path, "OUTPUT_CONFIDENCE": result.confidence_path}

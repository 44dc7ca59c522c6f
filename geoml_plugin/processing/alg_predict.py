"""``geoml:predict`` — apply a GeoML model file to a raster."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..core.models.view_sets import VIEW_COUNTS
from ..file_filters import APPLY_MODEL_FILTER
from .base import GeoMLAlgorithm, prepare_loading

HELP = """Applies a GeoML model file (made by Fine-tune, Few-shot mapping, Meta-train with prototypical networks, or Train GAN with a target raster) to a raster, tile by tile.

<b>Input raster</b>: must have the bands the model was trained on (same count and order). From a raster with more bands the model's own training bands are used (the log names the bands left out); <b>Input bands</b> (advanced, e.g. 1,2,3) chooses others.
<b>Model</b>: a GeoML model file (.safetensors). Pickled PyTorch files are refused for safety; so are GAN tile generators (use Generate tiles) and MAML meta-models (adapt them with Few-shot mapping first).
An <b>ONNX model</b> (.onnx) runs with onnxruntime and needs no PyTorch: a GeoML export (Export model) or a Deepness Segmentor/Regressor with its metadata (model_type, class_names, standardization_mean/std, tiles_size, tiles_overlap). ONNX models are dense: Stride and test-time views do not apply; tiles and overlap come from the file's metadata unless set. Custom operator libraries are never loaded.
<b>Output</b>: classified GeoTIFF (values 1..K, 0 = nodata, class names as categories, styled with the class colours), or a Float32 raster in the target's units for regression and translation models (nodata -9999). Outputs are GeoTIFF only (a name such as x.png is refused) and may not be the input raster or the model file.
<b>Confidence</b> (optional): probability of the winning class, 0–1 (nodata -1). Classifiers only: with a regression or translation model none is written (the log says so).
<b>Stride</b> (patch classifiers): distance in pixels between classified windows. 0 = automatic: an eighth of the patch (8 px for 64-px patches). Each pixel's class comes from the windows around it, weighted toward the nearer ones, so the map does not depend on where the windows fall; ResNet classifiers and few-shot models score all windows of a tile in about two network passes, so the default costs little more than a larger stride (the network's feature grid sets the possible strides: the log says which was used).
<b>Overlap</b> (advanced, dense models): pixels cropped at each side of a tile (at least); -1 = automatic: half a patch (for patches over 64 px: 32 px, or a quarter patch if more), on tiles of 8 patches (at most 512 px; 2 patches for patches over 256 px) placed on the network's pooling grid. For a small U-Net (32-px patches) on a 512 px scene this changed 0.05 percent of classes against one pass over the whole raster (about 0.4 percent with the former quarter-patch overlap on 4-patch tiles), at the same model work per pixel. Larger is closer still and slower, and must stay under half the tile.
<b>Batch size</b>: windows or tiles per forward pass; for dense models it counts tiles of 4 patches (at most 512 px), so fewer of the larger default tiles go at once (4 tiles of 512 px for 64-px patches at the default 16) and memory stays as it was.
<b>Test-time views</b> (advanced): average the prediction over 2, 4 or 8 flips/rotations of each window, as many times slower. It helps models trained without flip/rotation augmentation most; models fine-tuned with GeoML's defaults gain little (under a point of accuracy on the EuroSAT benchmark: 90.9 against 90.2 percent).
<b>Extent</b> (optional, any CRS): classify only this area of the raster; an extent that does not overlap it is refused.
<b>Device</b>: auto uses a CUDA GPU when one is available.
"""


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
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", "Batch size", type=QgsProcessingParameterNumber.Type.Integer, defaultValue=16, minValue=1))
        stride = QgsProcessingParameterNumber(
            "STRIDE", "Stride for patch classifiers (pixels, 0 = automatic)",
            type=QgsProcessingParameterNumber.Type.Integer, defaultValue=0, minValue=0)
        bands = QgsProcessingParameterString("BANDS", "Input bands (e.g. 1,2,3; empty = as the model)", optional=True)
        views = QgsProcessingParameterEnum("VIEWS", "Test-time views (flips/rotations averaged)",
                                           options=[str(v) for v in VIEW_COUNTS], defaultValue=0)
        overlap = QgsProcessingParameterNumber(
            "OVERLAP", "Overlap for dense models (pixels cropped at each tile side, -1 = automatic)",
            type=QgsProcessingParameterNumber.Type.Integer, defaultValue=-1, minValue=-1)
        self.add_advanced_parameters(stride, bands, views, overlap)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Prediction"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_CONFIDENCE", "Confidence", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.predict import PredictConfig, run_predict

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
            stride=self.parameterAsInt(parameters, "STRIDE", context) or None,
            bands=self.parameterAsString(parameters, "BANDS", context) or None,
            window=window,
            views=VIEW_COUNTS[self.parameterAsEnum(parameters, "VIEWS", context)],
            overlap=overlap if (overlap := self.parameterAsInt(parameters, "OVERLAP", context)) >= 0 else None,
        )
        from ..core.onnx_runtime import is_onnx

        result = self.run_job(feedback, lambda fb: run_predict(cfg, fb), needs_torch=not is_onnx(cfg.model_path))
        prepare_loading(context, cfg.output_path, cfg.confidence_path)
        if result.class_counts:
            feedback.pushInfo("Pixels per class: " + ", ".join(f"{k}: {v}" for k, v in result.class_counts.items()))
        return {"OUTPUT": result.output_path, "OUTPUT_CONFIDENCE": result.confidence_path}

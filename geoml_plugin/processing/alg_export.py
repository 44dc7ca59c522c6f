"""``geoml:export`` — write a GeoML model as ONNX (for Deepness, GeoML without PyTorch, any ONNX runtime)."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterFileDestination

from ..file_filters import MODEL_FILTER, ONNX_MODEL
from .base import GeoMLAlgorithm

HELP = """Writes a GeoML model file as an ONNX model that Deepness, GeoML (without PyTorch: Apply model accepts .onnx files) and any ONNX runtime can apply.

<b>Model</b>: a GeoML classifier, segmenter, regressor or translator (.safetensors). GAN tile generators and MAML meta-models cannot be exported.
<b>Output</b>: the .onnx file. Its input is the raster's <b>raw pixel values</b> (batch, bands, height, width; float32): GeoML's per-band normalisation is inside the graph. Its output is one probability per class and pixel (classifiers) or the values in the target's units (regression, translation), at the input's size. Batch size, height and width are free (opset 17).
A <b>patch classifier</b> (or patch regressor) is exported as a dense model, since Deepness has no patch classifier: windows are scored every eighth of the patch inside the graph and each pixel is interpolated between the nearest windows, as Apply model does; the tile is zero-padded at its edges, so apply it with overlapping tiles (the file's tiles_overlap says how much).
<b>Metadata</b>: Deepness's keys (model_type Segmentor or Regressor, class_names, resolution in cm/px, tiles_size, tiles_overlap in percent, standardization_mean 0 and standardization_std 1/255 so that Deepness, which scales pixels by 1/255, feeds the raw values) and GeoML's own description under the key geoml (bands, normalisation, classes with colours, patch, CRS, units, provenance).
The export is checked: onnxruntime's output must equal PyTorch's within 1e-4, or nothing is written.
"""


class ExportAlgorithm(GeoMLAlgorithm):
    NAME = "export"
    DISPLAY = "Export model to ONNX"
    GROUP = "Apply"
    HELP = HELP
    PRELOAD_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "GeoML model file", behavior=QgsProcessingParameterFile.Behavior.File, fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "ONNX model", fileFilter=ONNX_MODEL))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.onnx_export import export_onnx

        model = self.parameterAsFile(parameters, "MODEL", context)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        result = self.run_job(feedback, lambda fb: export_onnx(model, out, fb))
        feedback.pushInfo(f"{result.model_type}; onnxruntime equals PyTorch within {result.max_difference:.1e}")
        return {"OUTPUT": result.output_path}

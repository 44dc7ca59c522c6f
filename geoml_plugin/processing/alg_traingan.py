"""``geoml:traingan`` — train a GAN tile generator, or a pix2pix raster-to-raster translator."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..core.gan.architectures import ARCH_LABELS
from ..core.outputs import output_name
from ..file_filters import NEW_GEOML_MODEL
from .base import GeoMLAlgorithm

HELP = """Trains a generative model on raster tiles, on the CPU in minutes (faster on a CUDA GPU).

<b>Without TARGET</b> — a tile generator that learns the look of INPUT (terrain from a DEM, texture from imagery). Use it with <i>Generate tiles</i> or the interactive map tool: new tiles in the raster's units (e.g. metres), seamless between neighbours.
<b>With TARGET</b> — a translator INPUT → TARGET learnt on co-registered pixels (pix2pix: e.g. RGB → NIR, imagery → map, DEM → land cover). TARGET is resampled onto INPUT's grid when they differ; they must overlap, and TARGET may not be INPUT with the same bands.

<b>Input bands</b>: e.g. 1,2,3 (empty = all but an alpha band, which stays a nodata mask). <b>Tile size</b>: training crop in pixels: 64 (default), 128 or 256 (any multiple of 16 from 32 to 512, at most the raster size). Random crops are rotated and flipped; crops containing nodata are skipped (TARGET nodata is masked out of the loss).
<b>Iterations</b> × <b>batch size</b> = tiles seen. The defaults give recognisable results in a few minutes on a CPU.
<b>Model</b>: a GeoML model file (.safetensors; the extension is added when missing) holding the generator, the normalisation that returns outputs to the original units, the training pixel size and CRS.
<b>Report</b> (optional, named .png): PNG with training tiles next to generated ones (or input / target / prediction) and the loss curves; the losses are also written beside it as &lt;report&gt;_losses.csv. The report is written before the model; if either fails, neither is left from this run.
"""


class TrainGanAlgorithm(GeoMLAlgorithm):
    NAME = "traingan"
    DISPLAY = "Train GAN (tile generator or raster translator)"
    GROUP = "Generate"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        self.addParameter(QgsProcessingParameterString("BANDS", "Input bands (e.g. 1,2,3; empty = all but alpha)", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "TARGET", "Target raster (conditional INPUT → TARGET translation)", optional=True))
        integer = QgsProcessingParameterNumber.Type.Integer
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", "Tile size (pixels: 64, 128, 256)", type=integer,
                                                       defaultValue=64, minValue=32, maxValue=512))
        self.addParameter(QgsProcessingParameterNumber("ITERATIONS", "Iterations", type=integer, defaultValue=1000,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber("BATCH_SIZE", "Batch size", type=integer, defaultValue=16,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterEnum("ARCHITECTURE", "Architecture",
                                                     options=[label for _, label in ARCH_LABELS], defaultValue=0))
        self.add_device_parameter()
        self.addParameter(QgsProcessingParameterNumber("SEED", "Random seed", type=integer, defaultValue=0,
                                                       minValue=0))
        advanced = [
            QgsProcessingParameterString("TARGET_BANDS", "Target bands (empty = all but alpha)", optional=True),
            QgsProcessingParameterNumber("L1_WEIGHT", "L1 weight (conditional)",
                                         type=QgsProcessingParameterNumber.Type.Double, defaultValue=100.0, minValue=0),
            QgsProcessingParameterNumber("LEARNING_RATE", "Learning rate",
                                         type=QgsProcessingParameterNumber.Type.Double, defaultValue=2e-4,
                                         minValue=1e-7, maxValue=1.0),
        ]
        self.add_advanced_parameters(*advanced)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", "GeoML model", fileFilter=NEW_GEOML_MODEL))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", "Training report", fileFilter="PNG image (*.png)", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.gan.train import GanTrainConfig, run_traingan

        layer = self.input_raster(parameters, context)
        target = self.parameterAsRasterLayer(parameters, "TARGET", context)
        model = output_name(self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context), "model")
        report = self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context) or None
        cfg = GanTrainConfig(
            input_path=layer.source(), output_model=model, target_path=target.source() if target else None,
            bands=self.parameterAsString(parameters, "BANDS", context) or None,
            target_bands=self.parameterAsString(parameters, "TARGET_BANDS", context) or None,
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            iterations=self.parameterAsInt(parameters, "ITERATIONS", context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            architecture=ARCH_LABELS[self.parameterAsEnum(parameters, "ARCHITECTURE", context)][0],
            l1_weight=self.parameterAsDouble(parameters, "L1_WEIGHT", context),
            learning_rate=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            device=self.device(parameters, context), seed=self.parameterAsInt(parameters, "SEED", context),
            report_path=report,
        )
        result = self.run_job(feedback, lambda fb: run_traingan(cfg, fb))
        feedback.pushInfo("Metrics: " + ", ".join(f"{k} = {v:.4g}" for k, v in result.metrics.items()))
        return {"OUTPUT_MODEL": result.model_path, "OUTPUT_REPORT": result.report_path}

"""``geoml:traingan`` — train a GAN tile generator, or a pix2pix raster-to-raster translator."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.gan.train import GanTrainConfig
from ..core.outputs import output_name
from ..core.spec import spec_of
from ..file_filters import NEW_GEOML_MODEL
from .base import GeoMLAlgorithm
from .spec_params import add_spec_params, build_help

INTRO = """Trains a generative model on raster tiles, on the CPU in minutes (faster on a CUDA GPU).

<b>Without TARGET</b> — a tile generator that learns the look of INPUT (terrain from a DEM, texture from imagery). Use it with <i>Generate tiles</i> or the interactive map tool: new tiles in the raster's units (e.g. metres), seamless between neighbours.
<b>With TARGET</b> — a translator INPUT → TARGET learnt on co-registered pixels (pix2pix: e.g. RGB → NIR, imagery → map, DEM → land cover). TARGET is resampled onto INPUT's grid when they differ; they must overlap, and TARGET may not be INPUT with the same bands.

"""
HELP = build_help(
    INTRO,
    (GanTrainConfig, "bands"),
    (GanTrainConfig, "iterations"),
    "<b>Model</b>: a GeoML model file (.safetensors; the extension is added when missing) holding the generator, "
    "the normalisation that returns outputs to the original units, the training pixel size and CRS.",
    "<b>Report</b> (optional, named .png): PNG with training tiles next to generated ones (or input / target / "
    "prediction) and the loss curves; the losses are also written beside it as &lt;report&gt;_losses.csv. The "
    "report is written before the model; if either fails, neither is left from this run.",
)


class TrainGanAlgorithm(GeoMLAlgorithm):
    NAME = "traingan"
    DISPLAY = "Train GAN (tile generator or raster translator)"
    GROUP = "Generate"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        add_spec_params(self, GanTrainConfig, "bands")
        self.addParameter(QgsProcessingParameterRasterLayer(
            "TARGET", "Target raster (conditional INPUT → TARGET translation)", optional=True))
        add_spec_params(self, GanTrainConfig, "tile_size", "iterations", "batch_size", "architecture")
        self.add_device_parameter()
        add_spec_params(self, GanTrainConfig, "seed", "target_bands", "l1_weight", "learning_rate")
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", "GeoML model", fileFilter=NEW_GEOML_MODEL))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", "Training report", fileFilter="PNG image (*.png)", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.gan.train import run_traingan

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
            architecture=spec_of(GanTrainConfig, "architecture").choices[
                self.parameterAsEnum(parameters, "ARCHITECTURE", context)],
            l1_weight=self.parameterAsDouble(parameters, "L1_WEIGHT", context),
            learning_rate=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            device=self.device(parameters, context), seed=self.parameterAsInt(parameters, "SEED", context),
            report_path=report,
        )
        result = self.run_job(feedback, lambda fb: run_traingan(cfg, fb))
        feedback.pushInfo("Metrics: " + ", ".join(f"{k} = {v:.4g}" for k, v in result.metrics.items()))
        return {"OUTPUT_MODEL": result.model_path, "OUTPUT_REPORT": result.report_path}

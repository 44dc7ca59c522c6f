"""``geoml:metatrain`` — meta-train a few-shot model on labelled rasters."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
)

from ..core.fewshot.metatrain import MetaTrainConfig
from ..core.spec import spec_of, to_core
from ..file_filters import MODEL_FILTER
from .base import GeoMLAlgorithm
from .spec_params import add_spec_params, build_help

INTRO = """Meta-trains a model that learns new land-cover classes from a handful of points: the starting point of <i>Few-shot mapping</i>.

Instead of learning fixed classes, the model practises on many small tasks (<b>episodes</b>): WAYS classes picked at random, SHOTS labelled patches of each to learn from and QUERY patches of each to be tested on. It then adapts to new classes and new regions from a few clicked points.

"""
HELP = build_help(
    INTRO,
    "<b>Training raster</b> and <b>Additional rasters</b>: one or more regions; episodes are drawn within one region "
    "at a time. All need the same bands; an alpha band is left out (it stays a nodata mask).",
    "<b>Labels</b>: points or polygons with a class field, covering the rasters (each raster uses the labels inside "
    "it).",
    (MetaTrainConfig, "algorithm"),
    (MetaTrainConfig, "ways"),
    (MetaTrainConfig, "meta_batch"),
    (MetaTrainConfig, "patch_size"),
    "<b>Meta-model</b>: the output file (.safetensors); it may not be one of the rasters or the labels file.",
    "",
    "Returns the model file and the <b>meta-validation accuracy</b>: the mean accuracy on episodes drawn from "
    "labelled patches held out of training.",
    "",
    "Opened from <i>Raster ▸ GeoML ▸ Meta-train a few-shot model…</i>, the dialog has <b>Copy as command line</b>: "
    "the <code>geoml metatrain …</code> command of these settings, which trains on a server or cluster without "
    "QGIS (also on several GPUs with <code>torchrun</code>).",
)


class MetaTrainAlgorithm(GeoMLAlgorithm):
    NAME = "metatrain"
    DISPLAY = "Meta-train a few-shot model"
    GROUP = "Train"
    HELP = HELP
    PRELOAD_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Training raster"))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "EXTRA_INPUTS", "Additional training rasters (other regions)", QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", "Labels (points or polygons)",
            [QgsProcessing.SourceType.TypeVectorPoint, QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField("LABEL_FIELD", "Class field", parentLayerParameterName="LABELS"))
        add_spec_params(self, MetaTrainConfig, "algorithm", "ways", "shots", "query", "inner_steps", "inner_lr",
                        "meta_batch", "iterations", "backbone", "patch_size")
        self.add_device_parameter()
        add_spec_params(self, MetaTrainConfig, "learning_rate", "seed")
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT_MODEL", "Meta-model", MODEL_FILTER))
        self.addOutput(QgsProcessingOutputNumber("VAL_ACCURACY", "Meta-validation accuracy (0–1)"))
        self.addOutput(QgsProcessingOutputNumber("VAL_ACCURACY_CI95", "Meta-validation accuracy ± (95 %)"))

    def build_config(self, parameters, context, feedback=None) -> MetaTrainConfig:
        """The job's MetaTrainConfig from ``parameters`` (Run, and Copy as command line in the meta-train dialog)."""
        main = self.input_raster(parameters, context, what="training raster")
        rasters = [main.source()]
        for lyr in self.parameterAsLayerList(parameters, "EXTRA_INPUTS", context) or []:
            if lyr.source() not in rasters:
                rasters.append(lyr.source())
        labels = self.parameterAsCompatibleSourceLayerPath(parameters, "LABELS", context, ["gpkg", "shp"], "gpkg",
                                                           feedback)
        fields = self.parameterAsFields(parameters, "LABEL_FIELD", context)
        if not fields:
            raise QgsProcessingException("Choose the field that holds the class of each label.")
        cfg = MetaTrainConfig(
            rasters=rasters, labels=labels, label_field=fields[0],
            output_model=self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context),
            algorithm=spec_of(MetaTrainConfig, "algorithm").choices[self.parameterAsEnum(parameters, "ALGORITHM", context)],
            ways=to_core(MetaTrainConfig, "ways", self.parameterAsInt(parameters, "WAYS", context)),
            shots=self.parameterAsInt(parameters, "SHOTS", context),
            query=self.parameterAsInt(parameters, "QUERY", context),
            inner_steps=self.parameterAsInt(parameters, "INNER_STEPS", context),
            inner_lr=self.parameterAsDouble(parameters, "INNER_LR", context),
            meta_batch=self.parameterAsInt(parameters, "META_BATCH", context),
            iterations=self.parameterAsInt(parameters, "ITERATIONS", context),
            backbone=spec_of(MetaTrainConfig, "backbone").choices[self.parameterAsEnum(parameters, "BACKBONE", context)],
            patch_size=self.parameterAsInt(parameters, "PATCH_SIZE", context),
            learning_rate=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            device=self.device(parameters, context),
            seed=self.parameterAsInt(parameters, "SEED", context),
        )
        return cfg

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.fewshot.metatrain import run_metatrain

        cfg = self.build_config(parameters, context, feedback)
        result = self.run_job(feedback, lambda fb: run_metatrain(cfg, fb))
        feedback.pushInfo(f"Meta-validation accuracy: {result.val_accuracy:.1%} ± {result.val_accuracy_ci95:.1%} "
                          f"(best at iteration {result.best_iteration} of {result.iterations})")
        return {"OUTPUT_MODEL": result.output_model, "VAL_ACCURACY": result.val_accuracy,
                "VAL_ACCURACY_CI95": result.val_accuracy_ci95}

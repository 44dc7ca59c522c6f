"""``geoml:fewshot`` — map a raster from a few labelled points."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.fewshot.job import FewShotConfig
from ..core.spec import spec_of, to_core
from ..file_filters import MODEL_FILTER
from .base import GeoMLAlgorithm, prepare_loading
from .spec_params import add_spec_params, build_help

INTRO = """Maps a raster from a handful of labelled points: adapts a model to your classes — even classes it never saw — then classifies the whole raster.

"""
HELP = build_help(
    INTRO,
    "<b>Input raster</b>: the region to map (the bands the model was trained on).",
    "<b>Model</b>: a meta-model from <i>Meta-train a few-shot model</i> (best), or any GeoML patch classifier (used "
    "as a feature extractor).",
    "<b>Support points</b>: a few points per class (1–10 each) with a class field. Points outside the raster, on "
    "nodata or with an empty class are ignored and reported; every class needs at least one usable point, and at "
    "least two classes are needed.",
    (FewShotConfig, "adapt_steps"),
    "<b>Output</b>: class raster (values 1..K, class names from the support points, styled). <b>Confidence</b>: "
    "probability of the winning class — low values show where more points would help.",
    "<b>Adapted model</b> (optional): a normal GeoML classifier for <i>Apply model to raster</i>; written before "
    "the map to a hidden temporary file and put in place after it, so a cancelled or failed run leaves none and a "
    "full disk replaces no map.",
    "Outputs are GeoTIFF (x.png is refused) and may not be the input raster, the model or the support layer.",
    (FewShotConfig, "stride"),
    (FewShotConfig, "views"),
    (FewShotConfig, "min_region"),
)


class FewShotAlgorithm(GeoMLAlgorithm):
    NAME = "fewshot"
    DISPLAY = "Few-shot mapping from points"
    GROUP = "Apply"
    HELP = HELP
    PRELOAD_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster (region to map)"))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Meta-model or GeoML classifier", behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "SUPPORT", "Support points", [QgsProcessing.SourceType.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField("LABEL_FIELD", "Class field", parentLayerParameterName="SUPPORT"))
        add_spec_params(self, FewShotConfig, "adapt_steps")
        self.add_device_parameter()
        add_spec_params(self, FewShotConfig, "stride", "views", "batch_size", "seed", "min_region")
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Classes"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_CONFIDENCE", "Confidence", optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", "Adapted model", MODEL_FILTER, optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("SUPPORT_ACCURACY", "Accuracy on the support points"))
        self.addOutput(QgsProcessingOutputString("METHOD", "Adaptation method"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.fewshot.job import run_fewshot

        layer = self.input_raster(parameters, context)
        support = self.parameterAsCompatibleSourceLayerPath(parameters, "SUPPORT", context, ["gpkg", "shp"], "gpkg",
                                                            feedback)
        fields = self.parameterAsFields(parameters, "LABEL_FIELD", context)
        if not fields:
            raise QgsProcessingException("Choose the field that holds the class of each support point.")
        cfg = FewShotConfig(
            input_path=layer.source(), model_path=self.parameterAsFile(parameters, "MODEL", context),
            output_path=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            support=support, label_field=fields[0],
            confidence_path=self.parameterAsOutputLayer(parameters, "OUTPUT_CONFIDENCE", context) or None,
            output_model=self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context) or None,
            adapt_steps=self.parameterAsInt(parameters, "ADAPT_STEPS", context),
            device=self.device(parameters, context),
            stride=to_core(FewShotConfig, "stride", self.parameterAsInt(parameters, "STRIDE", context)),
            views=spec_of(FewShotConfig, "views").choices[self.parameterAsEnum(parameters, "VIEWS", context)],
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            min_region=self.parameterAsInt(parameters, "MIN_REGION", context),
        )
        result = self.run_job(feedback, lambda fb: run_fewshot(cfg, fb))
        prepare_loading(context, cfg.output_path, cfg.confidence_path)
        feedback.pushInfo(f"Adapted with {result.method}; support points per class: "
                          + ", ".join(f"{k}: {v}" for k, v in result.class_counts.items()))
        feedback.pushInfo("Pixels per class: " + ", ".join(f"{k}: {v}" for k, v in result.pixel_counts.items()))
        return {"OUTPUT": result.output_path, "OUTPUT_CONFIDENCE": result.confidence_path,
                "OUTPUT_MODEL": result.output_model, "SUPPORT_ACCURACY": result.support_accuracy,
                "METHOD": result.method}

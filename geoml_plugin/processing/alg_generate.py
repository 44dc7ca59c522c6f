"""``geoml:generate`` — georeferenced tiles from a GAN generator, or a translated raster."""
from __future__ import annotations

import re

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterCrs,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.gan.generate import GenerateConfig
from ..core.spec import spec_of, to_core
from ..file_filters import MODEL_FILTER
from ..layer_sources import crs_wkt
from .base import GeoMLAlgorithm, prepare_loading
from .spec_params import add_spec_params, build_help, spec_param

INTRO = """Makes a georeferenced raster with a GAN model trained by <i>Train GAN</i>.

"""
HELP = build_help(
    INTRO,
    (GenerateConfig, "tiles"),
    (GenerateConfig, "scene_normalisation"),
    "",
    "The output is a Float32 GeoTIFF (nodata -9999; a name such as x.png is refused). The model, seed and grid are "
    "written into its metadata; a style is saved beside it (terrain colours or hillshade for elevation, RGB for "
    "imagery). Points outside the area where a CRS is valid are refused.",
)


def parse_tiles(text: str) -> tuple[int, int]:
    """'3x2', '3×2', '3,2' or '3' (→ 3×3) → (columns, rows)."""
    text = (text or "1").strip().lower()
    parts = [p for p in re.split(r"[x×,;*\s]+", text) if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise QgsProcessingException(f"TILES '{text}' must be columns × rows, e.g. 3x2.") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 1:
        raise QgsProcessingException(f"TILES '{text}' must be two positive numbers, columns × rows, e.g. 3x2.")
    return nums[0], nums[1]


class GenerateAlgorithm(GeoMLAlgorithm):
    NAME = "generate"
    DISPLAY = "Generate tiles / translate raster (GAN)"
    GROUP = "Generate"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "GeoML GAN model", behavior=QgsProcessingParameterFile.Behavior.File, fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterPoint("CENTER", "Center (tile generators)", optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Extent (instead of Center)", optional=True))
        add_spec_params(self, GenerateConfig, "tiles", "tile_size", "pixel_size", "seed")
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster (translation models)",
                                                            optional=True))
        self.add_device_parameter()
        advanced = [
            QgsProcessingParameterCrs("OUTPUT_CRS", "Output CRS (empty = the model's)", optional=True),
            spec_param(GenerateConfig, "style"),
            spec_param(GenerateConfig, "scene_normalisation"),
            spec_param(GenerateConfig, "bands"),
        ]
        self.add_advanced_parameters(*advanced)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Generated raster"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.gan.generate import run_generate

        center = center_wkt = extent = extent_wkt = None
        if parameters.get("CENTER") not in (None, ""):
            pt = self.parameterAsPoint(parameters, "CENTER", context)
            center, center_wkt = (pt.x(), pt.y()), crs_wkt(self.parameterAsPointCrs(parameters, "CENTER", context))
        if parameters.get("EXTENT") not in (None, ""):
            r = self.parameterAsExtent(parameters, "EXTENT", context)
            if not r.isNull() and not r.isEmpty():
                extent = (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())
                extent_wkt = crs_wkt(self.parameterAsExtentCrs(parameters, "EXTENT", context))
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        out_crs = self.parameterAsCrs(parameters, "OUTPUT_CRS", context)
        cfg = GenerateConfig(
            model_path=self.parameterAsFile(parameters, "MODEL", context),
            output_path=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            center=center, center_crs_wkt=center_wkt or "", extent=extent, extent_crs_wkt=extent_wkt or "",
            crs_wkt=crs_wkt(out_crs),
            pixel_size=to_core(GenerateConfig, "pixel_size", self.parameterAsDouble(parameters, "PIXEL_SIZE", context)),
            seed=self.parameterAsInt(parameters, "SEED", context),
            tiles=parse_tiles(self.parameterAsString(parameters, "TILES", context)),
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            input_path=layer.source() if layer is not None else None,
            bands=self.parameterAsString(parameters, "BANDS", context) or None,
            scene_normalisation=self.parameterAsBoolean(parameters, "SCENE_NORMALISATION", context),
            style=spec_of(GenerateConfig, "style").choices[self.parameterAsEnum(parameters, "STYLE", context)],
            device=self.device(parameters, context),
        )
        result = self.run_job(feedback, lambda fb: run_generate(cfg, fb))
        prepare_loading(context, cfg.output_path)
        if result.seed is not None:
            feedback.pushInfo(f"Seed {result.seed}; {result.width}×{result.height} px; "
                              f"values {result.value_range[0]:.4g} to {result.value_range[1]:.4g}")
        return {"OUTPUT": result.output_path}

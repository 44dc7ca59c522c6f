"""``geoml:generate`` — georeferenced tiles from a GAN generator, or a translated raster."""
from __future__ import annotations

import re

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..file_filters import MODEL_FILTER
from ..layer_sources import crs_wkt
from .base import GeoMLAlgorithm, prepare_loading

STYLES = ["auto", "pseudocolor", "hillshade", "rgb"]

HELP = """Makes a georeferenced raster with a GAN model trained by <i>Train GAN</i>.

<b>Tile generator models</b> — give <b>Center</b> (a point in any CRS; tiles are centred on it) or <b>Extent</b> (covered completely). <b>Tiles</b> = columns × rows of <b>Tile size</b> pixels (256 by default) around the centre, e.g. 3x2 (3 alone = 3x3). The result is in the model's CRS (or <b>Output CRS</b>) at the model's ground pixel size (or <b>Pixel size</b>: generated at the model's scale, then resampled, so relief keeps its real size), in the training raster's units (e.g. metres). The same <b>Seed</b> gives the same terrain at the same place, and outputs made separately join without seams.
<b>Translation models</b> (trained with a TARGET) — give <b>Input raster</b>: the whole raster is translated, tile by tile with overlap (each tile's edges are cropped, so tile borders barely show). <i>Scene normalisation</i> uses the input's own band statistics, which helps when the input comes from another sensor or season.

The output is a Float32 GeoTIFF (nodata -9999; a name such as x.png is refused). The model, seed and grid are written into its metadata; a style is saved beside it (terrain colours or hillshade for elevation, RGB for imagery). Points outside the area where a CRS is valid are refused.
"""


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
        self.addParameter(QgsProcessingParameterString("TILES", "Tiles (columns × rows)", defaultValue="1x1"))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (pixels)", type=QgsProcessingParameterNumber.Type.Integer, defaultValue=256,
            minValue=16, maxValue=8192))
        self.addParameter(QgsProcessingParameterNumber(
            "PIXEL_SIZE", "Pixel size (output CRS units; 0 = the model's)",
            type=QgsProcessingParameterNumber.Type.Double, defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", "Seed", type=QgsProcessingParameterNumber.Type.Integer, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster (translation models)",
                                                            optional=True))
        self.add_device_parameter()
        advanced = [
            QgsProcessingParameterCrs("OUTPUT_CRS", "Output CRS (empty = the model's)", optional=True),
            QgsProcessingParameterEnum("STYLE", "Style", options=STYLES, defaultValue=0),
            QgsProcessingParameterBoolean("SCENE_NORMALISATION", "Scene normalisation (translation)",
                                          defaultValue=False),
            QgsProcessingParameterString("BANDS", "Input bands (translation; empty = as the model)", optional=True),
        ]
        self.add_advanced_parameters(*advanced)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Generated raster"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.gan.generate import GenerateConfig, run_generate

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
            crs_wkt=crs_wkt(out_crs), pixel_size=self.parameterAsDouble(parameters, "PIXEL_SIZE", context) or None,
            seed=self.parameterAsInt(parameters, "SEED", context),
            tiles=parse_tiles(self.parameterAsString(parameters, "TILES", context)),
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            input_path=layer.source() if layer is not None else None,
            bands=self.parameterAsString(parameters, "BANDS", context) or None,
            scene_normalisation=self.parameterAsBoolean(parameters, "SCENE_NORMALISATION", context),
            style=STYLES[self.parameterAsEnum(parameters, "STYLE", context)],
            device=self.device(parameters, context),
        )
        result = self.run_job(feedback, lambda fb: run_generate(cfg, fb))
        prepare_loading(context, cfg.output_path)
        if result.seed is not None:
            feedback.pushInfo(f"Seed {result.seed}; {result.width}×{result.height} px; "
                              f"values {result.value_range[0]:.4g} to {result.value_range[1]:.4g}")
        return {"OUTPUT": result.output_path}

"""The ``geoml`` Processing provider."""
from __future__ import annotations

import importlib

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..paths import icon_path

# module:class of every algorithm; modules import no torch at load time.
ALGORITHMS = [
    "alg_predict:PredictAlgorithm",
    "alg_export:ExportAlgorithm",
    "alg_traingan:TrainGanAlgorithm",
    "alg_generate:GenerateAlgorithm",
    "alg_finetune:FinetuneAlgorithm",
    "alg_metatrain:MetaTrainAlgorithm",
    "alg_fewshot:FewShotAlgorithm",
]


def algorithm_classes() -> list:
    out = []
    for spec in ALGORITHMS:
        mod, cls = spec.split(":")
        out.append(getattr(importlib.import_module(f"{__package__}.{mod}"), cls))
    return out


class GeoMLProvider(QgsProcessingProvider):
    def __init__(self):
        super().__init__()
        from ..thread_settings import configure_from_qgis

        configure_from_qgis()  # before any GeoML job imports torch (core/threads.py)

    def id(self) -> str:  # noqa: A003
        return "geoml"

    def name(self) -> str:
        return "GeoML"

    def longName(self) -> str:  # noqa: N802
        return "GeoML — deep learning for rasters"

    def icon(self) -> QIcon:
        return QIcon(icon_path("geoml.svg"))

    def supportedOutputRasterLayerExtensions(self) -> list:  # noqa: N802
        # every GeoML raster output is written as GeoTIFF: offer no other format in the output widgets
        return ["tif"]

    def loadAlgorithms(self) -> None:  # noqa: N802
        for cls in algorithm_classes():
            self.addAlgorithm(cls())

"""Adding GeoML outputs to the project, styled.

Core jobs write a ``.qml`` style beside each raster, which QGIS loads as the
layer's default style; :func:`add_raster_layer` falls back to building a
paletted renderer from the raster's category names when there is none.
Main thread only.
"""
from __future__ import annotations

import os
from typing import Optional

from qgis.core import QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer

from .core.errors import RasterError


def add_raster_layer(path: str, name: Optional[str] = None, project: Optional[QgsProject] = None) -> QgsRasterLayer:
    layer = QgsRasterLayer(path, name or os.path.splitext(os.path.basename(path))[0], "gdal")
    if not layer.isValid():
        raise RasterError(f"QGIS cannot open the output '{path}'.")
    qml = os.path.splitext(path)[0] + ".qml"
    if os.path.exists(qml):
        layer.loadNamedStyle(qml)
    elif layer.dataProvider().colorTable(1):
        classes = QgsPalettedRasterRenderer.classDataFromRaster(layer.dataProvider(), 1)
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    (project or QgsProject.instance()).addMapLayer(layer)
    layer.triggerRepaint()
    return layer

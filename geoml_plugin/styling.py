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
from .core.outputs import sidecar_name


def _same_path(source: str, path: str) -> bool:
    try:
        return os.path.samefile(source, path)
    except OSError:
        return False


def add_raster_layer(path: str, name: Optional[str] = None, project: Optional[QgsProject] = None) -> QgsRasterLayer:
    """Add ``path`` styled; a layer added earlier for the same file under the same name is replaced
    (the job replaced its file: that layer would show the previous run's contents beside the new one)."""
    project = project or QgsProject.instance()
    name = name or os.path.splitext(os.path.basename(path))[0]
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise RasterError(f"QGIS cannot open the output '{path}'.")
    stale = [lyr.id() for lyr in project.mapLayersByName(name)
             if isinstance(lyr, QgsRasterLayer) and _same_path(lyr.source(), path)]
    if stale:
        project.removeMapLayers(stale)
    apply_style(layer, path)
    layer.setCustomProperty("geoml/output", True)  # gui.layer_defaults: never preselected as an input
    project.addMapLayer(layer)
    layer.triggerRepaint()
    return layer


def apply_style(layer: QgsRasterLayer, path: Optional[str] = None) -> None:
    """Give ``layer`` the style the job saved beside ``path`` (default: the layer's file), else a paletted
    renderer from its colour table."""
    qml = sidecar_name(path or layer.source(), "style")
    if os.path.exists(qml):
        layer.loadNamedStyle(qml)
    elif layer.dataProvider().colorTable(1):
        classes = QgsPalettedRasterRenderer.classDataFromRaster(layer.dataProvider(), 1)
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))

"""The pixel window of a map extent over a raster layer's file, for "classify the map view / a drawn extent"."""
from __future__ import annotations

from typing import Optional

from qgis.core import QgsCoordinateTransform, QgsCsException, QgsProject, QgsRasterLayer, QgsRectangle

from ..core.errors import InputError


def pixel_window(layer: QgsRasterLayer, rect: QgsRectangle, rect_crs) -> Optional[tuple]:
    """Pixel window (x, y, w, h) of ``rect`` (in ``rect_crs``) inside ``layer``'s file grid; None if outside.

    Through the raster's own geotransform (core ``window_from_extent``), so south-up and rotated rasters
    get the window of the pixels the job reads, not of QGIS's north-up view of them.
    """
    from ..core.raster.io import raster_info, window_from_extent

    if rect_crs != layer.crs():
        try:
            rect = QgsCoordinateTransform(rect_crs, layer.crs(), QgsProject.instance()).transformBoundingBox(rect)
        except QgsCsException:
            return None  # e.g. a world view that the raster's CRS cannot represent
    info = raster_info(layer.source())  # GeoMLError for a source the job cannot read either
    rect = rect.intersect(QgsRectangle(*info.extent))  # also bounds a huge (world) view
    if rect.isEmpty():
        return None
    try:
        return window_from_extent(info, rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
    except InputError:
        return None


def canvas_window(canvas, layer: QgsRasterLayer) -> tuple:
    """Pixel window of the map canvas's visible extent over ``layer``; InputError when they do not overlap."""
    window = pixel_window(layer, canvas.extent(), canvas.mapSettings().destinationCrs())
    if window is None:
        raise InputError("The map view does not overlap the raster.", "Pan to the raster, or choose the whole raster.")
    return window

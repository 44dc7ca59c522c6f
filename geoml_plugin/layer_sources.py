"""QGIS layers → file sources the core can read with GDAL/OGR.

The core reads labels from files. A vector layer that GDAL/OGR cannot read as
QGIS shows it — a memory layer, a layer from another provider (PostGIS,
delimited text, …) or one with a filter (subset string) — is exported to a
temporary GeoPackage first, so the job sees exactly the features the analyst
sees. Call from the main thread (dialogs) or from ``processAlgorithm``.
"""
from __future__ import annotations

import os
import uuid
from typing import Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsMapLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from .core.errors import InputError
from .core.outputs import temp_output_folder


def needs_export(layer: QgsVectorLayer) -> bool:
    if layer.providerType() != "ogr" or layer.subsetString():
        return True
    path = layer.source().split("|")[0]
    return not os.path.isfile(path)


def vector_source(layer: QgsVectorLayer, folder: Optional[str] = None,
                  transform_context: Optional[QgsCoordinateTransformContext] = None) -> str:
    """An OGR source string for ``layer`` (exporting it to a temporary GeoPackage when needed)."""
    if not needs_export(layer):
        return layer.source()
    folder = folder or temp_output_folder("labels")
    path = os.path.join(folder, f"labels_{uuid.uuid4().hex[:8]}.gpkg")
    opts = QgsVectorFileWriter.SaveVectorOptions()
    opts.driverName = "GPKG"
    opts.layerName = "labels"
    res = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, transform_context or QgsCoordinateTransformContext(), opts)
    if res[0] != QgsVectorFileWriter.WriterError.NoError:
        raise InputError(f"The labels layer '{layer.name()}' could not be exported for training: {res[1]}")
    return f"{path}|layername=labels"


def labels_source(layer: QgsMapLayer, folder: Optional[str] = None,
                  transform_context: Optional[QgsCoordinateTransformContext] = None) -> str:
    """File source of a labels layer: rasters as they are, vectors via :func:`vector_source`."""
    if layer is None:
        raise InputError("Choose a labels layer (points, polygons or a label raster).")
    if layer.type() == QgsMapLayer.LayerType.VectorLayer:
        return vector_source(layer, folder, transform_context)
    if layer.type() == QgsMapLayer.LayerType.RasterLayer:
        if layer.providerType() != "gdal":
            raise InputError(f"The label raster '{layer.name()}' is not a file GDAL can read.")
        return layer.source()
    raise InputError(f"'{layer.name()}' cannot be used as labels: use points, polygons or a raster.")


def crs_wkt(crs: QgsCoordinateReferenceSystem) -> str:
    """A QGIS CRS as the WKT the core's jobs take (GDAL's preferred variant); "" for an invalid CRS."""
    return crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL) if crs.isValid() else ""

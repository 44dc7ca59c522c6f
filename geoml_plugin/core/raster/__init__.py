"""Raster-level building blocks shared by every tool: GDAL reading and writing (``io``),
georeferencing (``georef``), tiling, vector and raster labels, class tables (``classes``)
and QGIS style files (``styles``)."""

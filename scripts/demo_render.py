"""Render styled raster layers to a PNG with QGIS's map renderer (headless)."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsRasterLayer
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def render_png(layer_paths: list, png: Path, width: int = 800) -> Path:
    """Draw the layers (first on top) as QGIS would, with their default styles."""
    layers = []
    for p in layer_paths:
        lyr = QgsRasterLayer(str(p), Path(p).stem, "gdal")
        if not lyr.isValid():
            raise RuntimeError(f"cannot render {p}")
        layers.append(lyr)
    ext = layers[-1].extent()
    for lyr in layers[:-1]:
        ext.combineExtentWith(lyr.extent())
    height = max(1, int(width * ext.height() / ext.width()))
    ms = QgsMapSettings()
    ms.setLayers(layers)
    ms.setDestinationCrs(layers[-1].crs())
    ms.setExtent(ext)
    ms.setOutputSize(QSize(width, height))
    ms.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(ms)
    job.start()
    job.waitForFinished()
    img = job.renderedImage()
    png = Path(png)
    if not img.save(str(png), "PNG"):
        raise RuntimeError(f"cannot write {png}")
    return png

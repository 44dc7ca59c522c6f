"""GeoML: deep learning for rasters inside QGIS.

QGIS calls :func:`classFactory`. Nothing here imports torch, so loading the
plugin is fast and works on a QGIS without torch.
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import GeoMLPlugin

    return GeoMLPlugin(iface)

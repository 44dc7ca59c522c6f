"""GeoML: deep learning for rasters inside QGIS.

QGIS (and ``qgis_process``) calls :func:`classFactory`. Nothing here imports
torch, so loading the plugin is fast and works on a QGIS without torch; it
only puts GeoML's private package folder on ``sys.path`` (see ``deps/detect.py``).
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .deps.detect import activate_packages_dir

    try:  # GeoML's private package folder (torch & co. installed by GeoML) goes first on sys.path
        activate_packages_dir()
    except OSError:
        pass
    from .plugin import GeoMLPlugin

    return GeoMLPlugin(iface)

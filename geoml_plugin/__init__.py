"""GeoML: deep learning for rasters inside QGIS.

QGIS (and ``qgis_process``) calls :func:`classFactory`. Nothing here imports
torch, so loading the plugin is fast and works on a QGIS without torch; it
only puts GeoML's private package folder on ``sys.path`` (see ``deps/detect.py``) and makes
OpenMP's idle threads sleep rather than spin once torch loads (``core/threads.py``).
"""

from .version import __version__  # noqa: F401  (the package's version, for users and tools)


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .core.threads import prepare_environment
    from .deps.detect import activate_packages_dir

    prepare_environment()  # OpenMP's waiting, before anything loads torch (core/threads.py)

    try:  # GeoML's private package folder (torch & co. installed by GeoML) goes first on sys.path
        activate_packages_dir()
    except OSError:
        pass
    from .plugin import GeoMLPlugin

    return GeoMLPlugin(iface)

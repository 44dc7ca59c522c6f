"""GeoML core: the machine-learning and raster code, free of QGIS and Qt.

Everything here runs under plain Python (pytest, scripts, notebooks) with
numpy, GDAL, torch and safetensors. The QGIS shell (dialogs, tasks, Processing
algorithms) is a thin layer over these functions. A test imports every module
of this package with ``qgis`` and Qt blocked, so keep it that way.
"""

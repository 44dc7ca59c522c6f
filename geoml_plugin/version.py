"""GeoML's version: the one in ``metadata.txt`` (QGIS shows it), in model files and in Diagnostics.

A module of its own so that the parts that report it (``deps.detect``, ``core.modelfile``, the command
line) need not import the plugin package's entry point, which imports them."""

__version__ = "0.1.0"

"""Qt names that moved between Qt5 and Qt6, imported through ``qgis.PyQt``."""
try:  # Qt6 (QGIS 4): QAction lives in QtGui
    from qgis.PyQt.QtGui import QAction  # type: ignore[attr-defined]
except ImportError:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction  # type: ignore[no-redef]

__all__ = ["QAction"]

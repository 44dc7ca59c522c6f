"""Map tool of the few-shot panel: left click adds a point, right click removes one."""
from __future__ import annotations

from qgis.gui import QgsMapTool
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QCursor

# a right click removes the nearest point within this many screen pixels
REMOVE_TOLERANCE_PX = 12


class PointPickerTool(QgsMapTool):
    """Emits map coordinates (in the canvas CRS); the panel owns the points."""

    pointClicked = pyqtSignal(object)  # QgsPointXY
    removeClicked = pyqtSignal(object, float)  # QgsPointXY, tolerance in map units

    def __init__(self, canvas):
        super().__init__(canvas)
        self.setCursor(QCursor(Qt.CursorShape.CrossCursor))

    def canvasReleaseEvent(self, event):  # noqa: N802
        point = self.toMapCoordinates(event.pos())
        if event.button() == Qt.MouseButton.LeftButton:
            self.pointClicked.emit(point)
        elif event.button() == Qt.MouseButton.RightButton:
            tolerance = REMOVE_TOLERANCE_PX * self.canvas().mapUnitsPerPixel()
            self.removeClicked.emit(point, tolerance)

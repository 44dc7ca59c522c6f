"""The map tool of interactive tile generation: click → tile, Shift-click → new seed."""
from __future__ import annotations

from qgis.gui import QgsMapTool
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QCursor


class GanMapTool(QgsMapTool):
    """Hands each left click (map point, Shift state) to ``on_click(point, new_seed)``."""

    def __init__(self, canvas, on_click):
        super().__init__(canvas)
        self._on_click = on_click
        self.setCursor(QCursor(Qt.CursorShape.CrossCursor))

    def canvasReleaseEvent(self, event):  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton:
            return
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        self._on_click(event.mapPoint(), shift)

"""Designer forms: the one place a dialog or panel turns its ``.ui`` file (``resources/ui``) into a form class."""
from __future__ import annotations

from qgis.PyQt import uic

from ..paths import ui_path


def load_ui(name: str):
    return uic.loadUiType(ui_path(name))[0]

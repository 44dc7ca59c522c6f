"""The QGIS message bar, as GeoML's dialogs and panels use it."""
from __future__ import annotations


def push_to_bar(plugin, text: str, level, duration: int) -> bool:
    """Show ``text`` in the plugin's message bar; False when there is none (tests, scripts)."""
    bar = plugin.message_bar() if plugin is not None and hasattr(plugin, "message_bar") else None
    if bar is None:
        return False
    bar.pushMessage("GeoML", text, level=level, duration=duration)
    return True

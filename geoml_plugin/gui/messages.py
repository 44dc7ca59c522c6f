"""The QGIS message bar, as GeoML's dialogs and panels use it."""
from __future__ import annotations

import traceback


def push_to_bar(plugin, text: str, level, duration: int) -> bool:
    """Show ``text`` in the plugin's message bar; False when there is none (tests, scripts)."""
    bar = plugin.message_bar() if plugin is not None and hasattr(plugin, "message_bar") else None
    if bar is None:
        return False
    bar.pushMessage("GeoML", text, level=level, duration=duration)
    return True


def unexpected_failure(what: str, exc: BaseException) -> str:
    """Log an exception that is not a GeoMLError (a bug, torch out of memory…) with its traceback
    to the GeoML tab of the message log; return ``'<what> failed: <message>'`` for the user."""
    from qgis.core import Qgis

    from ..tasks import log

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log(f"{what} failed:\n{tb}", Qgis.MessageLevel.Critical)
    return f"{what} failed: {str(exc) or type(exc).__name__} (details in the GeoML message log)."

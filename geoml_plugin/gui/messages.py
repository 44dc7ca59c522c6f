"""The QGIS message bar, as GeoML's dialogs and panels use it."""
from __future__ import annotations

import traceback

BAR_CHARS = 160  # longer texts are cut off in the message bar: the first sentence shows, the rest under "Show more"


def bar_text(text: str) -> str:
    """What fits on the message bar's one line: ``text``, or its first sentence (or first words) and '…'."""
    if len(text) <= BAR_CHARS:
        return text
    end = text.find(". ", 40, BAR_CHARS)
    if end > 0:
        return text[:end + 1] + " …"
    return text[:BAR_CHARS - 20].rsplit(" ", 1)[0] + " …"


def push_to_bar(plugin, text: str, level, duration: int) -> bool:
    """Show ``text`` in the plugin's message bar; False when there is none (tests, scripts). A long text shows its
    first sentence with a *Show more* button that opens all of it (before: cut off at the bar's edge)."""
    bar = plugin.message_bar() if plugin is not None and hasattr(plugin, "message_bar") else None
    if bar is None:
        return False
    short = bar_text(text)
    if short == text:
        bar.pushMessage("GeoML", text, level=level, duration=duration)
    else:
        bar.pushMessage("GeoML", short, text, level=level, duration=duration)
    return True


def error_level(error):
    """The message level for ``error``: Warning for :class:`InputError` (the user's slip: too few points, no
    layer chosen), Critical for anything else. QGIS logs every message bar text at its level."""
    from qgis.core import Qgis

    from ..core.errors import InputError

    return Qgis.MessageLevel.Warning if isinstance(error, InputError) else Qgis.MessageLevel.Critical


def unexpected_failure(what: str, exc: BaseException) -> str:
    """Log an exception that is not a GeoMLError (a bug, torch out of memory…) with its traceback
    to the GeoML tab of the message log; return ``'<what> failed: <message>'`` for the user."""
    from qgis.core import Qgis

    from ..tasks import log

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log(f"{what} failed:\n{tb}", Qgis.MessageLevel.Critical)
    return f"{what} failed: {str(exc) or type(exc).__name__} (details in the GeoML message log)."


def ask_about_running(parent, text: str, informative: str, keep_label: str, cancel_label: str) -> str:
    """Closing a window while its task runs: 'background' (keep it running), 'cancel' (cancel it and close)
    or 'stay' (do not close). ``keep_label`` is the default button; the third one reads "Don't close"."""
    from qgis.PyQt.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Question, "GeoML", text, QMessageBox.StandardButton.NoButton, parent)
    box.setInformativeText(informative)
    keep = box.addButton(keep_label, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(cancel_label, QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Don't close", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(keep)
    box.exec()
    if box.clickedButton() is keep:
        return "background"
    return "cancel" if box.clickedButton() is cancel else "stay"

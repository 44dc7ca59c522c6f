"""The message-bar offer to install PyTorch & co., with buttons that open the installer and diagnostics dialogs.

The dialogs are imported when a button is clicked, not with this module: job
dialogs import it and should not build the installer's form for that.
"""
from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

OFFER_NAME = "geomlDependencyOffer"


def offer_install(plugin, text: str, duration: int = 0):
    """Push 'GeoML: <text> [Install dependencies…] [Diagnostics…]' to the message bar.

    Returns the message bar item, or None when there is no message bar (then
    the caller shows ``text`` itself). One offer at a time.
    """
    bar = plugin.message_bar() if plugin is not None and hasattr(plugin, "message_bar") else None
    if bar is None:
        return None
    for item in list(bar.items()):
        if item.objectName() == OFFER_NAME:
            bar.popWidget(item)
    item = bar.createMessage("GeoML", text)
    item.setObjectName(OFFER_NAME)
    install = QPushButton("Install dependencies…", item)
    install.setObjectName("geomlInstallButton")
    install.setToolTip("Shows what it will do, then downloads into GeoML's own folder (no administrator rights "
                       "needed): the full install (PyTorch, torchvision, safetensors) for every tool, or the "
                       "apply-only install (onnxruntime, tens of MB) to apply ONNX models without PyTorch.")
    diagnostics = QPushButton("Diagnostics…", item)
    diagnostics.setObjectName("geomlDiagnosticsButton")

    def open_installer() -> None:
        from .installer_dialog import open_dialog

        _pop(bar, item)
        open_dialog(plugin)

    def open_diagnostics() -> None:
        from .diagnostics_dialog import open_dialog

        open_dialog(plugin)

    install.clicked.connect(open_installer)
    diagnostics.clicked.connect(open_diagnostics)
    item.layout().addWidget(install)
    item.layout().addWidget(diagnostics)
    bar.pushWidget(item, Qgis.MessageLevel.Warning, duration)
    return item


def _pop(bar, item) -> None:
    try:
        if item in bar.items():
            bar.popWidget(item)
    except RuntimeError:  # already deleted by the bar
        pass


def current_offer(bar):
    """The GeoML dependency offer shown in ``bar``, if any."""
    return next((i for i in bar.items() if i.objectName() == OFFER_NAME), None)

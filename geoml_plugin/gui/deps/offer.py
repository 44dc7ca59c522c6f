"""Dependency state in the GUI: the message-bar offer to install, and the
background check that fills the GPU badge of every job dialog.

The check (:func:`deps.detect.dependency_status`) imports torch in a separate Python
process and takes seconds, so it runs as a QgsTask, once per session; dialogs
opened meanwhile are called back when it is done.
"""
from __future__ import annotations

from typing import Callable, Optional

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

from ...deps import detect
from ...tasks import GeoMLTask, start_task

OFFER_NAME = "geomlDependencyOffer"
CHECKING_BADGE = "Checking PyTorch and the GPU…"

_state: dict = {"task": None, "callbacks": []}


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
    install.setToolTip("Downloads PyTorch, torchvision and safetensors into GeoML's own folder "
                       "(no administrator rights needed) and shows what it does.")
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


def check_in_background(callback: Callable[[detect.DepsStatus], None]) -> Optional[GeoMLTask]:
    """Call ``callback(status)`` on the main thread once the dependency check is known."""
    st = detect.cached_status()
    if st is not None:
        callback(st)
        return None
    _state["callbacks"].append(callback)
    if _state["task"] is None:
        task = GeoMLTask("GeoML: checking PyTorch and the GPU", lambda fb: detect.dependency_status(), _finished)
        task.keep_on_unload = True  # its callbacks tolerate deleted dialogs; others wait for its result
        _state["task"] = task
        start_task(task)
    return _state["task"]


def _finished(task: GeoMLTask) -> None:
    _state["task"] = None
    if task.error is None:
        st = task.result
    else:
        st = detect.quick_status()
        st.probe_error = f"The dependency check failed: {task.error_text()}"
    callbacks, _state["callbacks"] = _state["callbacks"], []
    for cb in callbacks:
        try:
            cb(st)
        except RuntimeError:  # the dialog was closed and deleted meanwhile
            pass


def collect_diagnostics(callback: Callable[[str], None], refresh: bool = False, extra: str = "") -> GeoMLTask:
    """Build :func:`deps.detect.diagnostics` in the background (it may import torch in a subprocess)."""

    def done(task: GeoMLTask) -> None:
        text = task.result if task.error is None else f"Diagnostics failed: {task.error_text()}\n{task.traceback}"
        try:
            callback(text)
        except RuntimeError:  # the dialog is gone
            pass

    task = GeoMLTask("GeoML: collecting diagnostics", lambda fb: detect.diagnostics(refresh=refresh, extra=extra), done)
    task.keep_on_unload = True  # ``done`` tolerates a deleted dialog
    return start_task(task)


_standalone: dict = {}


def main_window(plugin):
    iface = getattr(plugin, "iface", None) if plugin is not None else None
    return iface.mainWindow() if iface is not None else None


def show_single(plugin, key: str, factory):
    """One dialog per kind: the plugin keeps it when it can, else this module does."""
    if plugin is not None and hasattr(plugin, "dialog"):
        return plugin.dialog(key, factory)
    dlg = _standalone.get(key)
    if dlg is not None:
        try:
            dlg.isVisible()
        except RuntimeError:  # deleted
            dlg = None
    if dlg is None:
        dlg = factory()
        _standalone[key] = dlg
    dlg.show()
    dlg.raise_()
    dlg.activateWindow()
    return dlg

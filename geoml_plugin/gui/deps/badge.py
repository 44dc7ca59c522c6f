"""The device badge of the job dialogs and panels, and the background dependency checks behind it.

The check (:func:`deps.detect.dependency_status`) imports torch in a separate Python
process and takes seconds, so it runs as a QgsTask, once per session; badges
shown meanwhile say :data:`CHECKING_BADGE` and are called back when it is done.
This module imports no dialog, so every dialog can use it.
"""
from __future__ import annotations

from typing import Callable, Optional

from ...deps import detect
from ...tasks import GeoMLTask, start_task

CHECKING_BADGE = "Checking PyTorch and the GPU…"

_state: dict = {"task": None, "callbacks": []}


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


def device_badge_text() -> str:
    """'GPU: NVIDIA … (N GB)', 'CPU only — jobs will be slower' or a not-installed message.

    Never blocks: when only the (seconds-long) check in a separate process can
    tell, returns :data:`CHECKING_BADGE`; :meth:`JobDialogBase.refresh_device_badge`
    then fills the badge in when that check is done.
    """
    try:
        return detect.gpu_summary(block=False) or CHECKING_BADGE
    except Exception as exc:  # never let the badge break a dialog
        return f"Device unknown ({exc})"


def offer_cuda(combo, badge: str) -> None:
    """Grey out the device combo's 'cuda' entry, with the reason as its tooltip, when ``badge`` says there is
    no usable GPU (CPU only, PyTorch missing, apply-only: the installer's onnxruntime runs on the CPU); a 'cuda' choice then falls back to 'auto'."""
    index = combo.findText("cuda")
    item = combo.model().item(index) if index >= 0 else None
    if item is None:
        return
    usable = not badge.startswith(("CPU", "PyTorch", "Apply-only"))
    item.setEnabled(usable)
    item.setToolTip("" if usable else f"No CUDA GPU to use: {badge}")
    if not usable and combo.currentIndex() == index:
        combo.setCurrentText("auto")


def set_badge(label, combo, text: str) -> None:
    """Show ``text`` in the device badge ``label``: green for a GPU, amber for CPU only or apply-only (ONNX
    models on onnxruntime, no PyTorch), red when PyTorch is missing or broken; the device ``combo`` offers 'cuda' only when there is a GPU (:func:`offer_cuda`)."""
    color = "#1b5e20" if text.startswith("GPU:") else "#8a6d00" if text.startswith(("CPU", "Apply-only")) else \
        "#b00020" if text.startswith("PyTorch") else "#555555"
    label.setText(text)
    label.setStyleSheet(f"color: {color}; font-weight: bold;")
    offer_cuda(combo, text)


def refresh_badge(show: Callable[[str], None]) -> None:
    """``show(text)`` the device badge now and, when that says the (seconds-long) background check is still
    running, again with its outcome when it ends."""
    text = device_badge_text()
    show(text)
    if text == CHECKING_BADGE:
        check_in_background(lambda st: show(detect.summary_of(st)))

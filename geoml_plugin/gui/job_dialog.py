"""What every GeoML job dialog shares: device choice and badge, Run/Cancel,
progress bar, live log, error display, remembered settings, and the offer to
install PyTorch when it is missing or broken (before running, or when a job
fails with :class:`DependencyError`).

A dialog's ``.ui`` provides widgets named ``deviceCombo``, ``deviceBadge``,
``progressBar``, ``logView``, ``runButton``, ``cancelButton``, ``closeButton``
and ``helpBrowser``; the subclass implements :meth:`make_job` (validate the
form, return ``(description, job)``, or None when the user declined, e.g. to
replace an existing output) and :meth:`on_success`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional

from qgis.core import Qgis, QgsSettings
from qgis.PyQt.QtWidgets import QApplication, QDialog, QLayout, QMessageBox, QPushButton, QToolButton

from ..core.device import DEVICE_CHOICES
from ..core.errors import DependencyError, GeoMLError
from ..core.progress import Feedback
from ..deps import detect
from ..tasks import GeoMLTask
from .deps.badge import refresh_badge, set_badge
from .deps.offer import offer_install
from .messages import ask_about_running, error_level, push_to_bar
from .task_controller import TaskController, current_task_property, failure_text

SETTINGS_PREFIX = "geoml/"
CANCEL_RELEASE_MS = 1000  # Cancel gives the dialog back within about a second, whatever the job's step length


def request_cancel(owner) -> None:
    """Cancel the task of ``owner`` (a job dialog or panel with ``runner``, ``logView`` and ``cancelButton``): say
    so, ask the job to stop, and release a job still running after :data:`CANCEL_RELEASE_MS` (the owner's
    ``on_cancelled`` runs then, see :meth:`TaskController.cancel`)."""
    if not owner.runner.is_running:
        return
    owner.logView.appendPlainText("Cancelling…")
    owner.cancelButton.setEnabled(False)
    owner.runner.cancel(release_ms=CANCEL_RELEASE_MS)


def _disconnect(signal, slot) -> None:
    try:
        signal.disconnect(slot)
    except (TypeError, RuntimeError):
        pass


def _log_late_end(task: GeoMLTask) -> None:
    """A job let go of at Cancel that still ended with a result (it was past its last step): say where."""
    from ..tasks import log

    if task.error is None and task.result is not None:
        log(f"{task.description()}: it had already finished when it was cancelled; its output was kept.")


def replace_question(existing: list) -> str:
    """'x.tif exists. Replace it?' for one file; for several, every name in one question, e.g. 'These files exist
    in /data and will be replaced: m.safetensors, m_report.html. Replace them?' (full paths when their folders
    differ)."""
    if len(existing) == 1:
        return f"{existing[0]} exists. Replace it?"
    folders = {os.path.dirname(p) for p in existing}
    if len(folders) == 1:
        names = ", ".join(os.path.basename(p) for p in existing)
        return f"These files exist in {folders.pop()} and will be replaced: {names}. Replace them?"
    return f"These files exist and will be replaced: {', '.join(existing)}. Replace them?"


def add_copy_command_button(owner, command: str, slot, before=None) -> QToolButton:
    """A small "Copy as command line" tool button (the copy icon) just before ``before`` (default
    ``owner.runButton``), calling ``slot``: the job dialogs' and the panels' (the button row sets a dialog's
    minimum width)."""
    from qgis.core import QgsApplication

    button = QToolButton(owner)
    button.setObjectName("copyCommandButton")
    button.setIcon(QgsApplication.getThemeIcon("/mActionEditCopy.svg"))
    button.setText("Copy as command line")
    button.setAccessibleName("Copy as command line")
    button.setToolTip(f"Copy as command line: the `geoml {command}` command that runs this job with these "
                      "settings, for a server or cluster without QGIS (README: Command line)")
    button.clicked.connect(lambda: slot())
    before = before if before is not None else owner.runButton
    for layout in owner.findChildren(QLayout):
        if layout.indexOf(before) >= 0:
            layout.insertWidget(layout.indexOf(before), button)
            break
    return button


def copy_command_to_log(command: str, make_config, log_view) -> str:
    """Put the ``geoml <command> …`` command of ``make_config()`` on the clipboard and in ``log_view``; '' (and
    the reason in the log) when ``make_config`` raises a GeoMLError (settings not complete)."""
    from ..cli.command_line import command_line

    try:
        text = command_line(command, make_config())
    except GeoMLError as exc:
        log_view.appendPlainText(str(exc))
        return ""
    QApplication.clipboard().setText(text)
    log_view.appendPlainText("Copied to the clipboard:\n" + text)
    return text


class JobDialogBase(QDialog):
    SETTINGS_KEY = "job"
    HELP_HTML = ""
    task = current_task_property()  # the running job's task, None when idle

    def __init__(self, plugin=None, parent=None):
        super().__init__(parent)
        self.plugin = plugin
        self.setupUi(self)  # provided by the uic form class mixed in by subclasses
        for button in self.findChildren(QPushButton):  # Enter in a field must not start a job of minutes or hours
            button.setAutoDefault(False)
            button.setDefault(False)
        self.runner = TaskController()  # the job's lifecycle: start, progress, cancel, end
        self._browsed: dict = {}  # output file widget's name → the path its Browse dialog confirmed
        self.deviceCombo.addItems(list(DEVICE_CHOICES))
        self.refresh_device_badge()
        self.helpBrowser.setHtml(self.HELP_HTML)
        self.runButton.clicked.connect(self.run)
        self._add_copy_command_button()
        self.cancelButton.clicked.connect(self.cancel)
        self.closeButton.clicked.connect(self.close)
        from qgis.core import QgsProject

        QgsProject.instance().cleared.connect(self._project_cleared)
        self.destroyed.connect(lambda *_: _disconnect(QgsProject.instance().cleared, self._project_cleared))

    # settings ----------------------------------------------------------
    def settings_value(self, key: str, default: Any = None, type_=str):
        """The remembered value as ``type_``; ``default`` when it is missing or cannot be one (a hand-edited
        QGIS3.ini), including numbers no spin box takes (beyond 32 bits, NaN, infinity)."""
        v = QgsSettings().value(SETTINGS_PREFIX + self.SETTINGS_KEY + "/" + key, default)
        try:
            value = type_(v) if v is not None else default
        except (TypeError, ValueError, OverflowError):
            return default
        if type_ in (int, float) and not (math.isfinite(value) and abs(value) < 2**31):
            return default
        return value

    def set_settings_value(self, key: str, value: Any) -> None:
        QgsSettings().setValue(SETTINGS_PREFIX + self.SETTINGS_KEY + "/" + key, value)

    # output files --------------------------------------------------------
    def watch_browse(self, file_widget) -> None:
        """Remember a path chosen with ``file_widget``'s Browse button (a QgsFileWidget in SaveFile mode): its
        file dialog already asked about replacing it, so :meth:`confirm_replace` does not ask again."""
        button = next((b for b in file_widget.findChildren(QToolButton) if b.text() == "…"), None)
        if button is None:
            return
        before = {}
        button.pressed.connect(lambda: before.update(path=file_widget.filePath()))
        button.clicked.connect(lambda: self._browse_done(file_widget, before.get("path")))

    def _browse_done(self, file_widget, before: Optional[str]) -> None:
        """After the Browse dialog closed: a new path was chosen (and confirmed there) unless it is unchanged."""
        path = file_widget.filePath()
        if path and path != before and file_widget.confirmOverwrite():
            self._browsed[file_widget.objectName()] = path

    def confirm_replace(self, paths, file_widget=None) -> bool:
        """False when one of ``paths`` (every file the job writes: the output and the files beside it) exists
        and the user would rather not replace it; one question lists all that exist. The path just chosen with
        ``file_widget``'s Browse button is not asked about again (the files beside it still are); every Run
        asks anew."""
        browsed = self._browsed.pop(file_widget.objectName(), None) if file_widget is not None else None
        existing = [p for p in paths if p and p != browsed and os.path.exists(p)]
        if not existing:
            return True
        if self.ask_replace(existing):
            return True
        if browsed:
            self._browsed[file_widget.objectName()] = browsed
        return False

    def ask_replace(self, existing: list) -> bool:
        """One question naming every file in ``existing`` (:func:`replace_question`): True for Yes."""
        answer = QMessageBox.question(self, "GeoML", replace_question(existing),
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # device badge and dependencies ---------------------------------------
    def refresh_device_badge(self) -> None:
        refresh_badge(self.set_device_badge)

    def set_device_badge(self, text: str) -> None:
        """Green for a GPU, amber for CPU only, red when PyTorch is missing or broken."""
        set_badge(self.deviceBadge, self.deviceCombo, text)

    def show_dependency_problem(self, text: str) -> None:
        """Log the problem and offer the installer in the message bar."""
        self.logView.appendPlainText(text)
        if offer_install(self.plugin, text) is None:
            self.show_error(text)

    # running -----------------------------------------------------------
    def make_job(self) -> Optional[tuple[str, Callable[[Feedback], Any]]]:
        """``(description, job)``; None to go back to the form without a word (the user declined)."""
        raise NotImplementedError

    # Copy as command line ---------------------------------------------------
    COMMAND = ""  # the `geoml` subcommand of this dialog's job; with build_config, a "Copy as command line" button

    def build_config(self):
        """The job's Config from the dialog's current settings (the dialogs with a ``COMMAND`` implement it)."""
        raise NotImplementedError

    def _add_copy_command_button(self) -> None:
        if self.COMMAND:
            self.copyCommandButton = add_copy_command_button(self, self.COMMAND, self.copy_command_line)

    def copy_command_line(self) -> str:
        """Put the ``geoml …`` command of the current settings on the clipboard and in the log; '' (and the
        reason in the log) when the settings are not complete."""
        return copy_command_to_log(self.COMMAND, self.build_config, self.logView)

    def on_success(self, result: Any) -> None:
        raise NotImplementedError

    def needs_torch(self) -> bool:
        """Whether the job needs PyTorch (checked before it starts); False e.g. for an ONNX model."""
        return True

    def run(self) -> Optional[GeoMLTask]:
        if self.task is not None:
            return self.task
        problem = detect.quick_problem() if self.needs_torch() else None  # nothing imported: find_spec, or the cache
        if problem:
            self.show_dependency_problem(problem)
            return None
        try:
            made = self.make_job()
        except GeoMLError as exc:
            self.show_error(str(exc), error_level(exc))
            return None
        if made is None:  # e.g. the user would rather not replace an existing output
            return None
        description, job = made
        return self.start_job(description, job)

    def start_job(self, description: str, job: Callable[[Feedback], Any], clear_log: bool = True) -> GeoMLTask:
        """Run ``job`` as a background task; its result goes to :meth:`on_success`."""
        if clear_log:
            self.logView.clear()
        self.progressBar.setValue(0)
        self.set_running(True)
        self.logView.appendPlainText(f"{description}: started ({self.deviceBadge.text()})")
        return self.runner.start(job, description, on_progress=lambda p: self.progressBar.setValue(int(p)),
                                 on_message=self.show_message, on_detached=_log_late_end, **self._task_ends())

    @property
    def released(self) -> set:
        """Tasks let go of at Cancel that have not ended yet (see :meth:`cancel`)."""
        return self.runner.released

    def show_message(self, text: str) -> None:
        """A progress or log line of the running job: to the log."""
        self.logView.appendPlainText(text)

    def cancel(self) -> None:
        """Ask the job to stop. A job stops at its next progress step; one still running after
        :data:`CANCEL_RELEASE_MS` (a long step, e.g. a large block of a classification) is let go: the dialog
        reports it cancelled and is usable again, and the job ends in the background without calling back."""
        request_cancel(self)

    def cancelled_messages(self, task: GeoMLTask) -> tuple[str, str]:
        """(log line, message bar text) once ``task`` was cancelled: jobs write their outputs only at the end."""
        return "Cancelled; nothing was written.", "Job cancelled; nothing was written."

    def set_running(self, running: bool) -> None:
        """Run/Cancel, and the form: read-only while a job runs (a change would not reach the running job)."""
        self.runButton.setEnabled(not running)
        self.cancelButton.setEnabled(running)
        scroll = getattr(self, "formScroll", None)
        if scroll is not None and scroll.widget() is not None:
            scroll.widget().setEnabled(not running)

    def _task_ends(self) -> dict:
        """The callbacks for the end of a job (:meth:`TaskController.finish`)."""
        return dict(on_finished=self._succeeded, on_failed=self._failed, on_cancelled=self._stopped,
                    on_error=lambda exc: self.show_error(failure_text("Showing the result", exc)))

    def _done(self, task: GeoMLTask) -> None:
        """The end of ``task`` (main thread)."""
        self.runner.finish(task, **self._task_ends())

    def _succeeded(self, task: GeoMLTask) -> None:
        self.set_running(False)
        self.progressBar.setValue(100)
        self.on_success(task.result)

    def _failed(self, task: GeoMLTask) -> None:
        self.set_running(False)
        self.logView.appendPlainText("Failed: " + task.error_text())
        if isinstance(task.error, DependencyError):
            detect.invalidate()
            self.show_dependency_problem(task.error_text())
        else:
            self.show_error(task.error_text(), error_level(task.error))

    def _stopped(self, task: GeoMLTask) -> None:
        """Cancelled: the job stopped, or was let go of at Cancel."""
        self.set_running(False)
        self._cancelled(task)

    def _cancelled(self, task: GeoMLTask) -> None:
        self.progressBar.setValue(0)
        line, bar = self.cancelled_messages(task)
        self.logView.appendPlainText(line)
        self.push_message(bar, Qgis.MessageLevel.Info)  # the user's doing: neither a warning nor a failure

    # messages ----------------------------------------------------------
    def push_message(self, text: str, level=Qgis.MessageLevel.Info) -> None:
        push_to_bar(self.plugin, text, level, 8)

    def show_error(self, text: str, level=Qgis.MessageLevel.Critical) -> None:
        """``text`` in the log and the message bar; ``level`` Warning for a user's slip (:func:`error_level`)."""
        self.logView.appendPlainText(text)
        if not push_to_bar(self.plugin, text, level, 0) and self.isVisible():
            QMessageBox.warning(self, "GeoML", text)

    def clear_feedback(self) -> None:
        """Progress, log and status of the last run, gone (a reopened dialog or a new project starts clean)."""
        self.progressBar.setValue(0)
        self.logView.clear()
        status = getattr(self, "statusLabel", None)
        if status is not None:
            status.setText("")

    def _project_cleared(self) -> None:
        if self.task is None:
            self.clear_feedback()

    def hideEvent(self, event):  # noqa: N802
        super().hideEvent(event)
        if not event.spontaneous():  # closed, not minimised: reopened idle, it starts clean
            self._stale = self.task is None

    def showEvent(self, event):  # noqa: N802
        super().showEvent(event)
        if getattr(self, "_stale", False) and self.task is None and not event.spontaneous():
            self.clear_feedback()
        self._stale = False
        if not getattr(self, "_fitted", False):
            self._fitted = True
            screen = self.screen() if hasattr(self, "screen") else None
            if screen is not None:
                self.fit_to_screen(screen.availableGeometry())
        self.refresh_device_badge()  # e.g. after Install dependencies while the dialog was hidden

    def fit_to_screen(self, available) -> None:
        """Grow the dialog so the whole form shows without scrolling, within 90 percent of the screen
        (``available``: its available geometry); on a small screen the form scrolls instead."""
        scroll = getattr(self, "formScroll", None)
        if scroll is None or scroll.widget() is None:
            return
        max_w, max_h = int(available.width() * 0.9), int(available.height() * 0.9)
        for _ in range(6):  # the form gets only its share of added height (stretch): grow until it fits
            self.layout().activate()
            hint = scroll.widget().sizeHint()
            dw, dh = hint.width() - scroll.viewport().width(), hint.height() - scroll.viewport().height()
            w, h = min(self.width() + max(0, dw), max_w), min(self.height() + max(0, dh), max_h)
            if (w, h) == (self.width(), self.height()):
                break
            self.resize(w, h)

    def ask_about_running_job(self) -> str:
        """Closing while a job runs: 'background' (keep it running, the dialog hides and adds the result when
        the job ends), 'cancel' (cancel it and close) or 'stay' (do not close)."""
        return ask_about_running(self, "A job is still running.",
                                 "Keep it running in the background (progress in QGIS's task bar; the result is "
                                 "added to the map when it ends), or cancel it?", "Keep running", "Cancel job")

    def reject(self) -> None:
        """Escape, Close and the window's close box (QDialog's closeEvent calls this): while a job runs,
        ask whether to keep it running in the background, cancel it, or stay."""
        if self.task is not None and not self.task.isCanceled():
            choice = self.ask_about_running_job()
            if choice == "stay":
                return
            if choice == "cancel":
                self.runner.cancel()
        super().reject()

"""Background jobs as QgsTask: progress, cancel, results back on the main thread.

A job is a plain core function ``job(feedback) -> result``. :class:`GeoMLTask`
runs it on a QGIS worker thread, turns the task's progress and cancel into
the core :class:`Feedback` protocol, and calls ``on_done(task)`` from
``finished()``, i.e. on the main thread, where adding layers and touching
widgets is safe. The worker thread never touches widgets or the project.
Dialogs and panels do not use it directly: ``gui/task_controller.py`` gives
them one lifecycle (start, progress, cancel, end, detach) around it.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .core.errors import GeoMLError, InputError, JobCancelled, internal_error_message
from .core.progress import Feedback

LOG_TAG = "GeoML"
_running: set = set()  # keep Python wrappers alive while QGIS runs them


def log(message: str, level=Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class GeoMLTask(QgsTask):
    """Runs ``job(feedback)`` in the background; see module docstring."""

    message = pyqtSignal(str)  # progress text, delivered queued to the GUI thread
    percent = pyqtSignal(float)  # progress 0..100 (as progressChanged), for the dialog's progress bar
    keep_on_unload = False  # True: not cancelled by :func:`cancel_all` (its callbacks outlive the dialogs)

    def __init__(self, description: str, job: Callable[[Feedback], Any],
                 on_done: Optional[Callable[["GeoMLTask"], None]] = None):
        super().__init__(description, QgsTask.Flag.CanCancel)
        from .thread_settings import configure_from_qgis

        configure_from_qgis()  # the setting geoml/threads as it is now; the job applies it in its thread
        self._job = job
        self.on_done = on_done  # called with the task when it ends (main thread); None once detached
        self.on_detached: Optional[Callable[["GeoMLTask"], None]] = None  # see detach()
        self._detached = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.traceback: str = ""
        self.log_lines: list[str] = []

    # worker thread ---------------------------------------------------------
    def run(self) -> bool:
        def on_progress(fraction: float, text: str) -> None:
            self.setProgress(fraction * 100.0)
            self.percent.emit(fraction * 100.0)
            if text:
                self.message.emit(text)

        def on_log(text: str) -> None:
            self.log_lines.append(text)
            log(f"{self.description()}: {text}")
            self.message.emit(text)

        fb = Feedback(on_progress, on_log, self.isCanceled)
        try:
            self.result = self._job(fb)
            return True
        except JobCancelled as exc:
            # the user's doing, not a failure: returning False would make QGIS announce "Task failed"
            self.error = exc
            return True
        except GeoMLError as exc:
            self.error = exc
        except MemoryError as exc:
            self.error = GeoMLError("The job ran out of memory.", "Use a smaller batch size or area.")
            self.traceback = repr(exc)
        except Exception as exc:  # the last line of defence: a bug; keep the traceback for the log
            self.error = exc
            self.traceback = traceback.format_exc()
        return False

    # main thread -----------------------------------------------------------
    def finished(self, ok: bool) -> None:
        _running.discard(self)
        if not ok and self.error is None:
            self.error = JobCancelled()
        if self.traceback:
            log(f"{self.description()} failed:\n{self.traceback}", Qgis.MessageLevel.Critical)
        if self.on_done is not None:
            self.on_done(self)
        elif self._detached and self.on_detached is not None:
            self.on_detached(self)

    def detach(self) -> None:
        """Stop telling anyone: ``on_done`` and the ``percent``/``message`` slots are dropped
        (their dialog is being deleted, e.g. at plugin unload). ``on_detached(task)``, if set, is called
        instead of ``on_done`` (main thread, needing no widget): e.g. to delete a result no one will show."""
        self.on_done = None
        self._detached = True
        for signal in (self.percent, self.message):
            try:
                signal.disconnect()
            except TypeError:  # nothing connected
                pass

    @property
    def detached(self) -> bool:
        """Let go of by its widget (:meth:`detach`): its end reaches only ``on_detached``."""
        return self._detached

    @property
    def failed_on_input(self) -> bool:
        """The job refused its input (a user's slip, e.g. too few labels): a warning, not a failure."""
        return isinstance(self.error, InputError)

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, JobCancelled) or (self.error is None and self.isCanceled())

    def error_text(self) -> str:
        if self.error is None:
            return ""
        if isinstance(self.error, GeoMLError):
            return str(self.error)
        return internal_error_message(self.error)


def cancel_all() -> None:
    """Cancel and detach every running task started from a dialog or panel (plugin unload deletes
    them: a task finishing later must not call back into deleted widgets)."""
    for task in list(_running):
        if not task.keep_on_unload:
            task.detach()
            task.cancel()


def start_task(task: GeoMLTask) -> GeoMLTask:
    _running.add(task)
    QgsApplication.taskManager().addTask(task)
    return task

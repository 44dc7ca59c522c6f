"""One task lifecycle for every dialog and panel that runs a background job.

A widget owns one :class:`TaskController` and runs at most one current task through it:

* :meth:`~TaskController.start` wraps a core job ``job(feedback) -> result`` in a :class:`GeoMLTask`, routes its
  progress (percent) and messages to the widget while it is the current task, and calls exactly one of
  ``on_finished``, ``on_failed`` or ``on_cancelled`` with the task when it ends: on the main thread, where adding
  layers and touching widgets is safe (the task itself never touches them).
* An exception raised by those callbacks (e.g. adding the result layers failed) goes to ``on_error``: a message,
  never QGIS's Python error dialog (without ``on_error`` it is logged).
* :meth:`~TaskController.cancel` asks the job to stop; with ``release_ms`` a job still running after that long (a
  long step) is *released*: it is detached, ``on_cancelled`` runs at once and the widget is usable again, while the
  job ends in the background unheard.
* :meth:`~TaskController.detach` lets go of the task (the widget closes or is reset while it runs on): nothing of
  the widget is called any more; ``on_detached(task)``, which needs no widget, runs on the main thread when the
  task ends (e.g. to delete a result that no one will show). Plugin unload (:func:`tasks.cancel_all`) detaches
  tasks the same way.
* A task that is no longer current (superseded by a newer start, released or detached) is heard no more: its
  progress and end are dropped.

Widgets keep ``self.task`` (the current task, None when idle) as a view of :attr:`TaskController.task`:
see :func:`current_task_property`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from qgis.PyQt.QtCore import QTimer

from ..core.errors import GeoMLError
from ..core.progress import Feedback
from ..tasks import GeoMLTask, start_task

TaskCallback = Optional[Callable[[GeoMLTask], None]]


def failure_text(what: str, exc: BaseException) -> str:
    """What the user reads when showing a result failed: a :class:`GeoMLError`'s own message; for anything else
    (a bug) ``'<what> failed: …'``, with the traceback in the GeoML message log."""
    from .messages import unexpected_failure

    return str(exc) if isinstance(exc, GeoMLError) else unexpected_failure(what, exc)


def _log_failure(what: str, exc: BaseException) -> None:
    from .messages import unexpected_failure

    unexpected_failure(what, exc)  # in the GeoML message log, with its traceback


class TaskController:
    """Runs one background task at a time for a widget; see the module docstring."""

    def __init__(self) -> None:
        self.task: Optional[GeoMLTask] = None  # the current task; None when idle
        self.released: set = set()  # tasks let go of at Cancel that have not ended yet
        self._on_released: TaskCallback = None  # the current task's on_cancelled, for a release

    @property
    def is_running(self) -> bool:
        return self.task is not None

    # starting ----------------------------------------------------------------
    def start(self, job: Callable[[Feedback], Any], description: str, *,
              on_progress: Optional[Callable[[float], None]] = None,
              on_message: Optional[Callable[[str], None]] = None,
              on_finished: TaskCallback = None, on_failed: TaskCallback = None, on_cancelled: TaskCallback = None,
              on_error: Optional[Callable[[Exception], None]] = None, on_detached: TaskCallback = None) -> GeoMLTask:
        """Run ``job`` in the background as the current task (a task still current is superseded: its end is
        dropped; cancel it first if it should stop). ``on_progress(percent)`` and ``on_message(text)`` get its
        progress while it is current; at its end ``on_finished(task)`` (``task.result``; a job that ignored a late
        Cancel also ends here, see ``task.cancelled``), ``on_cancelled(task)`` or ``on_failed(task)`` (a clear
        text in ``task.error_text()``, never a traceback) runs on the main thread."""
        ends = dict(on_finished=on_finished, on_failed=on_failed, on_cancelled=on_cancelled, on_error=on_error)
        task = GeoMLTask(description, job, lambda t: self.finish(t, **ends))
        return self.adopt(task, on_progress=on_progress, on_message=on_message, on_cancelled=on_cancelled,
                          on_detached=on_detached)

    def adopt(self, task: GeoMLTask, *, on_progress: Optional[Callable[[float], None]] = None,
              on_message: Optional[Callable[[str], None]] = None, on_cancelled: TaskCallback = None,
              on_detached: TaskCallback = None) -> GeoMLTask:
        """Start a task made by the caller (its ``on_done`` handles its end, e.g. through :meth:`finish`) as the
        current task: its end reaches ``on_done`` only while it is current. ``on_cancelled`` is for a release
        (:meth:`cancel`); ``on_detached`` as in :meth:`start`."""
        own_end = task.on_done
        task.on_done = lambda t: self._ended(t, own_end)
        task.on_detached = lambda t: self._ended_detached(t, on_detached)
        if on_progress is not None:
            task.percent.connect(lambda p, t=task: self.task is t and on_progress(p))
        if on_message is not None:
            task.message.connect(lambda m, t=task: self.task is t and on_message(m))
        self.task = task
        self._on_released = on_cancelled
        return start_task(task)

    # ending --------------------------------------------------------------------
    def finish(self, task, *, on_finished: TaskCallback = None, on_failed: TaskCallback = None,
               on_cancelled: TaskCallback = None, on_error: Optional[Callable[[Exception], None]] = None) -> None:
        """The end of ``task`` (main thread): it is no longer current; then ``on_finished`` when the job returned,
        ``on_cancelled`` when it was cancelled, else ``on_failed``. An exception in them goes to ``on_error``."""
        if self.task is task:
            self.task = None
        if task.error is None:
            callback = on_finished
        elif task.cancelled:
            callback = on_cancelled
        else:
            callback = on_failed
        self._call(callback, task, on_error)

    def _ended(self, task: GeoMLTask, own_end: TaskCallback) -> None:
        if task is not self.task:
            return  # superseded by a newer task: no one waits for this one
        if own_end is None:
            self.task = None
        else:
            own_end(task)

    def _ended_detached(self, task: GeoMLTask, on_detached: TaskCallback) -> None:
        """A task let go of (released, detached, plugin unload) ended: nothing of its widget is touched."""
        self.released.discard(task)
        if self.task is task:  # detached from outside (plugin unload): no longer running here
            self.task = None
        self._call(on_detached, task, None)

    @staticmethod
    def _call(callback, task, on_error) -> None:
        if callback is None:
            return
        try:
            callback(task)
        except Exception as exc:  # a message, not QGIS's Python error dialog; the widget stays usable
            if on_error is None:
                _log_failure("Handling the end of a background task", exc)
                return
            try:
                on_error(exc)
            except Exception as again:  # e.g. the widget is gone: the log keeps both
                _log_failure("Handling the end of a background task", exc)
                _log_failure("Reporting that failure", again)

    # cancelling and letting go --------------------------------------------------------
    def cancel(self, release_ms: Optional[int] = None) -> bool:
        """Ask the current task to stop (it ends at its next progress step, through ``on_cancelled``); False when
        none runs. With ``release_ms``, a task still running that long after is released (see module docstring)."""
        task = self.task
        if task is None:
            return False
        task.cancel()
        if release_ms is not None:
            QTimer.singleShot(release_ms, lambda: self._release(task))
        return True

    def _release(self, task: GeoMLTask) -> None:
        if self.task is not task or task.error is not None:
            return  # it ended (its end ran or is queued), or it was superseded or detached
        on_released = self._on_released
        task.detach()
        self.released.add(task)
        self.task = None
        self._call(on_released, task, None)

    def detach(self, cancel: bool = False) -> None:
        """Let go of the current task (the widget is closed, deleted or reset while it runs): it runs on (or is
        cancelled too, with ``cancel``) and its progress and end no longer reach the widget."""
        task, self.task = self.task, None
        if task is None:
            return
        task.detach()
        if cancel:
            task.cancel()


def current_task_property(controller: str = "runner") -> property:
    """``widget.task``: the current task of the widget's controller (attribute ``controller``), None when idle.
    Setting it makes a task current without starting it (e.g. a test standing in a running task)."""
    return property(lambda self: getattr(self, controller).task,
                    lambda self, task: setattr(getattr(self, controller), "task", task),
                    doc="The task running for this widget, None when idle (see TaskController).")

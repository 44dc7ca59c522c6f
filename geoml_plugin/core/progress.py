"""The progress / cancel protocol every GeoML job takes.

A job receives a :class:`Feedback` and calls ``feedback.progress(fraction,
message)`` as it goes; that call raises :class:`JobCancelled` once the user
has asked to cancel, so a job stops at its next progress report without
special code. ``feedback.log`` writes a line to the job log (QGIS task log,
Processing log, or stdout in scripts). ``feedback.sub(a, b)`` gives a child
that maps its own 0..1 onto ``a..b`` of the parent, so nested steps compose.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from .errors import JobCancelled

ProgressFn = Callable[[float, str], None]
LogFn = Callable[[str], None]
CancelFn = Callable[[], bool]


class Feedback:
    def __init__(
        self,
        on_progress: Optional[ProgressFn] = None,
        on_log: Optional[LogFn] = None,
        is_cancelled: Optional[CancelFn] = None,
    ):
        self._on_progress = on_progress
        self._on_log = on_log
        self._is_cancelled = is_cancelled or (lambda: False)
        self._start, self._span = 0.0, 1.0
        self.last_fraction = 0.0
        self.last_message = ""

    # -- protocol -----------------------------------------------------------
    def cancelled(self) -> bool:
        return bool(self._is_cancelled())

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the user asked to cancel."""
        if self.cancelled():
            raise JobCancelled()

    def progress(self, fraction: float, message: str = "") -> None:
        self.check()
        fraction = min(max(float(fraction), 0.0), 1.0)
        total = self._start + self._span * fraction
        self.last_fraction, self.last_message = total, message
        if self._on_progress is not None:
            self._on_progress(total, message)

    def done(self, message: str = "done") -> None:
        """Report completion once the outputs are written: a cancel arriving now is too late to undo them,
        so unlike :meth:`progress` this never raises."""
        self.last_fraction, self.last_message = self._start + self._span, message
        if self._on_progress is not None:
            self._on_progress(self.last_fraction, message)

    def log(self, message: str) -> None:
        if self._on_log is not None:
            self._on_log(message)

    def sub(self, start: float, end: float) -> "Feedback":
        child = Feedback(self._on_progress, self._on_log, self._is_cancelled)
        child._start = self._start + self._span * start
        child._span = self._span * (end - start)
        return child


class PrintFeedback(Feedback):
    """Feedback for scripts and the demo: prints log lines and coarse progress."""

    def __init__(self, prefix: str = "", every_s: float = 2.0, is_cancelled: Optional[CancelFn] = None):
        self._last = 0.0

        def _progress(f: float, msg: str) -> None:
            now = time.monotonic()
            if now - self._last >= every_s or f >= 1.0:
                self._last = now
                print(f"{prefix}{f * 100:5.1f}%  {msg}", flush=True)

        super().__init__(_progress, lambda m: print(f"{prefix}{m}", flush=True), is_cancelled)


def ensure_feedback(feedback: Optional[Feedback]) -> Feedback:
    return feedback if feedback is not None else Feedback()

"""The remaining time of a training run, as the dialog and the log show it ("about 6 min left").

Estimated from the run itself: the mean time of the training steps so far times the steps left (each step
weighted by its epoch's relative cost, when epochs differ: fine-tuning's last epochs see each window with its
context, 2.25× the pixels for 64-px windows), plus the
validation passes still to come (the last one measured; before the first, guessed as a third of a training
step per validated sample-batch, a forward pass only). It is shown once a few steps are done (``MIN_STEPS``,
or the first epoch when epochs are shorter), so the first one-off costs (threads and kernels warming up)
weigh little.

A shown estimate never goes up by a little: a later estimate replaces it when it is lower, or when it is
more than ``RAISE_ABOVE`` × the shown one (the machine got busier: the analyst is told), so the countdown the
analyst watches decreases steadily instead of flickering with every slower batch.
"""
from __future__ import annotations

import time
from typing import Optional

MIN_STEPS = 10
RAISE_ABOVE = 1.25
_clock = time.perf_counter  # replaced in tests by a deterministic clock


def duration_text(seconds: float) -> str:
    """'3 s', '40 s', '3 min', '1 h 5 min': a rounded duration for an estimate or a time spent."""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{max(1, int(round(seconds)))} s"
    if seconds < 60:
        return f"{int(round(seconds / 5.0)) * 5} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def format_remaining(seconds: float) -> str:
    """'about 40 s left', 'about 1 min left', 'about 6 min left', 'about 2 h 10 min left'."""
    return f"about {duration_text(seconds)} left"


class RemainingTime:
    """Remaining-time estimate of ``epochs`` epochs of ``steps_per_epoch`` steps (see the module docstring)."""

    def __init__(self, epochs: int, steps_per_epoch: int, val_batches: int = 0, epoch_costs=None,
                 val_epochs=None):
        self.epochs, self.steps_per_epoch = int(epochs), max(1, int(steps_per_epoch))
        self.val_batches = int(val_batches)  # validation batches of a validation pass
        # the epochs (0-based) followed by a validation pass, the last one being the final evaluation (default: all)
        self.val_epochs = sorted(int(e) for e in val_epochs) if val_epochs is not None else list(range(self.epochs))
        # relative cost of a step in each epoch (e.g. 2.25 for epochs that see 96 px where the others see 64)
        self.costs = [float(c) for c in epoch_costs] if epoch_costs is not None else [1.0] * self.epochs
        if len(self.costs) < self.epochs:
            self.costs += [self.costs[-1] if self.costs else 1.0] * (self.epochs - len(self.costs))
        self.units_done = 0.0  # steps done, each weighted by its epoch's cost
        self.steps_done = 0
        self.step_seconds = 0.0
        self.val_seconds: Optional[float] = None  # the last validation pass measured
        self.epoch = 0  # the epoch under way (0-based)
        self.in_epoch = 0  # its steps done
        self.shown: Optional[float] = None
        self.reported: list = []  # every estimate shown, in seconds
        self._t = None
        self._v = 0.0

    def start_epoch(self, epoch: int, steps_per_epoch: Optional[int] = None) -> None:
        self.epoch, self.in_epoch = int(epoch), 0
        if steps_per_epoch:
            self.steps_per_epoch = max(1, int(steps_per_epoch))
        self._t = _clock()

    def step(self) -> None:
        now = _clock()
        if self._t is not None:
            self.step_seconds += now - self._t
        self._t = now
        self.steps_done += 1
        self.units_done += self.costs[min(self.epoch, self.epochs - 1)] if self.costs else 1.0
        self.in_epoch += 1

    def validation_started(self) -> None:
        self._v = _clock()

    def validation_done(self) -> None:
        self.val_seconds = _clock() - self._v

    def estimate(self) -> Optional[float]:
        """Seconds left, or None while too few steps are done."""
        if self.steps_done == 0 or self.steps_done < min(MIN_STEPS, self.steps_per_epoch):
            return None
        per_unit = self.step_seconds / max(self.units_done, 1e-12)
        here = self.costs[self.epoch] if self.epoch < len(self.costs) else 0.0
        units_left = (max(0, self.steps_per_epoch - self.in_epoch) * here
                      + self.steps_per_epoch * sum(self.costs[self.epoch + 1:self.epochs]))
        per_step = self.step_seconds / self.steps_done
        val = self.val_seconds if self.val_seconds is not None else self.val_batches * per_step / 3
        # the validation passes after this epoch and the ones after it
        passes_left = sum(1 for e in self.val_epochs if e >= self.epoch) if self.val_batches else 0
        return units_left * per_unit + passes_left * val

    def text(self) -> str:
        """The estimate to show (never up by a little; see the module docstring), or '' while there is none."""
        est = self.estimate()
        if est is None:
            return ""
        if self.shown is None or est < self.shown or est > RAISE_ABOVE * self.shown:
            self.shown = est
        self.reported.append(self.shown)
        return format_remaining(self.shown)

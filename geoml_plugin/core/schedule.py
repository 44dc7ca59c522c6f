"""Learning-rate schedules: warm-up, then cosine decay (one helper for fine-tuning and meta-training).

Fine-tuning uses a OneCycle-style schedule (``warmup`` 0.15: a cosine rise from base/25 to base, then a
cosine fall to base/1e4); meta-training a plain cosine decay from base towards 0 (no warm-up), per
iteration. ``tests/core/test_augment.py`` pins both against the formulas they replaced, to the last bit
(the benchmark figures were measured with them).
"""
from __future__ import annotations

import math


def warmup_cosine(base: float, step: float, total: float, warmup: float = 0.0,
                  start_div: float = 25.0, end_div: float = math.inf) -> float:
    """The learning rate after ``step`` of ``total`` steps (clamped to 0 .. total).

    For the first ``warmup`` fraction of the run: a half cosine from ``base / start_div`` up to ``base``;
    then a half cosine from ``base`` down to ``base / end_div`` (0 by default), reached at
    ``step == total``."""
    t = min(max(step / total, 0.0), 1.0)
    if warmup > 0 and t < warmup:
        lo, u = base / start_div, t / warmup
        return lo + (base - lo) * (1 - math.cos(math.pi * u)) / 2
    end = base / end_div
    if warmup > 0:
        angle = math.pi * ((t - warmup) / max(1e-9, 1 - warmup))
    else:  # written as meta-training always computed it (π·step/total, not π·(step/total): they round apart)
        angle = math.pi * min(max(step, 0), total) / total
    return end + (base - end) * (1 + math.cos(angle)) / 2

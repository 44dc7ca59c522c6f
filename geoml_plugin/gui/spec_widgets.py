"""Dialog widgets set up from a job's parameter specification (``core/spec.py``): range, default and tooltip.

A spin box's range in the Designer layout is overridden here, so the specification wins; a side the
specification leaves open keeps the layout's bound (a spin box needs one). The default is what a dialog shows
when no value of the user's is remembered: ``spec_default(FinetuneConfig, "batch_size")`` replaces a number
written into the dialog.
"""
from __future__ import annotations

import math
from typing import Any

from ..core.spec import plain_help, shell_default, shell_minimum, spec_help, spec_of


def spec_default(config_class, field_name: str) -> Any:
    """The value a dialog shows for ``field_name`` when none is remembered (``auto`` for an automatic one)."""
    return shell_default(config_class, field_name)


def spin_range(spec, decimals: int | None = None) -> tuple:
    """(lowest, highest) a spin box may offer for ``spec``, None for a side the spec leaves open. With
    ``decimals`` (a QDoubleSpinBox), an exclusive bound becomes the nearest value the box can show inside it
    (below 1 with 2 decimals: 0.99), and a bound finer than the box shows is rounded inward."""
    lo, hi = shell_minimum(spec), spec.maximum
    if decimals is None:
        return lo, hi
    step = 10.0 ** -decimals
    if lo is not None:
        lo = math.ceil(round(lo / step, 6)) * step
        if spec.minimum_exclusive and spec.auto is None and lo <= spec.minimum:
            lo += step
        lo = round(lo, decimals)
    if hi is not None:
        hi = math.floor(round(hi / step, 6)) * step
        if spec.maximum_exclusive and hi >= spec.maximum:
            hi -= step
        hi = round(hi, decimals)
    return lo, hi


def apply_spec(widget, config_class, field_name: str, tooltip: bool = True) -> None:
    """Give ``widget`` the range (spin boxes), items (combo boxes without items) and tooltip of ``field_name``.
    The tooltip comes from the spec's help when the layout gives the widget none (a dialog's own wording stays)."""
    spec = spec_of(config_class, field_name)
    if hasattr(widget, "setRange"):
        decimals = widget.decimals() if hasattr(widget, "decimals") else None
        lo, hi = spin_range(spec, decimals)
        lo, hi = (widget.minimum() if lo is None else lo), (widget.maximum() if hi is None else hi)
        widget.setRange(*((lo, hi) if decimals is not None else (int(lo), int(hi))))
    elif hasattr(widget, "addItem") and spec.choices and widget.count() == 0:
        for value, label in zip(spec.choices, spec.choice_labels):
            widget.addItem(label, value)
    if tooltip and not widget.toolTip():
        help_text = plain_help(spec_help(config_class, field_name))
        if help_text:
            widget.setToolTip(help_text)

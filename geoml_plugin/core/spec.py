"""One specification per tool parameter: default, valid range, choices and help, on the job's Config field.

A job Config declares a parameter with :func:`param`::

    batch_size: int = param(16, label="Batch size", help="<b>Batch size</b>: windows per pass.", minimum=1)

and every place that shows or checks the parameter reads it from there: the Processing algorithm builds its
parameter and help (``processing/spec_params.py``), the dialogs take their default, range and tooltip
(``gui/spec_widgets.py``), the job refuses a value out of range (:func:`validate`), and a command line can build
its options from :func:`tool_params`.

The shells cannot show ``None``: where the core takes ``None`` for "automatic" (a stride chosen from the patch),
the spec names the value the shells show for it instead (``auto=0``); :func:`shell_default`,
:func:`shell_minimum` and :func:`to_core` convert. Pure Python: no Qt, no QGIS.
"""
from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass
from typing import Any, Optional

from .errors import InputError

KEY = "geoml"  # the metadata key of a field's ParamSpec


@dataclass(frozen=True)
class ParamSpec:
    """What a shell needs to offer one job parameter and what the core accepts for it."""

    label: str  # Processing's parameter description (also the dialogs' wording where they have none)
    help: str = ""  # one paragraph of the tool's help, plain text or light HTML as Processing shows it
    name: str = ""  # Processing / command-line name; default the field name upper-case
    kind: str = ""  # "int", "float", "bool", "str" or "enum"; default from the default value
    minimum: Optional[float] = None  # valid range of the core (inclusive unless *_exclusive)
    maximum: Optional[float] = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    choices: tuple = ()  # the values an "enum" takes, in the order the shells list them
    choice_labels: tuple = ()  # what the shells show for each choice
    advanced: bool = False  # folded under "Advanced parameters" in Processing
    auto: Any = None  # the value the shells show where the core takes None ("automatic")
    optional: bool = False  # a text parameter that may be left empty
    help_of: str = ""  # the field whose help paragraph also describes this one

    @property
    def title(self) -> str:
        """The label without its parenthesised hints: "Stride for patch classifiers (pixels, 0 = automatic)"
        → "Stride for patch classifiers"; used in messages."""
        return self.label.split(" (", 1)[0].strip()

    def describe_range(self) -> str:
        """The valid values in words: "at least 1", "from 8 to 1024", "at least 0 and below 1", "one of a, b"."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo = hi = ""
        if self.minimum is not None:
            lo = f"above {self.minimum:g}" if self.minimum_exclusive else f"at least {self.minimum:g}"
        if self.maximum is not None:
            hi = f"below {self.maximum:g}" if self.maximum_exclusive else f"at most {self.maximum:g}"
        if lo and hi and not self.minimum_exclusive and not self.maximum_exclusive:
            return f"from {self.minimum:g} to {self.maximum:g}"
        return " and ".join(p for p in (lo, hi) if p) or "any value"


def param(default: Any, *, label: str, help: str = "", minimum: Optional[float] = None,  # noqa: A002 - the word
          maximum: Optional[float] = None, choices: Any = None, name: str = "", advanced: bool = False,
          auto: Any = None, kind: str = "", minimum_exclusive: bool = False, maximum_exclusive: bool = False,
          optional: bool = False, help_of: str = "") -> Any:
    """A dataclass field with its :class:`ParamSpec` in the metadata. ``choices``: a sequence of values, of
    (value, label) pairs, or a dict value → label. A list default is given through a default_factory."""
    values: tuple = ()
    labels: tuple = ()
    if choices is not None:
        items = list(choices.items()) if isinstance(choices, dict) else list(choices)
        if items and all(isinstance(c, tuple) and len(c) == 2 for c in items):
            values, labels = tuple(v for v, _ in items), tuple(str(t) for _, t in items)
        else:
            values, labels = tuple(items), tuple(str(v) for v in items)
    if not kind:
        kind = "enum" if values else _kind_of(default)
    spec = ParamSpec(label=label, help=help, name=name, kind=kind, minimum=minimum, maximum=maximum,
                     minimum_exclusive=minimum_exclusive, maximum_exclusive=maximum_exclusive, choices=values,
                     choice_labels=labels, advanced=advanced, auto=auto, optional=optional, help_of=help_of)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={KEY: spec})
    return dataclasses.field(default=default, metadata={KEY: spec})


def _kind_of(default: Any) -> str:
    for t, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, t):
            return kind
    raise TypeError(f"Give the kind of a parameter whose default is {default!r}.")


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _with_name(f: dataclasses.Field) -> ParamSpec:
    spec = f.metadata[KEY]
    return spec if spec.name else dataclasses.replace(spec, name=f.name.upper())


def tool_params(config_class) -> list:
    """(field name, ParamSpec, default) of every specified field of ``config_class``, in declaration order."""
    return [(f.name, _with_name(f), _default_of(f)) for f in dataclasses.fields(config_class) if KEY in f.metadata]


def spec_of(config_class, field_name: str) -> ParamSpec:
    """The ParamSpec of ``config_class.field_name``; KeyError when that field has none."""
    for f in dataclasses.fields(config_class):
        if f.name == field_name:
            if KEY not in f.metadata:
                raise KeyError(f"{config_class.__name__}.{field_name} has no parameter specification.")
            return _with_name(f)
    raise KeyError(f"{config_class.__name__} has no field '{field_name}'.")


def default_of(config_class, field_name: str) -> Any:
    """The core default of ``config_class.field_name``."""
    return next(_default_of(f) for f in dataclasses.fields(config_class) if f.name == field_name)


def shell_default(config_class, field_name: str) -> Any:
    """The default as the shells show it: ``auto`` for a None default, "3x2" for a (columns, rows) "tiles" pair,
    the value otherwise (for an "enum" the value; :func:`choice_index` gives its position)."""
    spec = spec_of(config_class, field_name)
    value = default_of(config_class, field_name)
    if spec.kind == "tiles":
        return "x".join(str(v) for v in value)
    return spec.auto if value is None and spec.auto is not None else value


def shell_minimum(spec: ParamSpec) -> Optional[float]:
    """The smallest value a shell offers: the valid minimum, or the ``auto`` value when that is below it
    (stride: 0 = automatic, valid strides from 1)."""
    if spec.auto is not None and not isinstance(spec.auto, bool) and isinstance(spec.auto, (int, float)):
        return spec.auto if spec.minimum is None else min(spec.minimum, spec.auto)
    return spec.minimum


def choice_index(config_class, field_name: str, value: Any = None) -> int:
    """Position of ``value`` (default: the default) among the field's choices; 0 when it is not one."""
    spec = spec_of(config_class, field_name)
    value = default_of(config_class, field_name) if value is None else value
    return spec.choices.index(value) if value in spec.choices else 0


def to_core(config_class, field_name: str, value: Any) -> Any:
    """A shell value → the core's: the ``auto`` value becomes None."""
    spec = spec_of(config_class, field_name)
    if spec.auto is not None and value == spec.auto and default_of(config_class, field_name) is None:
        return None
    return value


def spec_help(config_class, field_name: str) -> str:
    """The help paragraph that describes ``field_name`` (its own, or the one of ``help_of``)."""
    spec = spec_of(config_class, field_name)
    return spec_of(config_class, spec.help_of).help if spec.help_of else spec.help


def plain_help(text: str) -> str:
    """Help without its HTML tags and entities (tooltips, command-line help)."""
    return html.unescape(re.sub(r"<[^>]+>", "", text or "")).strip()


def _out_of_range(spec: ParamSpec, value: float) -> bool:
    if spec.minimum is not None and (value <= spec.minimum if spec.minimum_exclusive else value < spec.minimum):
        return True
    return spec.maximum is not None and (value >= spec.maximum if spec.maximum_exclusive else value > spec.maximum)


def validate(cfg, skip: tuple = ()) -> None:
    """Refuse a field of ``cfg`` outside its specified range or choices, with an :class:`InputError` that names
    the parameter (its label and Processing name) and the valid values. None (automatic, not given) passes;
    fields in ``skip`` are not checked (parameters that do not apply to this run)."""
    for field_name, spec, _default in tool_params(type(cfg)):
        value = getattr(cfg, field_name)
        if field_name in skip or value is None:
            continue
        if spec.choices:
            if value not in spec.choices:
                raise InputError(f"{spec.title} ({spec.name}) '{value}' is not one of its choices.",
                                 f"Choose {spec.describe_range()}.")
        elif spec.kind in ("int", "float") and not isinstance(value, bool) and isinstance(value, (int, float)):
            if value != value or _out_of_range(spec, value):  # NaN is never in range
                raise InputError(f"{spec.title} ({spec.name}) must be {spec.describe_range()}; it is {value:g}.")

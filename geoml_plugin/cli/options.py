"""Command-line options built from a job's parameter specification (``core/spec.py``).

The option of a field is its Processing name in lower case with dashes (``LABEL_FIELD`` → ``--label-field``),
with the same default (as the shells show it: 0 for "automatic"), range, choices (given by value:
``--views 8``) and help (its HTML stripped). :func:`add_spec_options` adds them to a parser, :func:`spec_values`
turns the parsed values into the Config's keyword arguments (``auto`` values become None as in Processing).
"""
from __future__ import annotations

import argparse
import re
from typing import Any

from ..core.spec import ParamSpec, default_of, plain_help, shell_default, shell_minimum, spec_help, tool_params


def option_name(spec: ParamSpec) -> str:
    """``LABEL_FIELD`` → ``--label-field``."""
    return "--" + spec.name.lower().replace("_", "-")


_PROCESSING_SETTING = re.compile(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)=([\w.<>-]*\w)")


def as_options(message: str, options) -> str:
    """A job's message in the command line's words: Processing's ``NAME=value`` (the core's messages name
    parameters as Processing and ``qgis_process`` spell them) → ``--name value``, or ``--name`` / ``--no-name``
    for yes/no, where ``--name`` is one of this command's ``options``; other text as it is."""

    def sub(m: re.Match) -> str:
        opt = "--" + m.group(1).lower().replace("_", "-")
        if opt not in options:
            return m.group(0)
        value = m.group(2)
        negative = "--no-" + opt[2:]
        if negative in options and value.lower() in ("yes", "true", "no", "false"):
            return opt if value.lower() in ("yes", "true") else negative
        return f"{opt} {value}"

    return _PROCESSING_SETTING.sub(sub, message)


def parse_tiles(text: str) -> tuple:
    """'3x2', '3×2', '3,2' or '3' (→ 3×3) → (columns, rows)."""
    parts = [p for p in re.split(r"[x×,;*\s]+", (text or "1").strip().lower()) if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be columns × rows, e.g. 3x2") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be two positive numbers, columns × rows, e.g. 3x2")
    return nums[0], nums[1]


def parse_band_list(text: str) -> list:
    """'1,2,3' → [1, 2, 3] (1-based bands)."""
    try:
        bands = [int(p) for p in re.split(r"[,\s]+", text.strip()) if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of band numbers such as 1,2,3") from None
    if any(b < 1 for b in bands):
        raise argparse.ArgumentTypeError(f"'{text}': bands are numbered from 1")
    return bands


def _number_type(spec: ParamSpec, cast):
    """An argparse type that refuses a value outside the spec's range (exit status 2), ``auto`` allowed."""

    def convert(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a{'n integer' if cast is int else ' number'}") from None
        if spec.auto is not None and value == spec.auto:
            return value
        bad = value != value
        if spec.minimum is not None:
            bad = bad or (value <= spec.minimum if spec.minimum_exclusive else value < spec.minimum)
        if spec.maximum is not None:
            bad = bad or (value >= spec.maximum if spec.maximum_exclusive else value > spec.maximum)
        if bad:
            auto = f", or {spec.auto} for automatic" if spec.auto is not None else ""
            raise argparse.ArgumentTypeError(f"{text} is out of range: {spec.title} must be {spec.describe_range()}{auto}")
        return value

    convert.__name__ = cast.__name__
    return convert


def _choice_type(spec: ParamSpec):
    by_text = {str(c): c for c in spec.choices}

    def convert(text: str):
        if text not in by_text:
            raise argparse.ArgumentTypeError(f"invalid choice '{text}' (choose from {', '.join(by_text)})")
        return by_text[text]

    convert.__name__ = "choice"
    return convert


def _help(config_class, field_name: str, spec: ParamSpec) -> str:
    """The spec's help paragraph as Processing shows it, without HTML; the label first where the paragraph is
    shared with other fields (or missing), the choices with their labels."""
    own = plain_help(spec_help(config_class, field_name))
    text = own if own and not spec.help_of else (spec.label + ". " + own).strip()
    if spec.choices:
        text += " Choices: " + "; ".join(f"{c} = {lab}" if str(c) != lab else str(c)
                                         for c, lab in zip(spec.choices, spec.choice_labels)) + "."
    if spec.auto is not None and f"{spec.auto} = " not in text:
        text += f" {spec.auto} = automatic."
    return text.replace("%", "%%") + " (default: %(default)s)"


def _kwargs(config_class, field_name: str, spec: ParamSpec) -> dict:
    default = shell_default(config_class, field_name)
    kw: dict[str, Any] = {"dest": field_name, "default": default, "help": _help(config_class, field_name, spec)}
    if spec.choices:
        kw.update(type=_choice_type(spec), metavar="{" + ",".join(str(c) for c in spec.choices) + "}")
    elif spec.kind in ("int", "float"):
        kw.update(type=_number_type(spec, int if spec.kind == "int" else float), metavar=spec.kind.upper())
        lo = shell_minimum(spec)
        if lo is not None and spec.auto is None:
            kw["help"] = kw["help"].replace(" (default:", f" ({spec.describe_range()}; default:")
    elif spec.kind == "bool":
        kw.update(action=argparse.BooleanOptionalAction)
    elif spec.kind == "tiles":
        kw.update(type=parse_tiles, metavar="COLSxROWS")
    elif spec.kind == "bands":
        kw.update(type=parse_band_list, metavar="1,2,3")
    else:
        kw.update(type=str, metavar="TEXT")
    return kw


def add_spec_options(parser: argparse.ArgumentParser, config_class, *field_names: str) -> None:
    """Add the options of ``field_names`` (default: every specified field) of ``config_class``."""
    specs = {name: spec for name, spec, _ in tool_params(config_class)}
    for name in field_names or tuple(specs):
        spec = specs[name]
        parser.add_argument(option_name(spec), **_kwargs(config_class, name, spec))


def spec_values(args: argparse.Namespace, config_class) -> dict:
    """The Config keyword arguments of the specified fields in ``args``: ``auto`` → None, a "tiles" text already
    parsed, an empty text → the core's default (None) where that is None."""
    out = {}
    for name, spec, _default in tool_params(config_class):
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if spec.kind == "tiles" and isinstance(value, str):
            value = parse_tiles(value)
        elif spec.auto is not None and value == spec.auto and default_of(config_class, name) is None:
            value = None
        elif value == "" and default_of(config_class, name) is None:
            value = None
        out[name] = value
    return out

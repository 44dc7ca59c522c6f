"""What each architecture accepts as arguments: names, types and ranges (torch-free).

A model file's ``arch_args`` come from the file, and a file can be damaged,
tampered with or written by another GeoML version. They are checked here
against a table before anything is built, so a bad value is a
:class:`ModelFileError` that names the argument instead of a ``TypeError``
from a builder or a network far larger than the file (memory exhaustion).

The ranges are sanity bounds, not the memory guard: ``modelfile`` also builds
the network on PyTorch's ``meta`` device (no memory) and compares every
parameter with the tensors in the file before it allocates anything.

``tests/core/test_fuzz_modelfile.py`` checks that this table and the registered
builders' signatures agree: a new architecture needs a line here.
"""
from __future__ import annotations

import math

from ..errors import ModelFileError

MAX_BANDS = 4096  # input or output bands
MAX_OUTPUTS = 65535  # classes (class rasters are uint16) or regression outputs
MAX_WIDTH = 4096  # channels of one layer
MAX_LAYERS = 12  # entries of a ``widths`` list


class _Rule:
    text = ""

    def ok(self, v) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class Int(_Rule):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        self.text = f"an integer from {lo} to {hi}"

    def ok(self, v) -> bool:
        return type(v) is int and self.lo <= v <= self.hi


class Float(_Rule):
    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi
        self.text = f"a number from {lo:g} to {hi:g}"

    def ok(self, v) -> bool:
        return type(v) in (int, float) and math.isfinite(v) and self.lo <= v <= self.hi


class Bool(_Rule):
    text = "true or false"

    def ok(self, v) -> bool:
        return type(v) is bool


class Choice(_Rule):
    def __init__(self, *choices):
        self.choices = choices
        self.text = "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in choices)

    def ok(self, v) -> bool:
        return any(type(v) is type(c) and v == c for c in self.choices)


class IntList(_Rule):
    def __init__(self, lo: int, hi: int, max_len: int = MAX_LAYERS, min_len: int = 1):
        self.item, self.max_len, self.min_len = Int(lo, hi), max_len, min_len
        n = f"{min_len} to {max_len}" if min_len != max_len else f"{max_len}"
        self.text = f"a list of {n} integers from {lo} to {hi}"

    def ok(self, v) -> bool:
        return (isinstance(v, (list, tuple)) and self.min_len <= len(v) <= self.max_len
                and all(self.item.ok(x) for x in v))


BANDS = Int(1, MAX_BANDS)
OUTPUTS = Int(1, MAX_OUTPUTS)
WIDTHS = IntList(1, MAX_WIDTH)
STAGE_WIDTHS = IntList(1, MAX_WIDTH, max_len=4, min_len=4)  # small_resnet's four stages
DROPOUT = Float(0.0, 1.0)
PATCH_BACKBONES = ("small_resnet", "resnet18", "resnet34", "resnet50", "mobilenet_v2")
RESNET_BACKBONES = Choice(*PATCH_BACKBONES)


def _patch_backbone_args(name: str) -> dict:
    """The rules of a patch classifier backbone; small_resnet also takes its four stage widths (absent in files
    written before widths were chosen)."""
    rules = {"in_bands": (BANDS, True), "num_outputs": (OUTPUTS, True), "dropout": (DROPOUT, False),
             "centre_pool": (Float(0.0, 10.0), False)}
    if name == "small_resnet":
        rules["widths"] = (STAGE_WIDTHS, False)
    return rules


# architecture → {argument: (rule, required)}
ARCH_ARGS: dict[str, dict[str, tuple[_Rule, bool]]] = {
    "pixel_linear": {"in_bands": (BANDS, True), "out_channels": (OUTPUTS, True)},
    "small_cnn": {"in_bands": (BANDS, True), "num_outputs": (OUTPUTS, True), "widths": (WIDTHS, False),
                  "dropout": (DROPOUT, False)},
    "small_fcn": {"in_bands": (BANDS, True), "num_classes": (OUTPUTS, True), "width": (Int(1, MAX_WIDTH), False)},
    **{name: _patch_backbone_args(name) for name in PATCH_BACKBONES},
    "unet": {"backbone": (RESNET_BACKBONES, True), "in_bands": (BANDS, True), "num_outputs": (OUTPUTS, True),
             "widths": (STAGE_WIDTHS, False), "full_res": (Bool(), False)},
    "meta_classifier": {
        "in_bands": (BANDS, True), "num_classes": (OUTPUTS, True), "backbone": (Choice("small_cnn", "resnet18"), False),
        "widths": (WIDTHS, False), "normalize": (Bool(), False), "views": (Choice(1, 2, 4, 8), False),
        "stem_stride": (Int(1, 8), False), "pool_blocks": (Int(1, MAX_LAYERS), False), "max_pool": (Bool(), False),
        "norm": (Choice("group", "pixel"), False), "centre_pool": (Float(0.0, 10.0), False),
    },
    "tile_generator": {"out_bands": (BANDS, True), "nz": (Int(1, MAX_WIDTH), False), "widths": (WIDTHS, False),
                       "noise_stages": (Int(0, MAX_LAYERS), False)},
    "unet_translator": {"in_bands": (BANDS, True), "out_bands": (BANDS, True), "widths": (WIDTHS, False)},
    "patch_critic": {"in_bands": (BANDS, True), "widths": (WIDTHS, False), "spectral": (Bool(), False)},
}


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "…"


def check_arch_args(architecture: str, args, where: str = "The model file") -> None:
    """Raise :class:`ModelFileError` unless ``args`` are valid arguments of ``architecture``.

    An architecture missing from the table is left to the registry (which
    refuses names it does not know) and to the builder's signature."""
    if not isinstance(args, dict):
        raise ModelFileError(f"{where} is damaged: its architecture arguments are not a JSON object.")
    schema = ARCH_ARGS.get(architecture)
    if schema is None:
        return
    for key, value in args.items():
        if key not in schema:
            raise ModelFileError(
                f"{where} gives architecture '{architecture}' an argument this GeoML does not know: "
                f"{_show(key)}.",
                "The file was changed, or was saved by another GeoML version.")
        rule = schema[key][0]
        if not rule.ok(value):
            raise ModelFileError(f"{where} is damaged: argument '{key}' of architecture '{architecture}' is "
                                 f"{_show(value)}; it must be {rule.text}.")
    missing = [k for k, (_, required) in schema.items() if required and k not in args]
    if missing:
        raise ModelFileError(f"{where} is damaged: architecture '{architecture}' needs the argument(s) "
                             f"{', '.join(missing)}, which the file does not give.")

"""Name → builder registry for network architectures."""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ModelFileError

# Modules (under geoml_plugin.core.models) that register architectures.
FAMILIES = [
    "basic",
    "gan",
    "resnets",
    "segmentation",
    "fewshot",
]

_BUILDERS: dict[str, Callable] = {}
_loaded = False


def register(name: str):
    def deco(fn: Callable) -> Callable:
        _BUILDERS[name] = fn
        return fn

    return deco


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for fam in FAMILIES:
            importlib.import_module(f"{__package__}.{fam}")
        _loaded = True


def available_architectures() -> list[str]:
    _load_families()
    return sorted(_BUILDERS)


def build_model(name: str, **kwargs):
    _load_families()
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ModelFileError(
            f"Unknown architecture '{name}'. It may come from a newer GeoML; update the plugin."
        ) from None
    return builder(**kwargs)

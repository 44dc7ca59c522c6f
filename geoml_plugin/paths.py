"""Where the plugin's resources live, in the source tree and in the installed zip.

The repository keeps ``resources/`` beside the package; ``make package`` puts
it inside the plugin folder. Look in both places.
"""
from __future__ import annotations

from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent


def resource_path(*parts: str) -> str:
    for base in (PLUGIN_DIR / "resources", PLUGIN_DIR.parent / "resources"):
        p = base.joinpath(*parts)
        if p.exists():
            return str(p)
    return str(PLUGIN_DIR.parent.joinpath("resources", *parts))


def icon_path(name: str) -> str:
    return resource_path("icons", name)


def ui_path(name: str) -> str:
    return resource_path("ui", name)

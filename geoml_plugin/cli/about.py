"""``geoml info``, ``geoml version`` and ``geoml diagnostics``: what a model file is, what is installed."""
from __future__ import annotations

import importlib
import platform
from typing import Any

from ..core.errors import InputError

LIBRARIES = ("numpy", "osgeo.gdal", "torch", "torchvision", "safetensors", "onnxruntime", "tqdm")


def model_info(path: str) -> dict:
    """The model file's metadata, read from its header (no torch, nothing unpickled), and its tensors."""
    from ..core.modelfile import read_metadata

    if not path:
        raise InputError("Give the model file: geoml info MODEL.")
    meta = read_metadata(path)
    info = {"file": path, "description": meta.describe()}
    info.update(meta.to_dict())
    return info


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError of a broken build: report it
        return f"not usable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return str(getattr(mod, "__version__", None) or getattr(mod, "VERSION", "") or "installed")


def versions() -> dict:
    from ..version import __version__

    return {"geoml": __version__, "python": platform.python_version(),
            **{m.split(".")[-1]: _version(m) for m in ("torch", "numpy", "osgeo.gdal")}}


def diagnostics() -> dict:
    """Library versions and the compute device jobs would use (``auto``)."""
    from ..version import __version__

    report: dict[str, Any] = {"geoml": __version__, "python": platform.python_version(),
                              "platform": platform.platform()}
    report["libraries"] = {m.split(".")[-1]: _version(m) for m in LIBRARIES}
    try:
        from ..core.device import device_report, resolve_device

        report["device"] = device_report(resolve_device("auto"))
    except Exception as exc:  # noqa: BLE001 - DependencyError: its message says what to install
        report["device"] = f"unavailable: {exc}"
    from ..core.threads import describe

    report["threads"] = describe()
    from ..core.distributed import launch_env

    env = launch_env()
    report["torchrun"] = (f"rank {env.rank} of {env.world_size} (local rank {env.local_rank})" if env
                          else "not started by torchrun")
    return report


def as_text(result: Any, indent: str = "") -> str:
    """A nested dict as 'key: value' lines."""
    lines = []
    for key, value in result.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.append(as_text(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{indent}{key}:")
            lines.extend(f"{indent}  - " + ", ".join(f"{k}: {v}" for k, v in item.items()) for item in value)
        elif value not in (None, "", [], {}):
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)

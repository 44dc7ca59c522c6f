"""Import torch / torchvision / safetensors lazily with actionable messages.

The plugin must load (and QGIS start) without torch; the first job that needs
it calls these helpers, which raise :class:`DependencyError` telling the user
what is missing or broken instead of an ImportError traceback.
"""
from __future__ import annotations

from .errors import DependencyError

# The shell's menu entry (geoml_plugin/deps/detect.py:INSTALL_ACTION); core cannot import the shell.
_HINT = ("In QGIS: Raster ▸ GeoML ▸ Install dependencies… (one click, no administrator rights). "
         "Outside QGIS: pip install torch torchvision safetensors.")


def require_torch():
    try:
        import torch
    except Exception as exc:  # ImportError, OSError for broken DLLs, ...
        raise DependencyError(f"PyTorch (torch) is not usable in this QGIS: {exc}.", _HINT) from exc
    return torch


def require_torchvision():
    require_torch()
    try:
        import torchvision
    except Exception as exc:
        raise DependencyError(
            f"torchvision cannot be imported: {exc}. This usually means torch and torchvision "
            "come from different builds (e.g. a CPU-only torch with a CUDA torchvision).",
            _HINT,
        ) from exc
    return torchvision


def require_safetensors():
    try:
        import safetensors
        import safetensors.torch  # noqa: F401
    except Exception as exc:
        raise DependencyError(f"safetensors is not installed: {exc}.", _HINT) from exc
    return safetensors


def import_dynamo_without_triton() -> None:
    """Import ``torch._dynamo`` (``torch.optim`` needs it) with triton kept out.

    The first optimizer imports ``torch._dynamo``, which probes for triton.
    Inside the QGIS desktop, loading triton's LLVM beside the LLVM of QGIS's
    OpenGL driver (Mesa, e.g. llvmpipe) kills QGIS with a segmentation fault.
    GeoML never compiles kernels, so triton is hidden for that one import
    (torch then caches "no triton") and is importable again afterwards.
    Training jobs get torch through ``device.torch_for_training``, which calls this.
    """
    import sys

    if "torch._dynamo" in sys.modules:
        return
    require_torch()
    hidden = "triton" not in sys.modules
    if hidden:
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
    try:
        import torch._dynamo  # noqa: F401
    finally:
        if hidden and sys.modules.get("triton", 0) is None:
            del sys.modules["triton"]

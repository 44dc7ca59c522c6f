"""Keep PyTorch from loading Triton inside QGIS, and import torch on the main thread.

PyTorch imports parts of itself lazily: creating the first optimizer imports
``torch._dynamo``, which imports Triton if it is installed (CUDA builds of
torch install it). Triton's native library bundles its own LLVM, and loading
it into QGIS desktop — which has already loaded LLVM through Mesa's OpenGL
drivers — crashes QGIS (segmentation fault inside ``import triton``, seen on
QGIS 3.22 under Xvfb). GeoML never compiles kernels, so inside QGIS Triton is
marked as not installed: ``import triton`` then raises ImportError, which
PyTorch handles. ``preload_torch`` also does torch's first imports on the
main thread, before a background job starts.
"""
from __future__ import annotations

import sys


def block_triton() -> None:
    """Make ``import triton`` fail cleanly in this process (unless already imported)."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import → ImportError


def preload_torch() -> None:
    """Import torch and its lazily imported parts now (main thread). Never raises:
    a missing or broken torch is reported by the job itself."""
    from ..core.threads import prepare_environment

    prepare_environment()  # OpenMP reads its wait policy when torch loads it (core/threads.py)
    block_triton()
    try:
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401
        import torch.func  # noqa: F401
    except Exception:  # pragma: no cover - depends on the installation
        pass

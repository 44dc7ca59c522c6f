"""Compute device choice and seeding.

``auto`` picks CUDA when torch sees a GPU, else the CPU. Asking explicitly for
``cuda`` on a machine without one is an error the user can act on rather than
a silent fallback, so that a slow CPU run is never mistaken for a GPU run.
"""
from __future__ import annotations

import os
import random

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def torch_module():
    """Import torch lazily with a message an analyst can act on."""
    from .deps_check import require_torch

    return require_torch()


def torch_for_training():
    """torch, ready to create optimizers without crashing the QGIS desktop.

    The first optimizer imports ``torch._dynamo``, which would import triton; triton's
    LLVM beside the one QGIS's OpenGL driver loaded kills QGIS (see
    ``deps_check.import_dynamo_without_triton``). Every job that trains gets torch here.
    """
    from .deps_check import import_dynamo_without_triton

    torch = torch_module()
    import_dynamo_without_triton()
    return torch


def resolve_device(name: str = "auto"):
    """The torch device for ``name``; also sets the job's CPU threads in the calling (job) thread
    when an entry point chose them (``threads.apply_job_threads``)."""
    from .threads import apply_job_threads

    torch = torch_module()
    apply_job_threads(torch)
    name = (name or "auto").strip().lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise DeviceError(f"Unknown device '{name}'.", "Choose auto, cpu or cuda.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "A CUDA GPU was requested but torch sees none on this machine.",
                "Choose 'auto' or 'cpu', or install a CUDA build of torch (GeoML → Diagnostics).",
            )
        return torch.device(name)
    return torch.device("cpu")


def describe_device(device) -> str:
    torch = torch_module()
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GB)"
    return f"CPU ({torch.get_num_threads()} threads)"


def device_report(device) -> str:
    """One line for a job's log: the device, torch's version and build, and what the choice means."""
    torch = torch_module()
    device = torch.device(device)
    build = f"CUDA {torch.version.cuda} build" if getattr(torch.version, "cuda", None) else "CPU-only build"
    text = f"Device: {describe_device(device)} — torch {torch.__version__} ({build})"
    if device.type == "cpu":
        if torch.cuda.is_available():
            text += "; a CUDA GPU is available: choose device 'auto' or 'cuda' to use it"
        else:
            text += "; no CUDA GPU available, so this runs slower than on a GPU"
    return text


def log_device(feedback, device) -> str:
    """Write the device a job runs on into its log. Every job calls this once, after ``resolve_device``."""
    text = device_report(device)
    if feedback is not None:
        feedback.log(text)
    return text


def seed_everything(seed: int | None) -> None:
    """Seed Python, numpy and torch so a run with the same seed repeats."""
    if seed is None:
        return
    import numpy as np

    torch = torch_module()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))

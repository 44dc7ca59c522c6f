"""Detect an NVIDIA GPU and its driver without PyTorch, through ``nvidia-smi``.

Used to choose CUDA or CPU wheels *before* torch is installed, and to tell a
user with a CPU-only torch that a GPU is sitting idle. ``nvidia-smi`` ships
with the NVIDIA driver on Linux and Windows; its header states the newest CUDA
version the driver supports ("CUDA Version: 12.4").
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

from .interpreter import no_window_flags

_QUERY = "--query-gpu=name,memory.total,driver_version,compute_cap"
_cache: dict = {}


@dataclass
class NvidiaGpu:
    name: str
    memory_gb: float
    capability: Optional[tuple] = None  # (major, minor) compute capability, when the driver reports it


@dataclass
class NvidiaInfo:
    smi_path: Optional[str] = None
    driver_version: Optional[str] = None
    cuda_version: Optional[tuple] = None  # newest CUDA the driver supports, e.g. (12, 4)
    gpus: list = field(default_factory=list)
    error: Optional[str] = None

    @property
    def present(self) -> bool:
        return bool(self.gpus)

    @property
    def driver_major(self) -> Optional[int]:
        try:
            return int(str(self.driver_version).split(".")[0])
        except (TypeError, ValueError):
            return None

    def describe(self) -> str:
        if not self.present:
            if self.smi_path is None:
                return "no NVIDIA driver found (nvidia-smi is not installed)"
            return f"no NVIDIA GPU reported by {self.smi_path}" + (f": {self.error}" if self.error else "")
        cuda = ".".join(map(str, self.cuda_version)) if self.cuda_version else "unknown"
        gpus = "; ".join(
            f"{g.name} ({g.memory_gb:.0f} GB" + (f", compute {g.capability[0]}.{g.capability[1]}" if g.capability else "")
            + ")" for g in self.gpus)
        return f"NVIDIA driver {self.driver_version} (supports CUDA up to {cuda}); GPU: {gpus}"


def find_nvidia_smi() -> Optional[str]:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    if sys.platform == "win32":
        for base in (os.environ.get("SystemRoot", r"C:\Windows") + r"\System32",
                     os.environ.get("ProgramFiles", r"C:\Program Files") + r"\NVIDIA Corporation\NVSMI"):
            p = os.path.join(base, "nvidia-smi.exe")
            if os.path.isfile(p):
                return p
    return None


def _run(cmd: list) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, **no_window_flags())


def parse_query(text: str) -> list:
    """Rows of ``name, memory MiB, driver, compute_cap`` (the last field optional)."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0]:
            continue
        try:
            mem = float(parts[1]) / 1024.0
        except ValueError:
            mem = 0.0
        cap = None
        if len(parts) > 3 and re.fullmatch(r"\d+\.\d+", parts[3]):
            major, minor = parts[3].split(".")
            cap = (int(major), int(minor))
        gpus.append((NvidiaGpu(parts[0], mem, cap), parts[2]))
    return gpus


def parse_cuda_version(text: str) -> Optional[tuple]:
    m = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def detect_nvidia(refresh: bool = False) -> NvidiaInfo:
    """What ``nvidia-smi`` reports (cached for the session)."""
    if "info" in _cache and not refresh:
        return _cache["info"]
    info = NvidiaInfo(smi_path=find_nvidia_smi())
    if info.smi_path is not None:
        try:
            res = _run([info.smi_path, _QUERY, "--format=csv,noheader,nounits"])
            if res.returncode != 0:  # drivers before ~510 do not know compute_cap
                res = _run([info.smi_path, _QUERY.rsplit(",", 1)[0], "--format=csv,noheader,nounits"])
            if res.returncode == 0:
                rows = parse_query(res.stdout)
                info.gpus = [g for g, _ in rows]
                info.driver_version = rows[0][1] if rows else None
            else:
                info.error = (res.stderr or res.stdout).strip()[:500] or f"exit code {res.returncode}"
            header = _run([info.smi_path])
            info.cuda_version = parse_cuda_version(header.stdout)
        except (OSError, subprocess.SubprocessError) as exc:
            info.error = str(exc)
    _cache["info"] = info
    return info

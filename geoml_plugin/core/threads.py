"""CPU threads for GeoML's jobs: how many torch uses, and how its idle OpenMP threads wait.

An analyst's machine is never idle. By default an OpenMP thread that finishes its share of an
operation *spins* (busy-waits) for the others before it sleeps — GNU libgomp about 300 000 spins,
LLVM/Intel OpenMP 200 ms. Alone on the CPU that saves a wake-up; beside another busy process the
spinning threads burn the time slices the working threads need, and a job sharing 2 cores with one
other PyTorch job ran 6× slower instead of 2×. So GeoML's entry points (the QGIS plugin, its
Processing provider, the ``geoml`` command) call :func:`prepare_environment` *before torch is
imported*, which sets ``OMP_WAIT_POLICY=PASSIVE`` (libgomp: spin count 0; LLVM/Intel OpenMP:
``KMP_BLOCKTIME=0`` as well) — OpenMP reads these variables once, when its library loads with torch,
so setting them later changes nothing. Linux wheels of torch bundle GNU libgomp (plus MKL using it);
macOS and Windows builds use LLVM or Intel OpenMP.

How many threads: torch's default, the physical cores this process may use, unless the user
chose. Measured on 2 busy cores (``bench/busy_cpu.py``, README › Benchmarks): with passive waiting
the job beside another PyTorch process took 23 s on 2 threads and 34 s on 1 (about the same alone),
so leaving a core to QGIS's main thread made the job slower, and the main thread was no more
responsive for it (a 16 ms timer on the main thread came as late with either count). A user
chooses, the first of these that is set winning: the command line's ``--threads``,
``GEOML_THREADS``, QGIS's setting ``geoml/threads``, ``OMP_NUM_THREADS`` (torch reads it at import;
GeoML leaves it). Without such a choice GeoML never
calls ``torch.set_num_threads``, so a count set in the QGIS Python console or by a script stays.
``OMP_WAIT_POLICY`` (even empty: OpenMP's own default), ``KMP_BLOCKTIME``, ``KMP_LIBRARY`` and
``GOMP_SPINCOUNT`` set by the user stay as they are, and GeoML then adds none of its own.

A chosen count is set in the job's own thread by :func:`apply_job_threads` (``device.resolve_device``
calls it). ``torch.set_num_threads`` stores a process-wide count and sets the calling thread's OpenMP
count (MKL's too); a thread that has not run a parallel operation yet takes the stored count when it
first does, one that has (the QGIS main thread, a reused pool thread) keeps its own until it calls
``set_num_threads`` itself. So the count is set in every job's thread, which is what a QgsTask needs
(a test checks it); the main thread's count is not changed. Inter-op threads are left alone: eager
PyTorch (all GeoML runs) does not use them, and their pool waits on a condition variable, without
spinning.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Mapping, MutableMapping, Optional

ENV_THREADS = "GEOML_THREADS"
# what GeoML sets when the user has not: OpenMP's standard variable, and LLVM/Intel OpenMP's own
# (PASSIVE implies KMP_BLOCKTIME=0 there; explicit for older Intel runtimes). GNU libgomp reads
# GOMP_SPINCOUNT, which PASSIVE already makes 0.
WAIT_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# any of these set by the user means "the user chose how OpenMP waits": GeoML adds nothing
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT", "KMP_LIBRARY")


@dataclass
class _State:
    prepared: dict = field(default_factory=dict)  # variables prepare_environment set (name -> value)
    torch_first: bool = False  # torch was imported before GeoML could set them (too late for OpenMP)
    chosen: Optional[int] = None  # the count an entry point was given (--threads, the QGIS setting)
    chosen_source: str = ""


_state = _State()


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once); at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: logical CPUs
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/physical_package_id") as f:
                pkg = f.read().strip()
            with open(f"{base}/core_id") as f:
                core = f.read().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((pkg, core))
    return max(1, len(cores))


def parse_threads(text) -> Optional[int]:
    """A positive thread count from an option, setting or variable; None for empty, 0 or not a number."""
    try:
        n = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def job_threads(option=None, setting=None, environ: Optional[Mapping[str, str]] = None) -> tuple[Optional[int], str]:
    """The thread count a user chose for jobs and where it comes from: ``(n, source)``.

    ``n`` is None when GeoML leaves torch's count alone: ``OMP_NUM_THREADS`` (torch read it at import)
    or nothing chosen (torch's default, the physical cores).
    """
    env = os.environ if environ is None else environ
    for n, source in ((parse_threads(option), "--threads"), (parse_threads(env.get(ENV_THREADS)), ENV_THREADS),
                      (parse_threads(setting), "setting geoml/threads")):
        if n:
            return n, source
    if parse_threads(env.get("OMP_NUM_THREADS")):
        return None, "OMP_NUM_THREADS"
    return None, "torch default (physical cores)"


def prepare_environment(environ: Optional[MutableMapping[str, str]] = None) -> dict:
    """Make OpenMP's idle threads sleep, unless the user chose how they wait. Returns what it set.

    Call before torch is imported: OpenMP reads these variables once, when torch loads it. Once torch
    is loaded they change nothing in this process (child processes still inherit them).
    """
    env = os.environ if environ is None else environ
    if environ is None and "torch" in sys.modules and not _state.prepared:
        _state.torch_first = True
    if any(v in env for v in WAIT_VARIABLES):
        return {}
    made = dict(WAIT_DEFAULTS)
    env.update(made)
    if environ is None:
        _state.prepared.update(made)
    return made


def configure(option=None, setting=None) -> tuple[Optional[int], str]:
    """What an entry point (the plugin, its Processing provider, the ``geoml`` command) does first:
    prepare OpenMP's environment and remember the thread count the user chose, if any.
    ``option``: the command line's ``--threads``; ``setting``: QGIS's ``geoml/threads``."""
    prepare_environment()
    _state.chosen, _state.chosen_source = job_threads(option, setting)
    return _state.chosen, _state.chosen_source


def apply_job_threads(torch=None) -> int:
    """Set the chosen thread count for the job running in the calling thread; returns torch's count.

    Without a choice (``GEOML_THREADS``, or one given to :func:`configure`) torch's count stays as it is.
    """
    if torch is None:
        import torch
    want = parse_threads(os.environ.get(ENV_THREADS)) if _state.chosen_source != "--threads" else None
    want = want or _state.chosen
    if want and torch.get_num_threads() != want:
        torch.set_num_threads(want)
    return torch.get_num_threads()


def describe(torch=None) -> dict:
    """Thread facts for diagnostics."""
    if torch is None:
        torch = sys.modules.get("torch")
    chosen, source = (_state.chosen, _state.chosen_source) if _state.chosen_source else job_threads()
    out = {
        "threads_chosen": chosen,
        "threads_source": source,
        "physical_cores": physical_cores(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "(OpenMP default: spin, then sleep)",
        "wait_set_by_geoml": bool(_state.prepared),
        "torch_loaded_before_geoml": _state.torch_first,
    }
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        out["openmp"] = openmp_runtime()
    return out


def openmp_runtime() -> str:
    """The OpenMP library loaded in this process ("GNU libgomp", "Intel libiomp5", "LLVM libomp"; "" unknown)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return ""
    for key, name in (("libgomp", "GNU libgomp"), ("libiomp5", "Intel libiomp5"), ("libomp", "LLVM libomp")):
        if key in maps:
            return name
    return ""

"""Are torch, torchvision and safetensors usable in this QGIS, and on what device?

* :func:`packages_dir` / :func:`activate_packages_dir`: GeoML's private package
  folder (``<QGIS profile>/python/geoml_packages/py3XX``), put first on
  ``sys.path`` at plugin load so a torch installed there wins over a broken one
  elsewhere. QGIS's own packages are never touched (see :mod:`installer`).
* :func:`dependency_status`: imports the three packages **in a separate Python
  process** (:mod:`torch_probe`), because importing a broken PyTorch can crash
  or poison the QGIS process; in-process only when torch is already loaded.
  Cached for the session; :func:`invalidate` after an install.
* :func:`explain` turns a status into sentences (missing, broken, CPU/CUDA
  mismatch between torch and torchvision, version requirement not met).
* :func:`gpu_summary` (the job dialogs' badge) and :func:`diagnostics` (the
  plain-text report behind *GeoML → Diagnostics*).
* The *apply-only* state: PyTorch missing but onnxruntime present (the
  installer's apply-only install, :func:`apply_packages_dir`): ONNX models are
  applied (``geoml:predict``, Apply model), everything else needs the full install.

Nothing here imports torch, Qt or QGIS at module level.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import torch_probe
from .gpu_driver import NvidiaInfo, detect_nvidia
from .interpreter import no_window_flags, python_executable

REQUIRED = ("torch", "torchvision", "safetensors")
RUNTIME = "onnxruntime"  # applies .onnx models without PyTorch: all the apply-only install brings
LABELS = {"torch": "PyTorch (torch)", "torchvision": "torchvision", "safetensors": "safetensors",
          RUNTIME: "onnxruntime"}
INSTALL_ACTION = "Raster ▸ GeoML ▸ Install dependencies…"
DIAGNOSTICS_ACTION = "Raster ▸ GeoML ▸ Diagnostics"
ENV_DIR = "GEOML_PACKAGES_DIR"  # overrides the private folder (tests, administrators)
NOT_INSTALLED_BADGE = f"PyTorch not installed — {INSTALL_ACTION}"
CPU_BADGE = "CPU only — jobs will be slower"
APPLY_ONLY_BADGE = f"Apply-only: ONNX models work; training needs PyTorch — {INSTALL_ACTION}"
APPLY_ONLY_SUFFIX = "-onnxruntime"

_cache: dict = {}


# -- the private package folder ------------------------------------------------
def packages_dir() -> Path:
    """Where GeoML installs torch & co.: per QGIS profile and per Python version."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    settings = ""
    try:
        from qgis.core import QgsApplication

        settings = QgsApplication.qgisSettingsDirPath()
    except Exception:
        pass
    base = Path(settings) / "python" if settings else Path.home() / ".geoml"
    return base / "geoml_packages" / tag


def apply_packages_dir(base=None) -> Path:
    """Where the apply-only install puts onnxruntime: beside :func:`packages_dir` (``py3XX-onnxruntime``).

    A folder of its own, so the full install (which replaces its folder as a whole) never removes
    onnxruntime and the apply-only install never removes a working PyTorch.
    """
    base = Path(base) if base is not None else packages_dir()
    return base.with_name(base.name + APPLY_ONLY_SUFFIX)


COMPLETE_MARK = ".geoml-complete"


def staging_dir(target) -> Path:
    """Where a new installation is built and verified before it replaces ``target``."""
    target = Path(target)
    return target.with_name(target.name + ".new")


def swap_in_new(target) -> bool:
    """Replace ``target`` by its verified staging folder.

    Returns False when the old folder cannot be moved (Windows keeps the DLLs
    of a loaded torch locked); the staging folder then stays marked complete
    and :func:`activate_packages_dir` finishes the swap at the next start.
    """
    target = Path(target)
    new, old = staging_dir(target), target.with_name(target.name + ".old")
    (new / COMPLETE_MARK).write_text("complete\n", encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        try:
            os.replace(target, old)
        except OSError:
            return False
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
    return True


def activate_packages_dir(path=None) -> bool:
    """Put the private folder first on ``sys.path`` if it exists (cheap; no imports), and the apply-only
    folder beside it (:func:`apply_packages_dir`) after it.

    Also finishes an installation that had to wait for a restart (see :func:`swap_in_new`).
    """
    p = Path(path) if path is not None else packages_dir()
    if not p.name.endswith(APPLY_ONLY_SUFFIX):
        _activate(apply_packages_dir(p))
    return _activate(p)


def _activate(p: Path) -> bool:
    if (staging_dir(p) / COMPLETE_MARK).is_file():
        try:
            swap_in_new(p)
        except OSError:
            pass
    if not p.is_dir():
        return False
    s = str(p)
    if s not in sys.path:
        sys.path.insert(0, s)
        importlib.invalidate_caches()
    return True


def is_on_sys_path(path) -> bool:
    return str(Path(path)) in sys.path


# -- status ----------------------------------------------------------------------
@dataclass
class PackageState:
    name: str
    found: bool = False
    origin: Optional[str] = None
    dist_version: Optional[str] = None
    requires: list = field(default_factory=list)
    imported: bool = False
    version: Optional[str] = None
    location: Optional[str] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.imported and not self.error

    @property
    def shown_version(self) -> str:
        return self.version or self.dist_version or "?"


@dataclass
class DepsStatus:
    packages: dict = field(default_factory=dict)  # name → PackageState
    torch_cuda_build: Optional[str] = None  # "12.4", or None for a CPU-only build
    cuda_available: bool = False
    gpus: list = field(default_factory=list)  # dicts: name, memory_gb, capability
    cuda_error: Optional[str] = None
    mps: bool = False
    threads: Optional[int] = None
    numpy: Optional[str] = None
    numpy_error: Optional[str] = None
    torchvision_cuda_build: Optional[str] = None
    ops_error: Optional[str] = None
    python: str = ""
    executable: str = ""
    probe_error: Optional[str] = None  # the check itself failed (crash, timeout)
    method: str = ""  # "subprocess", "in-process" or "quick" (torch not found: nothing imported)
    checked_at: float = field(default_factory=time.time)

    @classmethod
    def from_probe(cls, data: dict, method: str) -> "DepsStatus":
        pk = {}
        for name, d in (data.get("packages") or {}).items():
            pk[name] = PackageState(**{k: d.get(k) for k in PackageState.__dataclass_fields__ if k in d})
            pk[name].requires = list(d.get("requires") or [])
        st = cls(packages=pk, python=data.get("python", ""), executable=data.get("executable", ""), method=method)
        t = data.get("torch") or {}
        st.torch_cuda_build = t.get("cuda_build")
        st.cuda_available = bool(t.get("cuda_available"))
        st.gpus = list(t.get("devices") or [])
        st.cuda_error, st.mps, st.threads = t.get("cuda_error"), bool(t.get("mps")), t.get("threads")
        st.numpy, st.numpy_error = t.get("numpy"), t.get("numpy_error")
        tv = data.get("torchvision") or {}
        st.torchvision_cuda_build, st.ops_error = tv.get("cuda_build"), tv.get("ops_error")
        return st

    def package(self, name: str) -> PackageState:
        return self.packages.get(name) or PackageState(name)

    @property
    def ok(self) -> bool:
        return not problems(self)

    @property
    def torch_missing(self) -> bool:
        return not self.package("torch").found


def _quick_state(name: str) -> PackageState:
    """Is the package on the path at all? (find_spec only: imports nothing)."""
    st = PackageState(name)
    try:
        spec = importlib.util.find_spec(name)
    except Exception as exc:  # an import hook refusing it, a broken parent package
        st.error = f"{type(exc).__name__}: {exc}"
        return st
    if spec is not None:
        st.found = True
        st.origin = spec.origin
        st.dist_version, st.requires = torch_probe.dist_info(name)
    return st


def quick_status() -> DepsStatus:
    return DepsStatus(packages={n: _quick_state(n) for n in (*REQUIRED, RUNTIME)}, python=sys.version.split()[0],
                      executable=sys.executable, method="quick")


def apply_only(st: DepsStatus) -> bool:
    """PyTorch missing, onnxruntime present: ONNX models can be applied, nothing else runs."""
    return st.torch_missing and st.package(RUNTIME).found


def _probe_path(extra_paths=()) -> list:
    return [str(p) for p in extra_paths] + [p for p in sys.path if str(p) not in {str(e) for e in extra_paths}]


def probe_subprocess(extra_paths=(), names=torch_probe.DEFAULT_NAMES, python: Optional[str] = None,
                     timeout: float = 300.0) -> DepsStatus:
    """Import the packages in a fresh interpreter with this process's ``sys.path``
    (``extra_paths`` first) and describe them; a crash becomes ``probe_error``."""
    python = python or python_executable()
    if python is None:
        st = quick_status()
        st.probe_error = ("The Python interpreter of this QGIS could not be found, so PyTorch could not be "
                          "checked safely.")
        return st
    args = json.dumps({"path": _probe_path(extra_paths), "names": list(names)})
    try:
        res = subprocess.run([python, torch_probe.__file__], input=args, capture_output=True, text=True,
                             timeout=timeout, cwd=os.getcwd(), **no_window_flags())
    except subprocess.TimeoutExpired:
        st = quick_status()
        st.probe_error = f"Checking PyTorch took more than {timeout:.0f} s and was stopped."
        st.method = "subprocess"
        return st
    except OSError as exc:
        st = quick_status()
        st.probe_error = f"Could not start {python}: {exc}"
        return st
    line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith(torch_probe.MARKER)), None)
    if line is not None:
        return DepsStatus.from_probe(json.loads(line[len(torch_probe.MARKER):]), "subprocess")
    st = quick_status()
    st.method = "subprocess"
    importing = [ln[len("importing "):] for ln in res.stderr.splitlines() if ln.startswith("importing ")]
    where = f" while importing {importing[-1]}" if importing else ""
    tail = "\n".join(res.stderr.strip().splitlines()[-5:])
    st.probe_error = f"Python stopped{where} (exit code {res.returncode}): {tail or 'no message'}"
    return st


def probe_in_process(names=torch_probe.DEFAULT_NAMES) -> DepsStatus:
    return DepsStatus.from_probe(torch_probe.probe(tuple(names)), "in-process")


def dependency_status(refresh: bool = False) -> DepsStatus:
    """The state of torch / torchvision / safetensors (cached for the session).

    torch not on the path → answered at once, nothing imported; torch already
    loaded in this process (or no interpreter found to run a subprocess) →
    checked in-process; otherwise in a subprocess.
    """
    if not refresh and "status" in _cache:
        return _cache["status"]
    quick = quick_status()
    if not quick.package("torch").found:
        st = quick
    elif "torch" in sys.modules or python_executable() is None:
        st = probe_in_process()  # already loaded, or no interpreter to isolate it: as a job would
    else:
        st = probe_subprocess()
    if RUNTIME not in st.packages:  # looked up only (find_spec): the badge and report say whether it is there
        st.packages[RUNTIME] = _quick_state(RUNTIME)
    _cache["status"] = st
    return st


def cached_status() -> Optional[DepsStatus]:
    return _cache.get("status")


def invalidate() -> None:
    _cache.pop("status", None)


# -- explanations ----------------------------------------------------------------
PYPI_BUILD = "PyPI's standard build: CUDA on Linux, CPU on Windows and macOS"


def build_from_version(version: Optional[str]) -> Optional[str]:
    """'2.5.1+cu124' → 'CUDA 12.4', '2.5.1+cpu' → 'CPU-only', '2.5.1' → PyPI's standard build."""
    if version and "+" not in version:
        return PYPI_BUILD
    m = re.search(r"\+(cu|rocm|cpu)([\d.]*)", version or "")
    if not m:
        return None
    if m.group(1) == "cpu":
        return "CPU-only"
    digits = m.group(2)
    if m.group(1) == "cu" and len(digits) >= 3:
        return f"CUDA {digits[:-1]}.{digits[-1]}"
    return f"{m.group(1).upper()} {digits}"


def _release(version: str) -> str:
    return (version or "").split("+")[0]


def _requirement_problem(req_texts: list, name: str, version: str) -> Optional[str]:
    """The requirement on ``name`` among ``req_texts`` that ``version`` does not meet, if any."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        except ImportError:
            return None
    for text in req_texts:
        try:
            req = Requirement(text)
        except Exception:
            continue
        if req.name.lower() != name or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        if req.specifier and not req.specifier.contains(_release(version), prereleases=True):
            return str(req.specifier)
    return None


def _torch_build(st: DepsStatus) -> str:
    if st.package("torch").ok:
        return f"CUDA {st.torch_cuda_build}" if st.torch_cuda_build else "CPU-only"
    return build_from_version(st.package("torch").dist_version) or "unknown build"


def _import_hint(error: str) -> str:
    e = error.lower()
    if "dll load failed" in e or "winerror 126" in e or "winerror 127" in e or ".dll" in e:
        return (" On Windows this usually means the Microsoft Visual C++ Redistributable (x64) is missing, or a "
                "CUDA build that does not fit the NVIDIA driver.")
    if any(lib in e for lib in ("libcudart", "libcublas", "libcudnn", "libnvrtc", "libnccl", "libcusparse")):
        return " Libraries of this CUDA build are missing: reinstall it, or install the CPU build."
    if "numpy" in e:
        return " It does not work with this QGIS's numpy."
    return ""


def problems(st: DepsStatus) -> list:
    """What stops GeoML from running jobs, in sentences an analyst can act on."""
    out = []
    if st.probe_error:
        out.append(st.probe_error)
    torch, tv = st.package("torch"), st.package("torchvision")
    for name in REQUIRED:
        p = st.package(name)
        if name == "torchvision" and p.found and not torch.ok:
            continue  # explained by torch's own problem
        if not p.found and not p.error:
            out.append(f"{LABELS[name]} is not installed in this QGIS.")
        elif not p.found:
            out.append(f"{LABELS[name]} cannot be found: {p.error}.")
        elif not p.imported and st.method == "quick":
            continue  # only looked for, not imported
        elif not p.ok and name != "torchvision":
            out.append(f"{LABELS[name]} {p.shown_version} is installed ({p.origin}) but cannot be imported: "
                       f"{p.error}.{_import_hint(p.error or '')}")
    if torch.ok and tv.found:
        if tv.ok:  # torchvision reports its own build
            tv_build = f"CUDA {st.torchvision_cuda_build}" if st.torchvision_cuda_build else "CPU-only"
        else:
            tv_build = build_from_version(tv.dist_version) or "unknown build"
        pair = (f"torch {torch.shown_version} ({_torch_build(st)}) and torchvision {tv.shown_version} "
                f"({tv_build})")
        spec = _requirement_problem(tv.requires, "torch", torch.shown_version)
        if not tv.ok:
            out.append(f"torchvision {tv.shown_version} cannot be imported: {tv.error}. {pair} do not belong "
                       "together (e.g. a CPU-only torch with a CUDA torchvision): install both from the same build.")
        elif st.ops_error:
            out.append(f"torchvision's compiled operators do not load ({st.ops_error}): {pair} come from "
                       "different builds; install both from the same build.")
        elif spec:
            out.append(f"torchvision {tv.shown_version} needs torch {spec}, but torch {torch.shown_version} is "
                       "installed.")
        elif tv.ok and _cuda_major(st.torch_cuda_build) != _cuda_major(st.torchvision_cuda_build) \
                and st.torchvision_cuda_build is not None:
            out.append(f"{pair} were built for different CUDA versions; install both from the same build.")
    if torch.ok and st.numpy_error:
        out.append(f"torch cannot use this QGIS's numpy ({st.numpy}): {st.numpy_error}.")
    return out


def _cuda_major(build: Optional[str]) -> Optional[str]:
    return build.split(".")[0] if build else None


def warnings(st: DepsStatus, nvidia: Optional[NvidiaInfo] = None) -> list:
    """Things that do not stop jobs but make them slower than they could be."""
    out = []
    if not st.package("torch").ok:
        return out
    gpu_names = ", ".join(g.name for g in nvidia.gpus) if nvidia is not None and nvidia.present else ""
    if st.torch_cuda_build and not st.cuda_available:
        why = f" ({st.cuda_error})" if st.cuda_error else ""
        if gpu_names:
            out.append(f"This PyTorch is a CUDA {st.torch_cuda_build} build but cannot use the GPU ({gpu_names}){why}; "
                       f"the NVIDIA driver {nvidia.driver_version} may be too old for it. Update the driver or "
                       f"reinstall with {INSTALL_ACTION} (it picks a build that fits the driver). Jobs run on the CPU.")
        else:
            out.append(f"This PyTorch is a CUDA {st.torch_cuda_build} build but no NVIDIA GPU is usable{why}; "
                       "jobs run on the CPU.")
    elif not st.torch_cuda_build and gpu_names:
        out.append(f"An NVIDIA GPU was found ({gpu_names}) but this PyTorch is CPU-only: install the CUDA build "
                   f"with {INSTALL_ACTION} to use it.")
    return out


def problem_text(st: DepsStatus) -> str:
    return " ".join(problems(st))


def quick_problem() -> Optional[str]:
    """A reason jobs cannot run, known without importing anything (or from the cached check)."""
    st = _cache.get("status") or quick_status()
    found = problems(st)
    if found and apply_only(st):
        found.append(APPLY_ONLY_HINT)
    return " ".join(found) if found else None


APPLY_ONLY_HINT = (f"Only applying ONNX models (.onnx) works without it (onnxruntime is installed: the apply-only "
                   f"install). This needs the full install: {INSTALL_ACTION} → Full install.")


# -- the badge -------------------------------------------------------------------
def summary_of(st: DepsStatus) -> str:
    if st.torch_missing:
        return APPLY_ONLY_BADGE if apply_only(st) else NOT_INSTALLED_BADGE
    if not st.ok:
        return f"PyTorch not usable — see {DIAGNOSTICS_ACTION}"
    if st.cuda_available and st.gpus:
        g = st.gpus[0]
        more = f" + {len(st.gpus) - 1} more" if len(st.gpus) > 1 else ""
        return f"GPU: {g['name']} ({g['memory_gb']:.0f} GB){more}"
    if not st.torch_cuda_build and detect_nvidia().present:
        return CPU_BADGE + " (NVIDIA GPU found: install the CUDA build of PyTorch)"
    return CPU_BADGE


def gpu_summary(block: bool = True) -> str:
    """'GPU: NVIDIA … (N GB)', 'CPU only — jobs will be slower', or a not-installed message.

    ``block=False`` never starts the (seconds-long) subprocess check: it returns
    ``""`` when only that check could tell, so a dialog can run it in the background.
    """
    st = _cache.get("status")
    if st is None:
        quick = quick_status()
        if not quick.package("torch").found:
            return summary_of(quick)
        if not block and "torch" not in sys.modules:
            return ""
        st = dependency_status()
    return summary_of(st)


# -- the report --------------------------------------------------------------------
def _qgis_line() -> str:
    try:
        from qgis.core import Qgis
        from qgis.PyQt.QtCore import PYQT_VERSION_STR, QT_VERSION_STR

        return f"QGIS {Qgis.QGIS_VERSION} (Qt {QT_VERSION_STR}, PyQt {PYQT_VERSION_STR})"
    except Exception:
        return "QGIS: not available in this Python"


def _os_line() -> str:
    text = platform.platform()
    if sys.platform.startswith("linux"):
        try:
            rel = platform.freedesktop_os_release()  # Python 3.10+
            text += f" ({rel.get('PRETTY_NAME', '')})"
        except Exception:
            pass
    return text


def _package_state(st: DepsStatus, name: str) -> str:
    """One required package in the diagnostics: version and build, or why it is missing or broken."""
    p = st.package(name)
    if not p.found:
        return "NOT INSTALLED" + (f" ({p.error})" if p.error else "")
    if p.ok:
        state = f"{p.shown_version}"
        if name == "torch":
            state += f"  [{_torch_build(st)} build]"
        if name == "torchvision" and st.torchvision_cuda_build:
            state += f"  [CUDA {st.torchvision_cuda_build} build]"
        return state + f"  from {p.location}"
    if not p.imported and st.method == "quick":
        return f"{p.shown_version} (found, not imported)  at {p.origin}"
    return f"{p.shown_version} BROKEN at {p.origin}: {p.error or 'not imported'}"


def diagnostics(status: Optional[DepsStatus] = None, refresh: bool = False, extra: str = "") -> str:
    """Plain-text report users can paste into an issue; works without torch."""
    from ..version import __version__

    st = status if status is not None else dependency_status(refresh=refresh)
    nvidia = detect_nvidia()
    pdir = packages_dir()
    how = {"subprocess": "imported in a separate Python process", "in-process": "already loaded in QGIS",
           "quick": "looked up without importing (torch is not installed)"}.get(st.method, st.method)
    lines = [
        f"GeoML diagnostics — {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"GeoML plugin {__version__} at {Path(__file__).resolve().parent}",
        _qgis_line(),
        f"Python {sys.version.split()[0]} ({sys.maxsize.bit_length() + 1}-bit), running {sys.executable}",
        f"Python used for pip and checks: {python_executable() or 'NOT FOUND'}",
        f"OS: {_os_line()}; machine {platform.machine()}",
        f"NVIDIA: {nvidia.describe()}",
        f"GeoML package folder: {pdir} ({'exists' if pdir.is_dir() else 'does not exist'}; "
        f"on sys.path: {'yes' if is_on_sys_path(pdir) else 'no'})",
        "",
        f"Packages ({how}):",
    ]
    for name in REQUIRED:
        lines.append(f"  {name:<12} {_package_state(st, name)}")
    runtime = st.packages.get(RUNTIME) or _quick_state(RUNTIME)
    lines.append(f"  {RUNTIME:<12} " + (f"{runtime.shown_version} (found, not imported)  at {runtime.origin}"
                                        if runtime.found else "not installed (needed only to apply .onnx models "
                                                              "without PyTorch)"))
    if st.numpy:
        lines.append(f"  {'numpy':<12} {st.numpy}")
    else:
        try:
            import numpy

            lines.append(f"  {'numpy':<12} {numpy.__version__} ({numpy.__file__})")
        except Exception as exc:
            lines.append(f"  {'numpy':<12} not importable: {exc}")
    if st.package("torch").ok:
        lines.append("")
        lines.append(f"CUDA available: {'yes' if st.cuda_available else 'no'}"
                     + (f" ({st.cuda_error})" if st.cuda_error else ""))
        for i, g in enumerate(st.gpus):
            lines.append(f"  GPU {i}: {g['name']}, {g['memory_gb']} GB, compute capability {g['capability']}")
        lines.append(f"Apple MPS available: {'yes' if st.mps else 'no'} (GeoML uses CUDA or the CPU)")
        if st.threads:
            lines.append(f"CPU threads used by torch: {st.threads}")
        lines.append(f"Jobs will run on: {summary_of(st)}")
    found = problems(st)
    notes = warnings(st, nvidia)
    lines.append("")
    if found and apply_only(st):
        lines.append("Status: APPLY-ONLY — ONNX models (.onnx) can be applied with onnxruntime; training, "
                     "fine-tuning, few-shot mapping, GANs and GeoML's .safetensors models need PyTorch.")
    else:
        lines.append("Status: " + ("OK — GeoML can run jobs." if not found else "NOT READY"))
    for text in found:
        lines.append(f"  Problem: {text}")
    for text in notes:
        lines.append(f"  Note: {text}")
    if found:
        lines.append(f"  Fix: {INSTALL_ACTION} installs matching builds into the GeoML package folder "
                     "(no administrator rights needed): the full install (PyTorch) for every tool, or the "
                     "apply-only install (onnxruntime, tens of MB) to apply ONNX models only.")
    if extra:
        lines += ["", extra.rstrip()]
    return "\n".join(lines) + "\n"

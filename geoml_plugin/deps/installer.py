"""Install torch, torchvision and safetensors into GeoML's private package folder (the full install), or
only onnxruntime into the folder beside it (the apply-only install: ONNX models are applied without PyTorch).

Pure Python (no Qt, no QGIS): the dialog runs :func:`run_plan` in a QgsTask;
tests and scripts call it directly.

How, and why this way:

* ``python -m pip install --target <staging> --upgrade …`` with *QGIS's own*
  interpreter (:mod:`interpreter` finds it: on Windows ``sys.executable`` is
  ``qgis-bin.exe``). ``--target`` writes only into our folder, needs no
  administrator rights, is allowed on PEP 668 "externally managed" Pythons,
  and never uninstalls anything from QGIS's site-packages (``--prefix``/``--user``
  could).
* CUDA or CPU wheels: from the NVIDIA driver (:mod:`gpu_driver`) and OS, torch
  and torchvision come together from one PyTorch index (``/whl/cpu``,
  ``/whl/cu126``, …), so they are always a matching pair; safetensors comes
  from the default index (PyPI or the user's pip configuration).
* ``--target`` ignores what is already installed, so pip also fetches e.g.
  numpy for torchvision. A constraints file keeps it at QGIS's numpy major
  version, and afterwards :func:`prune_duplicates` deletes from the staging
  folder every dependency QGIS already has in a version that meets all
  requirements — and numpy always: QGIS's GDAL is built against QGIS's numpy,
  which must never be shadowed.
* Everything goes into a fresh staging folder, is verified there in a
  separate Python process, and only then replaces the previous install (a
  rename). Failure or Cancel leaves the previous install as it was. When the
  old folder cannot be renamed (Windows keeps loaded DLLs locked) the new one
  waits as ``<folder>.new`` and replaces it at the next QGIS start
  (:func:`detect.activate_packages_dir`).
* The apply-only install (:data:`APPLY_ONLY`) runs the same way — pip
  ``--target``, prune, verify in a separate process, swap — with onnxruntime
  alone from the default index, into :func:`detect.apply_packages_dir`: tens of
  MB instead of GBs, and a folder of its own, so neither install removes the other.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.errors import GeoMLError, InputError, JobCancelled
from ..core.progress import Feedback, ensure_feedback
from . import detect
from .gpu_driver import NvidiaInfo, detect_nvidia
from .interpreter import no_window_flags, pip_command, python_executable

TORCH_INDEX = "https://download.pytorch.org/whl"
PROTECTED = ("numpy",)  # QGIS's compiled packages depend on its own copy: never shadow it


class InstallError(GeoMLError):
    """pip failed, or what it installed does not work."""


@dataclass(frozen=True)
class Variant:
    """One way of getting torch + torchvision: a PyTorch wheel index (or the default index)."""

    key: str
    label: str
    index_url: Optional[str]  # None: the default index (PyPI or the pip configuration)
    cuda: Optional[tuple] = None  # CUDA version of the build
    min_capability: tuple = (0, 0)  # oldest GPU architecture the build supports
    max_capability: Optional[tuple] = None  # newest, where newer GPUs need a newer CUDA
    download: str = ""


# Newest first. PyTorch changes which CUDA builds it publishes with each release;
# update this table when it does (https://pytorch.org/get-started/locally/).
CUDA_VARIANTS = (
    Variant("cu130", "CUDA 13.0", f"{TORCH_INDEX}/cu130", (13, 0), (7, 5), download="about 2–3 GB"),
    Variant("cu128", "CUDA 12.8", f"{TORCH_INDEX}/cu128", (12, 8), (7, 0), download="about 2–3 GB"),
    Variant("cu126", "CUDA 12.6", f"{TORCH_INDEX}/cu126", (12, 6), (5, 0), (9, 0), download="about 2–3 GB"),
    Variant("cu118", "CUDA 11.8", f"{TORCH_INDEX}/cu118", (11, 8), (3, 7), (9, 0), download="about 2–3 GB"),
)
CPU_VARIANT = Variant("cpu", "CPU-only", f"{TORCH_INDEX}/cpu", download="about 200–300 MB")
DEFAULT_VARIANT = Variant("pypi", "PyPI's standard build", None, download="about 100 MB (macOS) to 3 GB (Linux)")
VARIANTS = (CPU_VARIANT, *CUDA_VARIANTS, DEFAULT_VARIANT)
# not a PyTorch build: the apply-only install (onnxruntime only, from the default index)
APPLY_ONLY = Variant("apply-only", "Apply-only (onnxruntime)", None, download="about 20–60 MB")
APPLY_ONLY_PACKAGES = ("onnxruntime",)
FULL_PACKAGES = ("torch", "torchvision", "safetensors")

# Newest CUDA a driver of this major version supports, when nvidia-smi's header does not say.
_DRIVER_CUDA = ((580, (13, 0)), (570, (12, 8)), (560, (12, 6)), (550, (12, 4)), (525, (12, 0)), (520, (11, 8)))


def variant_by_key(key: str) -> Variant:
    for v in VARIANTS:
        if v.key == key:
            return v
    raise InputError(f"Unknown PyTorch build '{key}'.")


def _fmt(version: Optional[tuple]) -> str:
    return ".".join(map(str, version)) if version else "?"


def choose_variant(nvidia: Optional[NvidiaInfo] = None, system: Optional[str] = None) -> tuple:
    """(Variant, reason): the build that fits this machine's OS and NVIDIA driver."""
    import platform

    system = system or platform.system()
    if system == "Darwin":
        return DEFAULT_VARIANT, "macOS: PyTorch's standard build (GeoML runs on the CPU there)."
    nvidia = nvidia if nvidia is not None else detect_nvidia()
    if not nvidia.present:
        return CPU_VARIANT, f"No NVIDIA GPU: {nvidia.describe()}. The CPU build is smaller and fits."
    drv_cuda = nvidia.cuda_version
    if drv_cuda is None and nvidia.driver_major is not None:
        drv_cuda = next((c for d, c in _DRIVER_CUDA if nvidia.driver_major >= d), None)
    caps = [g.capability for g in nvidia.gpus if g.capability]
    low, high = (min(caps), max(caps)) if caps else (None, None)
    gpu = nvidia.gpus[0].name
    usable = [v for v in CUDA_VARIANTS
              if (low is None or low >= v.min_capability)
              and (high is None or v.max_capability is None or high <= v.max_capability)]
    if drv_cuda is not None:
        # 1. the newest build the driver supports outright, in the driver's CUDA major version;
        # 2. else the oldest build of that major version (CUDA minor-version compatibility);
        # 3. else the newest build of an older major version.
        same = [v for v in usable if v.cuda[0] == drv_cuda[0]]
        choice = next((v for v in same if v.cuda <= drv_cuda), None) or (same[-1] if same else None)
        choice = choice or next((v for v in usable if v.cuda[0] < drv_cuda[0]), None)
        if choice is not None:
            return choice, (f"{gpu} with NVIDIA driver {nvidia.driver_version} (supports CUDA up to "
                            f"{_fmt(drv_cuda)}): the {choice.label} build fits.")
    return CPU_VARIANT, (f"{gpu} found, but NVIDIA driver {nvidia.driver_version} (CUDA up to {_fmt(drv_cuda)}) "
                         "is too old for PyTorch's CUDA builds: the CPU build is used. Update the NVIDIA driver "
                         "and install again to use the GPU.")


# -- the plan -------------------------------------------------------------------
@dataclass
class PipStep:
    title: str
    packages: list
    index_args: list  # ["--index-url", url], ["--no-index", "--find-links", folder] or [] (default index)
    source: str  # where from, in words


@dataclass
class InstallPlan:
    target: Path
    python: Optional[str]
    pip: Optional[list]
    variant: Variant
    reason: str
    steps: list
    primary: list  # distributions asked for: never pruned
    verify_names: list  # modules that must import afterwards
    constraints: str = ""
    extra_env: dict = field(default_factory=dict)
    download: str = "see the log"

    @property
    def staging(self) -> Path:
        return detect.staging_dir(self.target)

    @property
    def work_dir(self) -> Path:
        return self.target.parent / "tmp"

    @property
    def constraints_path(self) -> Path:
        return self.work_dir / "constraints.txt"

    @property
    def log_path(self) -> Path:
        return self.target.parent / f"install-{self.target.name}.log"

    def command(self, step: PipStep) -> list:
        if self.pip is None:
            raise InstallError("pip is not available for this QGIS's Python.", NO_PIP_HINT)
        return [*self.pip, "install", "--target", str(self.staging), "--upgrade", "--no-input",
                "--progress-bar", "off", "--disable-pip-version-check", "--no-warn-script-location",
                "--no-warn-conflicts",
                "--constraint", str(self.constraints_path), *step.index_args, *step.packages]

    @property
    def apply_only(self) -> bool:
        return self.variant.key == APPLY_ONLY.key

    def describe(self) -> str:
        lines = ["GeoML will install:"]
        for i, s in enumerate(self.steps, 1):
            lines.append(f"  {i}. {', '.join(s.packages)} — {s.title}, from {s.source}")
        lines += [
            f"into: {self.target}",
            f"Download: {self.download} (pip keeps a cache, so installing again is faster).",
            "Dependencies QGIS already has in a suitable version are not duplicated; QGIS's own Python packages "
            "(numpy, GDAL, …) are never changed. No administrator rights are needed.",
            "",
            f"Python: {self.python or 'NOT FOUND'}",
            "Commands:",
        ]
        if self.apply_only:
            lines[len(self.steps) + 1:len(self.steps) + 1] = [
                "Apply-only: ONNX models (.onnx) are applied without PyTorch (Apply model, geoml:predict). "
                "Training, fine-tuning, few-shot mapping, GANs and GeoML's .safetensors models need the full "
                "install."]
        for s in self.steps:
            try:
                lines.append("  " + " ".join(_quote(a) for a in self.command(s)))
            except InstallError as exc:
                lines.append(f"  (cannot run: {exc})")
        return "\n".join(lines)


NO_PIP_HINT = ("Install pip for QGIS's Python (Debian/Ubuntu: `sudo apt install python3-pip`; Windows: run "
                "`python -m ensurepip` in the OSGeo4W shell), then try again.")


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


def source_args(source: Optional[str]) -> tuple:
    """(pip index arguments, description) for a custom source: an index URL or a folder of wheels."""
    if not source:
        return [], "the default package index (PyPI or your pip configuration)"
    if os.path.isdir(source):
        return ["--no-index", "--find-links", os.path.abspath(source)], f"the folder {os.path.abspath(source)} (offline)"
    if re.match(r"^(https?|file)://", source):
        return ["--index-url", source], source
    raise InputError(f"'{source}' is neither a folder of wheel files nor an index URL (http://, https://, file://).")


def numpy_constraint() -> str:
    try:
        import numpy

        return f"numpy<{int(numpy.__version__.split('.')[0]) + 1}\n"
    except Exception:
        return ""


def make_plan(variant: Optional[Variant] = None, target=None, source: Optional[str] = None,
              packages: Optional[list] = None, python: Optional[str] = None, reason: str = "") -> InstallPlan:
    """What to run. ``packages``/``source`` are for offline folders, mirrors and tests.

    ``variant`` :data:`APPLY_ONLY`: onnxruntime alone, into :func:`detect.apply_packages_dir`
    (``target`` then names that folder itself).
    """
    if variant is None:
        variant, reason = choose_variant()
    apply_only = variant.key == APPLY_ONLY.key
    if target is not None:
        target = Path(target)
    else:
        target = detect.apply_packages_dir() if apply_only else detect.packages_dir()
    python = python or python_executable()
    pip = pip_command(python) if python else None
    default_pkgs = list(APPLY_ONLY_PACKAGES if apply_only else FULL_PACKAGES)
    if packages is not None or source:
        args, where = source_args(source)
        pkgs = list(packages) if packages is not None else default_pkgs
        title = "from your package source (the build choice does not apply)" if packages is None else "as requested"
        steps = [PipStep(title, pkgs, args, where)]
        names = [re.split(r"[<>=!~\[;@ ]", p)[0] for p in pkgs]  # "torch==2.5.1" → "torch"
        verify = [n.replace("-", "_") for n in names] if packages is not None else \
            (list(APPLY_ONLY_PACKAGES) if apply_only else list(detect.REQUIRED))
        pkgs = names
    elif apply_only:
        steps = [PipStep("ONNX runtime: applies .onnx models without PyTorch", default_pkgs, [],
                         source_args(None)[1])]
        pkgs, verify = default_pkgs, list(APPLY_ONLY_PACKAGES)
    else:
        default_where = source_args(None)[1]
        if variant.index_url is None:
            steps = [PipStep(f"PyTorch {variant.label}", ["torch", "torchvision", "safetensors"], [], default_where)]
        else:
            steps = [
                PipStep(f"PyTorch {variant.label} build", ["torch", "torchvision"],
                        ["--index-url", variant.index_url], variant.index_url),
                PipStep("model file format", ["safetensors"], [], default_where),
            ]
        pkgs = ["torch", "torchvision", "safetensors"]
        verify = list(detect.REQUIRED)
    return InstallPlan(target=target, python=python, pip=pip, variant=variant, reason=reason, steps=steps,
                       primary=pkgs, verify_names=verify, constraints=numpy_constraint(),
                       download=variant.download if (packages is None and not source) else "see the log")


# -- running pip -------------------------------------------------------------------
def pip_env(plan: InstallPlan) -> dict:
    env = dict(os.environ)
    for k in ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(k, None)
    tmp = str(plan.work_dir)  # beside the target: same disk (fast move), not a small /tmp
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_ROOT_USER_ACTION": "ignore",
                "PYTHONUNBUFFERED": "1",
                "PYTHONIOENCODING": "utf-8", "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp})
    env.update(plan.extra_env)
    return env


def _stream(cmd: list, env: dict, fb: Feedback, on_line) -> int:
    """Run ``cmd``, passing each output line to ``on_line``; kill it when the job is cancelled."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, text=True, encoding="utf-8", errors="replace", bufsize=1,
                            **no_window_flags())
    lines: queue.Queue = queue.Queue()

    def reader():
        for line in proc.stdout:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            if fb.cancelled():
                raise JobCancelled("Installation cancelled; nothing was changed.")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return proc.wait()
            if line.strip():
                on_line(line)
    finally:  # cancelled, or any error while reading: never leave pip running
        if proc.poll() is None:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_FAILURES = (
    (r"No matching distribution|Could not find a version that satisfies",
     "No build of these packages was found for this Python ({py}) and system at that source. Choose another "
     "build (e.g. CPU only) or check the package source."),
    (r"SSLError|CERTIFICATE_VERIFY_FAILED|certificate verify failed",
     "A secure connection could not be made (often a company proxy that inspects traffic). Ask IT for the "
     "proxy's certificate, or use an offline folder of wheel files as package source."),
    (r"ProxyError|407 Proxy|Tunnel connection failed",
     "The proxy refused the connection. Configure pip's proxy (pip.ini / pip.conf `proxy = …`) and try again."),
    (r"NewConnectionError|Temporary failure in name resolution|Name or service not known|Network is unreachable|"
     r"ConnectTimeout|ReadTimeout|Connection aborted|ConnectionResetError|timed out",
     "The package server could not be reached. Check the internet connection and try again "
     "(downloads already finished are cached)."),
    (r"No space left on device|Errno 28|not enough space",
     "The disk is full. Free some space (CUDA builds need several GB) and try again."),
    (r"Access is denied|WinError 5|Permission denied|WinError 32",
     "A file could not be written: another program (antivirus, another QGIS) may be holding it. Close other "
     "QGIS windows, restart QGIS and try again."),
    (r"Can not combine '--user' and '--target'",
     "pip is configured to install with --user; GeoML cannot override that (remove `user = true` from pip's "
     "configuration)."),
)


def explain_failure(log: str) -> str:
    for pattern, hint in _FAILURES:
        if re.search(pattern, log, re.IGNORECASE):
            return hint.format(py=f"{sys.version_info[0]}.{sys.version_info[1]}")
    return f"See the log above; {detect.DIAGNOSTICS_ACTION} → Copy gives details to report."


# -- after pip ---------------------------------------------------------------------
def _requirement_cls():
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        except ImportError:
            return None
    return Requirement


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(paths: list) -> dict:
    from importlib import metadata

    out = {}
    for d in metadata.distributions(path=[str(p) for p in paths]):
        name = d.metadata["Name"]
        if name and _canon(name) not in out:
            out[_canon(name)] = d
    return out


def prune_duplicates(staging: Path, keep, outside_path: list) -> list:
    """Delete staged dependencies QGIS already has in a version meeting every staged requirement.

    ``keep``: distributions asked for (never deleted). Protected packages
    (numpy) are deleted whenever QGIS has them at all. Returns the names deleted.
    """
    staged = _distributions([staging])
    outside = _distributions(outside_path)
    keep = {_canon(k) for k in keep}
    requirement = _requirement_cls()
    reqs = []
    if requirement is not None:
        for d in staged.values():
            for text in d.requires or []:
                try:
                    r = requirement(text)
                except Exception:
                    continue
                if r.marker is None or r.marker.evaluate({"extra": ""}):
                    reqs.append(r)
    removed = []
    for name, dist in sorted(staged.items()):
        if name in keep or name not in outside:
            continue
        have = outside[name].version
        if name not in PROTECTED:
            if requirement is None:
                continue
            wanted = [r for r in reqs if _canon(r.name) == name]
            if not all(r.specifier.contains(have, prereleases=True) for r in wanted):
                continue
        label = f"{dist.metadata['Name']} {dist.version} (QGIS has {have})"
        _delete_distribution(staging, dist)
        removed.append(label)
    return removed


def _delete_distribution(root: Path, dist) -> None:
    root = root.resolve()
    info_dir = Path(str(dist._path)).resolve()  # the .dist-info folder
    parents = set()
    for f in dist.files or []:
        p = (root / str(f)).resolve()
        if root in p.parents and p.is_file():
            p.unlink()
            parents.add(p.parent)
    for d in sorted(parents, key=lambda x: len(x.parts), reverse=True):
        while d != root and root in d.parents:
            try:
                d.rmdir()  # only when empty
            except OSError:
                break
            d = d.parent
    if info_dir.exists() and root in info_dir.parents:
        shutil.rmtree(info_dir, ignore_errors=True)


def restart_reason(names) -> Optional[str]:
    """Why QGIS must restart before the new packages are used, if it must."""
    loaded = [n for n in names if n in sys.modules and sys.modules[n] is not None]
    if not loaded:
        return None
    where = ", ".join(f"{n} from {os.path.dirname(getattr(sys.modules[n], '__file__', '') or '?')}" for n in loaded)
    return (f"This QGIS session has already loaded {where}; a loaded package cannot be replaced. "
            "Restart QGIS to use the new installation.")


def verify(plan: InstallPlan) -> detect.DepsStatus:
    """Import the staged packages in a separate Python process."""
    return detect.probe_subprocess(extra_paths=[plan.staging], names=plan.verify_names, python=plan.python)


def verification_problems(plan: InstallPlan, status: detect.DepsStatus) -> list:
    if set(plan.verify_names) == set(detect.REQUIRED):
        return detect.problems(status)
    out = [status.probe_error] if status.probe_error else []
    for name in plan.verify_names:
        p = status.package(name)
        if not p.ok:
            out.append(f"{name} does not import after installing: {p.error or 'not found'}")
    return out


@dataclass
class InstallResult:
    target: Path
    removed: list
    status: detect.DepsStatus
    restart: Optional[str]  # why a restart is needed, or None
    pending: bool  # True: the new folder replaces the old one at the next QGIS start
    log_path: Optional[Path] = None


def run_plan(plan: InstallPlan, feedback: Optional[Feedback] = None) -> InstallResult:
    """Run pip for each step, prune, verify, then swap the new folder in (see module docstring)."""
    fb = ensure_feedback(feedback)
    if plan.python is None:
        raise InstallError("The Python interpreter of this QGIS could not be found.",
                           f"{detect.DIAGNOSTICS_ACTION} lists where GeoML looked.")
    if plan.pip is None:
        raise InstallError(f"pip is not available for {plan.python}.", NO_PIP_HINT)
    log: list = []

    def emit(line: str) -> None:
        log.append(line)
        fb.log(line)

    plan.target.parent.mkdir(parents=True, exist_ok=True)
    for d in (plan.staging, plan.work_dir):
        shutil.rmtree(d, ignore_errors=True)
    plan.work_dir.mkdir(parents=True)
    plan.constraints_path.write_text(plan.constraints, encoding="utf-8")
    env = pip_env(plan)
    n = len(plan.steps)
    try:
        for i, step in enumerate(plan.steps):
            sub = fb.sub(0.85 * i / n, 0.85 * (i + 1) / n)
            cmd = plan.command(step)
            emit(f"[{i + 1}/{n}] {' '.join(_quote(a) for a in cmd)}")
            sub.progress(0.02, f"Installing {', '.join(step.packages)}…")
            state = {"f": 0.02}

            def on_line(line: str, sub=sub, state=state) -> None:
                emit(line)
                low = line.lstrip().lower()
                if low.startswith(("collecting", "downloading", "using cached", "obtaining", "processing")):
                    state["f"] = min(0.75, state["f"] + 0.03)
                elif low.startswith("installing collected packages"):
                    state["f"] = 0.8
                sub.progress(state["f"], line[:120])

            rc = _stream(cmd, env, fb, on_line)
            if rc != 0:
                text = "\n".join(log)
                raise InstallError(f"pip failed (exit code {rc}) while installing {', '.join(step.packages)}.",
                                   explain_failure(text))
        fb.progress(0.86, "Removing duplicates of packages QGIS already has…")
        outside = [p for p in sys.path if p and Path(p).resolve() not in (plan.staging.resolve(), plan.target.resolve())]
        removed = prune_duplicates(plan.staging, plan.primary, outside)
        for r in removed:
            emit(f"Not duplicated (QGIS's own copy is used): {r}")
        fb.progress(0.9, "Checking that the new packages import…")
        emit("Checking the installation in a separate Python process…")
        status = verify(plan)
        found = verification_problems(plan, status)
        if found:
            raise InstallError("The packages were installed but do not work: " + " ".join(found),
                               "Nothing was changed. Try another build (e.g. CPU only), or copy the diagnostics "
                               "into a bug report.")
        fb.check()
        restart = restart_reason(plan.verify_names)
        swapped = detect.swap_in_new(plan.target)
        if not swapped:
            restart = ("The previous installation is in use by this QGIS session; the new one replaces it "
                       "when QGIS restarts.")
            emit(restart)
        emit(f"Installed into {plan.target}.")
        fb.progress(1.0, "Installed.")
        return InstallResult(plan.target, removed, status, restart, not swapped, _write_log(plan, log))
    except BaseException:
        if plan.staging.exists():
            shutil.rmtree(plan.staging, ignore_errors=True)
        _write_log(plan, log)
        raise
    finally:
        shutil.rmtree(plan.work_dir, ignore_errors=True)


def _write_log(plan: InstallPlan, log: list) -> Optional[Path]:
    try:
        plan.log_path.write_text("\n".join(log) + "\n", encoding="utf-8")
        return plan.log_path
    except OSError:
        return None


def remove_packages(target=None) -> Optional[str]:
    """Delete the private folder. Returns why QGIS must restart first/after, if it must."""
    target = Path(target) if target is not None else detect.packages_dir()
    loaded = [n for n, m in list(sys.modules.items())
              if m is not None and str(getattr(m, "__file__", "") or "").startswith(str(target) + os.sep)]
    for p in (target, detect.staging_dir(target), target.with_name(target.name + ".old")):
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)  # files in use stay; reported below
    if str(target) in sys.path:
        sys.path.remove(str(target))
    detect.invalidate()
    if target.exists():
        return (f"Some files in {target} are in use (QGIS has loaded them). Restart QGIS, then delete the folder "
                "or use Remove again.")
    if loaded:
        return "The removed packages are still loaded in this QGIS session until QGIS restarts."
    return None

"""Inspect torch / torchvision / safetensors: versions, builds, GPUs, import errors.

Standard library only. :mod:`geoml_plugin.deps.detect` runs this file as a script in
a separate Python process, with ``{"path": [...], "names": [...]}`` as JSON on
stdin, so that a broken PyTorch (missing DLL, CUDA/CPU mismatch, even a crash)
cannot harm the QGIS process; when torch is already loaded in QGIS it calls
:func:`probe` directly instead. The script prints one line ``MARKER + json`` on
stdout and writes ``importing <name>`` to stderr before each import, so a crash
can be traced to the package that caused it.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys

MARKER = "@@GEOML_PROBE@@"
DEFAULT_NAMES = ("safetensors", "torch", "torchvision")
_AS_SCRIPT = False


def dist_info(name: str) -> tuple:
    """(version, requirements) of an installed distribution, without importing it."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None, []
    try:
        return metadata.version(name), list(metadata.requires(name) or [])
    except Exception:
        return None, []


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 2000 else text[:2000] + "…"


def _cuda_tuple_text(value) -> str | None:
    """torchvision reports CUDA as '12.1', as 12010 or '12010'; return 'major.minor'."""
    if value in (None, "", 0, -1):
        return None
    text = str(value)
    if text.isdigit() and int(text) >= 1000:
        n = int(text)
        return f"{n // 1000}.{(n % 1000) // 10}"
    return text


def _package(name: str) -> dict:
    info: dict = {"name": name, "found": False, "origin": None, "dist_version": None, "requires": [],
                  "imported": False, "version": None, "location": None, "error": None}
    try:
        spec = importlib.util.find_spec(name)
    except Exception as exc:  # a meta-path hook or a broken package
        info["error"] = _error_text(exc)
        return info
    if spec is None:
        return info
    info["found"] = True
    info["origin"] = spec.origin or (list(spec.submodule_search_locations or []) or [None])[0]
    info["dist_version"], info["requires"] = dist_info(name)
    if _AS_SCRIPT:  # in QGIS's own process these lines would only be noise
        sys.stderr.write(f"importing {name}\n")
        sys.stderr.flush()
    try:
        mod = importlib.import_module(name)
    except BaseException as exc:  # noqa: B036 - SystemExit/KeyboardInterrupt from a broken package too
        info["error"] = _error_text(exc)
        return info
    info["imported"] = True
    info["version"] = str(getattr(mod, "__version__", None) or info["dist_version"] or "")
    info["location"] = getattr(mod, "__file__", None)
    return info


def _torch_details(torch) -> dict:
    d: dict = {"cuda_build": getattr(torch.version, "cuda", None), "cuda_available": False, "devices": [],
               "cuda_error": None, "mps": False, "threads": None, "numpy": None, "numpy_error": None}
    try:
        d["threads"] = torch.get_num_threads()
    except Exception:
        pass
    try:
        d["cuda_available"] = bool(torch.cuda.is_available())
        for i in range(torch.cuda.device_count() if d["cuda_available"] else 0):
            p = torch.cuda.get_device_properties(i)
            d["devices"].append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                                 "capability": f"{p.major}.{p.minor}"})
    except Exception as exc:
        d["cuda_error"] = _error_text(exc)
    try:
        d["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except Exception:
        pass
    try:
        import numpy

        d["numpy"] = f"{numpy.__version__} ({numpy.__file__})"
        torch.from_numpy(numpy.zeros(2, dtype="float32")).sum()
    except Exception as exc:
        d["numpy_error"] = _error_text(exc)
    return d


def _torchvision_details(torchvision, torch) -> dict:
    d: dict = {"cuda_build": None, "ops_error": None}
    try:
        d["cuda_build"] = _cuda_tuple_text(getattr(torchvision.version, "cuda", None))
    except Exception:
        pass
    try:  # the compiled operators are what a mismatched pair breaks
        torchvision.ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
    except Exception as exc:
        d["ops_error"] = _error_text(exc)
    return d


def probe(names=DEFAULT_NAMES) -> dict:
    """Import each package in turn and describe what was found."""
    import platform

    out: dict = {
        "python": sys.version.split()[0], "executable": sys.executable,
        "platform": platform.platform(), "machine": platform.machine(),
        "packages": {}, "torch": None, "torchvision": None,
    }
    for name in names:
        if name == "torchvision" and "torch" in out["packages"] and not out["packages"]["torch"]["imported"]:
            info = _package_not_imported("torchvision", "not imported because torch failed")
        else:
            info = _package(name)
        out["packages"][name] = info
    torch = sys.modules.get("torch")
    if torch is not None and out["packages"].get("torch", {}).get("imported"):
        out["torch"] = _torch_details(torch)
        tv = sys.modules.get("torchvision")
        if tv is not None and out["packages"].get("torchvision", {}).get("imported"):
            out["torchvision"] = _torchvision_details(tv, torch)
    return out


def _package_not_imported(name: str, why: str) -> dict:
    info = {"name": name, "found": False, "origin": None, "dist_version": None, "requires": [],
            "imported": False, "version": None, "location": None, "error": None, "skipped": why}
    try:
        spec = importlib.util.find_spec(name)
    except Exception as exc:
        info["error"] = _error_text(exc)
        return info
    if spec is not None:
        info["found"] = True
        info["origin"] = spec.origin
        info["dist_version"], info["requires"] = dist_info(name)
    return info


def main(argv) -> int:
    """Arguments as JSON in ``argv[1]``, or on stdin (long search paths exceed Windows' command line)."""
    global _AS_SCRIPT
    _AS_SCRIPT = True
    text = argv[1] if len(argv) > 1 else sys.stdin.read()
    args = json.loads(text) if text.strip() else {}
    if args.get("path"):
        sys.path[:] = list(args["path"])  # exactly QGIS's search path, not this script's folder
    result = probe(tuple(args.get("names") or DEFAULT_NAMES))
    sys.stdout.write("\n" + MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Find the Python interpreter behind this QGIS, and the pip to run with it.

Inside QGIS, ``sys.executable`` is not always Python:

* Windows (OSGeo4W and the standalone installer): it is ``qgis-bin.exe`` (or
  ``qgis-ltr-bin.exe``); the interpreter is ``python.exe`` in ``sys.exec_prefix``
  (``…\\apps\\Python3xx\\python.exe``).
* macOS (official bundle): it is the ``QGIS`` app binary; the interpreter is
  ``bin/python3`` beside it or under ``sys.exec_prefix``.
* Linux packages: usually ``/usr/bin/python3`` already, sometimes ``/usr/bin/qgis``.

Every candidate is *run* and must report the same Python major.minor,
pointer size and installation (``sys.base_prefix``) as this process, so wheels
pip picks fit the running QGIS and a probe with this process's ``sys.path``
finds the same standard library: a pyenv or conda Python 3.x earlier on
``PATH`` (which embedded Python may even report as ``sys.executable``) is a
different installation whose own standard library does not match.
Only the standard library is used; nothing here imports Qt or QGIS.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

_CHECK = ("import os, struct, sys; print('%d.%d %d' % (sys.version_info[0], sys.version_info[1], "
          "struct.calcsize('P') * 8)); print(os.path.realpath(sys.base_prefix))")
_cache: dict = {}


def expected_tag() -> str:
    import struct

    return f"{sys.version_info[0]}.{sys.version_info[1]} {struct.calcsize('P') * 8}"


def no_window_flags() -> dict:
    """subprocess keyword arguments that keep a console window from flashing up on Windows."""
    if sys.platform == "win32":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {}


def candidates() -> list[str]:
    """Possible interpreter paths, most likely first (may include non-existing ones)."""
    exe = Path(sys.executable) if sys.executable else None
    out: list[Path] = []
    if exe is not None and exe.name.lower().startswith("python"):
        out.append(exe)
    prefixes = [Path(p) for p in dict.fromkeys([sys.exec_prefix, sys.prefix, sys.base_exec_prefix]) if p]
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if sys.platform == "win32":
        out += [p / "python.exe" for p in prefixes]
        out += [p / "python3.exe" for p in prefixes]
        if exe is not None:  # …\bin\qgis-bin.exe → …\apps\Python3xx\python.exe
            out += [Path(p) for p in sorted(glob.glob(str(exe.parent.parent / "apps" / "Python3*" / "python.exe")))]
    else:
        for p in prefixes:
            out += [p / "bin" / f"python{ver}", p / "bin" / "python3", p / "bin" / "python"]
        if exe is not None:  # QGIS.app/Contents/MacOS/QGIS → …/MacOS/bin/python3
            out += [exe.parent / "bin" / f"python{ver}", exe.parent / "bin" / "python3"]
    for name in (f"python{ver}", "python3", "python"):
        found = shutil.which(name)
        if found:
            out.append(Path(found))
    return [str(p) for p in dict.fromkeys(out)]


def _matches(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        res = subprocess.run([path, "-c", _CHECK], capture_output=True, text=True, timeout=30, **no_window_flags())
    except (OSError, subprocess.SubprocessError):
        return False
    lines = res.stdout.strip().splitlines()
    return res.returncode == 0 and len(lines) == 2 and lines[0] == expected_tag() and \
        os.path.normcase(lines[1]) == os.path.normcase(os.path.realpath(sys.base_prefix))


def python_executable(refresh: bool = False) -> Optional[str]:
    """The interpreter running this QGIS's Python, or None when none can be found."""
    if "python" not in _cache or refresh:
        _cache["python"] = next((c for c in candidates() if _matches(c)), None)
    return _cache["python"]


def pip_command(python: str) -> Optional[list[str]]:
    """Cached :func:`find_pip`."""
    key = ("pip", python)
    if key not in _cache:
        _cache[key] = find_pip(python)
    return _cache[key]


def find_pip(python: str) -> Optional[list[str]]:
    """``[python, "-m", "pip"]``, or a pip wheel run directly when QGIS's Python has no pip module.

    Debian's QGIS does not depend on python3-pip; pip's own wheel (bundled by
    ``ensurepip`` or shipped in ``/usr/share/python-wheels``) runs as a zip
    application without being installed.
    """
    try:
        res = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60,
                             **no_window_flags())
        if res.returncode == 0:
            return [python, "-m", "pip"]
    except (OSError, subprocess.SubprocessError):
        return None
    for wheel in bundled_pip_wheels(python):
        return [python, os.path.join(wheel, "pip")]
    return None


def bundled_pip_wheels(python: str) -> list[str]:
    """pip wheels that ship with the interpreter (newest first)."""
    code = ("import os, sys\n"
            "try:\n import ensurepip\n d = os.path.join(os.path.dirname(ensurepip.__file__), '_bundled')\n"
            "except Exception:\n d = ''\n"
            "print(d)")
    dirs = ["/usr/share/python-wheels"]
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30, **no_window_flags())
        if res.returncode == 0 and res.stdout.strip():
            dirs.insert(0, res.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    wheels: list[str] = []
    for d in dirs:
        wheels += glob.glob(os.path.join(d, "pip-*.whl"))
    return sorted(wheels, reverse=True)

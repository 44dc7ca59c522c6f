#!/usr/bin/env python3
"""Stage the plugin folder and build ``dist/geoml_plugin.zip``.

The zip has one top folder ``geoml_plugin/`` holding the code, ``metadata.txt``,
``LICENSE`` and ``resources/``; no ``__pycache__``/``.pyc``. It is checked with
:func:`validate_zip`, which applies the plugins.qgis.org upload validator's
rules that need no network (the site also checks that the URLs answer).
"""
from __future__ import annotations

import argparse
import configparser
import io
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "geoml_plugin"
MAX_SIZE = 25_000_000
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker", "repository")
PLACEHOLDER_URLS = {"tracker": "http://bugs", "repository": "http://repo", "homepage": "http://homepage"}
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".part")
# left-overs of a working tree: hidden files and folders (.DS_Store, .mypy_cache, editor swap files), backups
SKIP_PATTERNS = (".*", "*~", "*.orig", "*.rej", "*.bak")


def stage(dest: Path) -> Path:
    """Copy the plugin into ``dest/geoml_plugin`` as it is installed in QGIS."""
    target = dest / PKG
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns(*SKIP_DIRS, *(f"*{s}" for s in SKIP_SUFFIXES), *SKIP_PATTERNS)
    shutil.copytree(ROOT / PKG, target, ignore=ignore)
    shutil.copytree(ROOT / "resources", target / "resources", ignore=ignore)
    for f in ("metadata.txt", "LICENSE", "README.md"):
        shutil.copy2(ROOT / f, target / f)
    return target


def build_zip(staged: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(staged, f"{PKG}/")
        for path in sorted(staged.rglob("*")):
            rel = path.relative_to(staged.parent).as_posix()
            zf.write(path, rel + ("/" if path.is_dir() else ""))
    os.replace(tmp, out)
    return out


def validate_zip(path: Path) -> list[str]:
    """Errors the plugins.qgis.org validator would raise (offline checks)."""
    errors: list[str] = []
    if path.stat().st_size > MAX_SIZE:
        errors.append(f"zip is {path.stat().st_size} bytes, over 25 MB")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        errors += _entry_errors(names)
        if zf.testzip():
            errors.append("bad zip (CRC error)")
        if not names or "/" not in names[0]:
            return errors + ["no top folder"]
        top = names[0].split("/")[0]
        errors += _layout_errors(names, top)
        if f"{top}/metadata.txt" not in names:
            return errors
        md, fatal = _read_metadata(zf.read(f"{top}/metadata.txt"))
        if fatal:
            return errors + [fatal]
        errors += _metadata_errors(md, top, names)
    return errors


def _entry_errors(names: list) -> list[str]:
    """Entries the validator refuses: path information, compiled files, forbidden folders."""
    errors = []
    for n in names:
        if ".." in n or n.startswith("/"):
            errors.append(f"path information in {n}")
        if ".pyc" in n:
            errors.append(f".pyc file {n}")
        for bad in ("__MACOSX", ".git", "__pycache__"):
            if bad in n.split("/"):
                errors.append(f"forbidden folder {bad} in {n}")
    return errors


def _layout_errors(names: list, top: str) -> list[str]:
    """One top folder named as a Python identifier, holding the files every plugin needs."""
    errors = []
    if len({n.split("/")[0] for n in names}) > 1:
        errors.append("more than one top folder")
    if not top.isidentifier() or not re.match(r"^[A-Za-z][A-Za-z0-9-_]+$", top):
        errors.append(f"top folder '{top}' is not a Python identifier")
    for req in (f"{top}/__init__.py", f"{top}/metadata.txt", f"{top}/LICENSE"):
        if req not in names:
            errors.append(f"missing {req}")
    return errors


def _read_metadata(raw: bytes) -> tuple:
    """(the [general] section as a dict, None) or (None, the error that stops the metadata checks)."""
    parser = configparser.ConfigParser()
    parser.optionxform = str
    try:
        parser.read_file(io.StringIO(raw.decode("utf8")))
    except configparser.Error as exc:
        return None, f"metadata.txt cannot be read: {exc}"
    if not parser.has_section("general"):
        return None, "metadata.txt has no [general] section"
    bad = []  # QGIS reads metadata.txt with interpolation: a lone % makes the whole file unreadable
    for key in parser.options("general"):
        try:
            parser.get("general", key)
        except configparser.InterpolationError:
            bad.append(key)
    if bad:
        return None, (f"metadata.txt has a % sign (QGIS reads it with interpolation): in {', '.join(bad)}; "
                      "write %% or 'percent'")
    return dict(parser.items("general")), None


def _metadata_errors(md: dict, top: str, names: list) -> list[str]:
    """Required keys present, real URLs, no slash in the author, the icon in the zip."""
    errors = [f"metadata lacks {k}" for k in REQUIRED if not md.get(k, "").strip()]
    for key, forbidden in PLACEHOLDER_URLS.items():
        url = md.get(key)
        if url is None and key == "homepage":
            continue
        if not url or url.strip() == forbidden or not re.match(r"^https?://[^/\s]+\.[^/\s]+(/\S*)?$", url.strip()):
            errors.append(f"metadata {key} is not a real URL: {url!r}")
    if "/" in md.get("author", ""):
        errors.append("author contains a slash")
    icon = md.get("icon", "").removeprefix("./")
    if icon and f"{top}/{icon}" not in names:
        errors.append(f"icon {icon} not in the zip")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage-only", action="store_true", help="only stage build/plugin/geoml_plugin")
    ap.add_argument("--out", default=str(ROOT / "dist" / f"{PKG}.zip"))
    args = ap.parse_args()
    staged = stage(ROOT / "build" / "plugin")
    if args.stage_only:
        print(f"staged {staged}")
        return 0
    out = build_zip(staged, Path(args.out))
    errors = validate_zip(out)
    for e in errors:
        print(f"INVALID: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"{out} ({out.stat().st_size / 1e6:.2f} MB) passes the plugin-site validator checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())

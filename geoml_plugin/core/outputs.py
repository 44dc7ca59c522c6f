"""File safety for every output a job writes (rasters, models, reports, tiles).

Checks before any work (the folder exists and is writable, the output is not one of
the job's inputs), a clear message when writing fails (full disk, permission), and the
write-to-a-temporary-sibling-then-rename helpers that leave an earlier file as it was.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid

from .errors import InputError, OutputError


def check_writable(path: str) -> None:
    """Fail early, before any work, when an output cannot be written."""
    if not path:
        raise InputError("No output file was given.")
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise InputError(f"The output folder '{folder}' does not exist.")
    if not os.access(folder, os.W_OK):
        raise InputError(f"The output folder '{folder}' is not writable.")
    if os.path.isdir(path):
        raise InputError(f"The output '{path}' is a folder, not a file name.")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"The output file '{path}' exists and cannot be overwritten.")


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_not_an_input(output: str, inputs: dict) -> None:
    """Refuse an output that is one of the job's inputs: it would be replaced when the job ends.

    ``inputs`` maps what each input is ("input raster", "labels" …) to its path or
    QGIS/OGR source string (``path|layername=…``).
    """
    if not output:
        return
    for what, source in inputs.items():
        path = str(source or "").split("|")[0]
        if path and not path.startswith("/vsi") and _same_file(output, path):
            raise InputError(f"The output '{output}' is the {what}: writing it would destroy the {what}.",
                             "Choose another file name for the output.")


_CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "the disk is read-only"}


# Less free space than this in the folder of an output that failed: the disk is full.
FULL_DISK_BYTES = 1024 * 1024


def _no_space_left(path: str) -> bool:
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < FULL_DISK_BYTES
    except OSError:
        return False


def output_error(path: str, exc: BaseException) -> OutputError:
    """The error a user sees when writing ``path`` failed with ``exc`` (an OSError, a GDAL RuntimeError…)."""
    if isinstance(exc, OSError):
        cause = _CAUSES.get(exc.errno) or exc.strerror or str(exc)
    else:
        text = str(exc).strip().rstrip(".")
        cause = next((c for e, c in _CAUSES.items() if os.strerror(e).lower() in text.lower()), None)
        if cause is None:  # GDAL says only e.g. 'TIFFWriteDirectoryTagData:IO error writing tag data' on a full disk
            cause = _CAUSES[errno.ENOSPC] if _no_space_left(path) else text
    hint = ("Free some disk space or choose another output folder." if cause.startswith("the disk")
            else "Choose another output folder." if cause == "permission denied" else None)
    return OutputError(f"Cannot write '{path}': {cause}. Nothing was changed at that path.", hint)


def snapshot_files(paths) -> dict:
    """The bytes of each small file (None where there is none), to put back if a commit fails part way."""
    saved = {}
    for p in paths:
        try:
            with open(p, "rb") as fh:
                saved[p] = fh.read()
        except FileNotFoundError:
            saved[p] = None
    return saved


def restore_files(saved: dict) -> None:
    """Best effort: put the files of :func:`snapshot_files` back as they were."""
    for p, data in saved.items():
        try:
            if data is None:
                if os.path.exists(p):
                    os.remove(p)
                continue
            tmp = temp_sibling(p, ".restore")
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, p)
        except OSError:
            pass


def temp_sibling(path: str, suffix: str = ".tif") -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.part-{uuid.uuid4().hex[:8]}{suffix}")


def write_text_atomic(path: str, text: str) -> None:
    """Write ``path`` through a temporary sibling; a failure leaves an earlier file as it was and raises
    :class:`OutputError`."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".geoml-", suffix=".part")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path, exc) from exc
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def check_outputs(outputs, inputs: dict) -> None:
    """Fail early when an output cannot be written or is one of the job's inputs.

    ``outputs`` lists the output paths (empty ones are skipped); each is checked with
    :func:`check_writable`, then :func:`check_not_an_input` against ``inputs``.
    """
    for path in outputs:
        if path:
            check_writable(path)
            check_not_an_input(path, inputs)

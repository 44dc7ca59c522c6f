"""File safety and file names for every output a job writes (rasters, models, reports, tiles).

Checks before any work (the folder exists and is writable, the output is not one of
the job's inputs), a clear message when writing fails (full disk, permission), and the
write-to-a-temporary-sibling-then-rename helpers that leave an earlier file as it was.

The naming rules live here too, shared by the dialogs, the panels and the Processing
algorithms: the suffix an output of each kind gets when it has none (:func:`output_name`),
where an output goes when no path is given (:func:`default_output`, a temporary folder), and
the names of the files written beside an output (:func:`sidecar_name`).
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from typing import Callable, Iterable, Optional

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


def write_report_then_model(reports: Iterable[str], write_report: Optional[Callable[[], object]],
                            write_model: Callable[[], object]) -> None:
    """A training job's last step: the report first, the model last. If either fails, the report files
    ``reports`` are put back as they were before the run (an earlier run's report comes back; none where there
    was none); the model is replaced only when complete (``save_model`` writes through a temporary sibling)."""
    saved = snapshot_files(list(reports))
    try:
        if write_report is not None:
            write_report()
        write_model()
    except BaseException:
        restore_files(saved)
        raise


# -- output names ------------------------------------------------------------------------------------------
# kind → (the suffix added to a name that has none of the accepted ones, the accepted suffixes)
OUTPUT_SUFFIXES = {
    "raster": (".tif", (".tif", ".tiff")),
    "model": (".safetensors", (".safetensors", ".geoml")),
    "onnx": (".onnx", (".onnx",)),
    "geopackage": (".gpkg", (".gpkg",)),
}

# the files written beside an output ``x.ext``: ``x`` + this
SIDECARS = {
    "confidence": "_confidence.tif",  # the winning class's probability (Apply model, few-shot panel)
    "preview": "_preview.tif",  # the few-shot panel's coarse preview of the visible area
    "classes": "_classes.tif",  # fine-tuning's maps of the training raster, beside the model
    "values": "_values.tif",  # … of a regression model
    "finetune_report": "_report.html",  # beside the model
    "gan_report": "_report.png",  # beside the model
    "metrics": ".json",  # beside the HTML report
    "losses": "_losses.csv",  # beside the PNG report
    "style": ".qml",  # beside a raster: QGIS loads it as the layer's default style
}


def output_name(path: str, kind: str) -> str:
    """``path`` with the suffix of ``kind`` (``OUTPUT_SUFFIXES``) appended when it ends with none of the accepted
    ones (case-insensitive): ``x`` → ``x.safetensors``, ``x.tif`` stays, ``x.TIFF`` stays, ``x.png`` → ``x.png.tif``
    for a raster. An empty path stays empty."""
    suffix, accepted = OUTPUT_SUFFIXES[kind]
    if not path or path.lower().endswith(accepted):
        return path
    return path + suffix


def sidecar_name(path: str, what: str) -> str:
    """The file ``what`` (``SIDECARS``) written beside ``path``: ``/d/x.tif`` → ``/d/x_confidence.tif``."""
    return os.path.splitext(path)[0] + SIDECARS[what]


def temp_output_folder(purpose: str = "") -> str:
    """A new temporary folder for outputs when none was chosen (``geoml_…``, or ``geoml_<purpose>_…``); the system
    may clear it, and the dialogs' help says so."""
    return tempfile.mkdtemp(prefix=f"geoml_{purpose}_" if purpose else "geoml_")


class OutputFolder:
    """Where a panel writes: the folder the user chose, else one temporary folder (:func:`temp_output_folder`)
    made on first use and kept while the panel lives, so its earlier outputs stay beside the new ones."""

    def __init__(self, purpose: str = ""):
        self.purpose = purpose
        self.temporary: Optional[str] = None

    def resolve(self, chosen: str) -> str:
        if chosen:
            return chosen
        if self.temporary is None:
            self.temporary = temp_output_folder(self.purpose)
        return self.temporary


def default_output(stem: str, kind: str, folder: Optional[str] = None) -> str:
    """Where an output goes when the user gave no path: ``stem`` with the suffix of ``kind`` in ``folder``, or in a
    new temporary folder (:func:`temp_output_folder`)."""
    return os.path.join(folder or temp_output_folder(), output_name(stem, kind))

"""One exception hierarchy, so every failure reaches the analyst the same way.

Messages are written for a GIS analyst, not a programmer: say what is wrong
with *their* input and what to do about it. The shell turns ``GeoMLError``
into a message bar / ``QgsProcessingException`` without a traceback; any
other exception is a bug and is reported with its traceback in the log.
"""
from __future__ import annotations


class GeoMLError(Exception):
    """Base class of all errors GeoML reports to the user."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # shown to the user as is
        return f"{self.message} {self.hint}" if self.hint else self.message


class InputError(GeoMLError):
    """A parameter, layer or file given by the user cannot be used."""


class RasterError(GeoMLError):
    """A raster cannot be opened, read or written."""


class OutputError(GeoMLError):
    """An output file cannot be written: disk full, no permission, a read-only disk."""


class ModelFileError(GeoMLError):
    """A model file is missing, not a GeoML model, or does not fit the job."""


class DependencyError(GeoMLError):
    """torch / torchvision / safetensors are missing or broken."""


class DeviceError(GeoMLError):
    """The requested compute device is not available."""


class JobCancelled(GeoMLError):
    """The user cancelled the job; nothing was written."""

    def __init__(self, message: str = "Cancelled by the user; no output was written."):
        super().__init__(message)


INTERNAL_ERROR = "GeoML hit an internal error"


def internal_error_message(exc: BaseException) -> str:
    """What the user sees of an exception that is not a :class:`GeoMLError`: a bug, or a bad input no check
    caught. The last line of defence (Processing base class, task wrapper) shows this short cause and keeps
    the traceback in the log for a bug report; known bad inputs never reach it."""
    if isinstance(exc, MemoryError):
        return "GeoML ran out of memory. Use a smaller batch size or area, or close other programs."
    cause = (str(exc).strip().splitlines() or [""])[0]
    cause = cause if len(cause) <= 200 else cause[:197] + "…"
    return (f"{INTERNAL_ERROR}: {type(exc).__name__}{': ' + cause if cause else ''}. "
            "The details are in the GeoML log (View ▸ Panels ▸ Log Messages); please include them in a bug report.")

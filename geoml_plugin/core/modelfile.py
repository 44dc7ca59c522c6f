"""GeoML model files: one safetensors file with GeoML's JSON metadata inside.

Layout: a standard safetensors file whose header ``__metadata__`` holds
``{"geoml": "<json>"}``. The JSON (:class:`ModelMeta`) says how to rebuild the
network (architecture name and arguments), what it expects (bands and their
normalisation, patch size, training pixel size and CRS), what it produces
(task, classes with colours, target units) and where it came from
(provenance, metrics). The metadata can be read without torch, so dialogs can
describe a model before any heavy import.

A model file is data, never code: loading parses JSON and raw tensors and
never unpickles. PyTorch ``.pt``/``.pth`` pickles are refused with a message.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .classes import ClassInfo, classes_from_dicts
from .errors import InputError, ModelFileError

FORMAT = "geoml-model"
FORMAT_VERSION = 1
TASKS = ("classification", "segmentation", "regression", "generation", "translation")
OUTPUTS = ("patch", "dense", "image")
_MAX_HEADER = 100 * 2**20


@dataclass
class ModelMeta:
    architecture: str
    task: str
    in_bands: int
    arch_args: dict = field(default_factory=dict)
    output: str = "dense"  # 'patch': one value per window; 'dense': per pixel; 'image': generator
    patch_size: int = 64
    band_indices: list = field(default_factory=list)  # 1-based bands of the training raster
    band_names: list = field(default_factory=list)
    norm_mean: list = field(default_factory=list)
    norm_std: list = field(default_factory=list)
    classes: list = field(default_factory=list)  # list[ClassInfo] in memory
    target: dict = field(default_factory=dict)  # regression/generation: name, units, mean, std, nodata
    pixel_size: list = field(default_factory=list)  # [x, y] of the training raster
    crs_wkt: str = ""
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        self.classes = [c if isinstance(c, ClassInfo) else classes_from_dicts([c])[0] for c in self.classes]
        if self.task not in TASKS:
            raise ModelFileError(f"Unknown model task '{self.task}'.")
        if self.output not in OUTPUTS:
            raise ModelFileError(f"Unknown model output kind '{self.output}'.")
        if not self.norm_mean:
            self.norm_mean = [0.0] * self.in_bands
        if not self.norm_std:
            self.norm_std = [1.0] * self.in_bands

    @property
    def is_classifier(self) -> bool:
        return self.task in ("classification", "segmentation")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = [c.to_dict() for c in self.classes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        if d.get("format") != FORMAT:
            raise ModelFileError("The file is a safetensors file but not a GeoML model (no GeoML metadata).")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(
                f"The model was saved by a newer GeoML (format {d.get('format_version')}); update the plugin."
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def describe(self) -> str:
        fs = (self.extra or {}).get("fewshot") or {}
        if fs.get("algorithm"):
            algo = {"protonet": "prototypical networks", "maml": "MAML", "fomaml": "first-order MAML"}.get(
                fs["algorithm"], fs["algorithm"])
            return (f"{self.architecture}: few-shot meta-model ({algo}), meta-trained on {self.num_classes} classes; "
                    f"{self.in_bands} input band(s), patch {self.patch_size} px")
        what = {
            "classification": f"patch classifier, {self.num_classes} classes",
            "segmentation": f"pixel classifier, {self.num_classes} classes",
            "regression": f"regression of {self.target.get('name', 'a continuous value')}",
            "generation": "tile generator (GAN)",
            "translation": "raster-to-raster translation",
        }[self.task]
        return f"{self.architecture}: {what}; {self.in_bands} input band(s), patch {self.patch_size} px"


def new_provenance(**extra) -> dict:
    from .. import __version__ as version  # plain module attribute, no QGIS import

    prov = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "geoml_version": version}
    prov.update(extra)
    return prov


def _is_pickle(head: bytes) -> bool:
    """torch.save's zip archive, or a bare pickle (protocol 2–5 opcode)."""
    return head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def _read_header(path: str) -> dict:
    if not path:
        raise InputError("No model file was given.")
    if os.path.isdir(path):
        raise InputError(f"'{path}' is a folder, not a model file.", "Choose the GeoML model file (.safetensors) itself.")
    if not os.path.isfile(path):
        raise InputError(f"The model file '{path}' does not exist.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            sane = 1 < n <= min(_MAX_HEADER, os.path.getsize(path) - 8)
            raw = fh.read(n) if sane else b""
            # A safetensors header is JSON right after its 8-byte length. Only when that is
            # missing is the file checked for pickle magic: the length's own bytes can look like
            # it (a header of 128 + 256·k bytes starts with 0x80).
            if not raw.startswith(b"{"):
                if _is_pickle(head):
                    raise ModelFileError(
                        f"'{os.path.basename(path)}' is a PyTorch pickle checkpoint, not a GeoML model. "
                        "GeoML never loads pickles, because a pickle can run arbitrary code.",
                        "Use a model saved by GeoML (.geoml / safetensors).",
                    )
                if len(head) < 8:
                    raise ModelFileError(f"'{os.path.basename(path)}' is not a GeoML model file (too short).")
                raise ModelFileError(f"'{os.path.basename(path)}' is not a GeoML model file.")
    except OSError as exc:
        raise InputError(f"Cannot read the model file '{path}': {exc.strerror}.") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"'{os.path.basename(path)}' is not a GeoML model file.") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"'{os.path.basename(path)}' is not a GeoML model file.")
    return header


def read_meta(path: str) -> ModelMeta:
    """Read a model file's metadata (no torch needed)."""
    header = _read_header(path)
    md = header.get("__metadata__") or {}
    if "geoml" not in md:
        raise ModelFileError(
            f"'{os.path.basename(path)}' is a safetensors file but not a GeoML model (no GeoML metadata)."
        )
    try:
        return ModelMeta.from_dict(json.loads(md["geoml"]))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelFileError(f"The GeoML metadata in '{os.path.basename(path)}' is damaged: {exc}") from exc


def save_model(path: str, model_or_state, meta: ModelMeta) -> str:
    """Write weights + metadata atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    from .raster_io import check_writable, output_error

    check_writable(path)
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else dict(model_or_state)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.part-{os.getpid()}")
    try:
        save_file(tensors, tmp, metadata={"geoml": json.dumps(meta.to_dict())})
        os.chmod(tmp, 0o644)  # safetensors writes owner-only; a model is shared like the rasters and reports
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":  # safetensors' I/O errors
            raise output_error(path, exc) from exc
        raise
    return path


def load_state(path: str, device="cpu") -> dict:
    from safetensors.torch import load_file

    _read_header(path)
    try:
        return load_file(path, device=str(device))
    except Exception as exc:
        raise ModelFileError(f"The weights in '{os.path.basename(path)}' cannot be read: {exc}") from exc


def load_model(path: str, device="cpu", meta: Optional[ModelMeta] = None) -> tuple[Any, ModelMeta]:
    """Rebuild the network described by the file and load its weights."""
    from .models import build_model

    meta = meta or read_meta(path)
    model = build_model(meta.architecture, **meta.arch_args)
    state = load_state(path, "cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"The weights in '{os.path.basename(path)}' do not fit architecture '{meta.architecture}': {exc}"
        ) from exc
    return model.to(device).eval(), meta

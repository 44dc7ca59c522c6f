"""GeoML model files: one safetensors file with GeoML's JSON metadata inside.

Layout: a standard safetensors file whose header ``__metadata__`` holds
``{"geoml": "<json>"}``. The JSON (:class:`ModelMetadata`) says how to rebuild the
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
import math
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .errors import InputError, ModelFileError
from .raster.classes import ClassInfo, classes_from_dicts

FORMAT = "geoml-model"
FORMAT_VERSION = 1
TASKS = ("classification", "segmentation", "regression", "generation", "translation")
OUTPUTS = ("patch", "dense", "image")
_MAX_HEADER = 100 * 2**20
MAX_PATCH = 8192
# bytes per element of each safetensors dtype
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


@dataclass
class ModelMetadata:
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
    def from_dict(cls, d: dict, where: str = "the model file") -> "ModelMetadata":
        """Metadata read from a file: every field is checked (type, range, agreement with the others) first,
        so a damaged or tampered file is a :class:`ModelFileError` naming the field, never a crash later."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelFileError("The file is a safetensors file but not a GeoML model (no GeoML metadata).")
        version = d.get("format_version", 0)
        if type(version) is not int:
            raise ModelFileError(f"The GeoML metadata in {where} is damaged: format_version is {version!r}.")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"The model was saved by a newer GeoML (format {d.get('format_version')}); update the plugin."
            )
        check_metadata_fields(d, where)
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


def _finite(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _list_of(ok, max_len: int):
    return lambda v: isinstance(v, list) and len(v) <= max_len and all(ok(x) for x in v)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_dict(v) -> bool:
    return isinstance(v, dict)


def _int_in(lo: int, hi: int):
    return lambda v: type(v) is int and lo <= v <= hi


_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def _is_class(c) -> bool:
    return (isinstance(c, dict) and _int_in(1, 65535)(c.get("value")) and _is_str(c.get("name"))
            and (c.get("color") in (None, "") or (_is_str(c["color"]) and _COLOR.fullmatch(c["color"]) is not None)))


def _metadata_rules():
    from .models.arch_args import MAX_BANDS, MAX_OUTPUTS

    numbers = _list_of(_finite, MAX_BANDS)
    return {  # field: (test, what it must be)
        "architecture": (lambda v: _is_str(v) and 0 < len(v) <= 100, "a name"),
        "task": (_is_str, "text"),
        "output": (_is_str, "text"),
        "in_bands": (_int_in(0, MAX_BANDS), f"an integer from 0 to {MAX_BANDS}"),
        "arch_args": (_is_dict, "a JSON object"),
        "patch_size": (_int_in(1, MAX_PATCH), f"an integer from 1 to {MAX_PATCH}"),
        "band_indices": (_list_of(_int_in(1, 2**31 - 1), MAX_BANDS), "a list of band numbers"),
        "band_names": (_list_of(_is_str, MAX_BANDS), "a list of texts"),
        "norm_mean": (numbers, "a list of numbers"),
        "norm_std": (numbers, "a list of numbers"),
        "classes": (_list_of(_is_class, MAX_OUTPUTS),
                    "a list of classes, each with a value from 1 to 65535, a name and a colour '#rrggbb'"),
        "target": (_is_dict, "a JSON object"),
        "pixel_size": (_list_of(_finite, 2), "a list of two numbers"),
        "crs_wkt": (_is_str, "text"),
        "provenance": (_is_dict, "a JSON object"),
        "metrics": (_is_dict, "a JSON object"),
        "extra": (_is_dict, "a JSON object"),
    }


def _target_rules():
    from .models.arch_args import MAX_BANDS

    numbers = lambda v: _finite(v) or _list_of(_finite, MAX_BANDS)(v)  # noqa: E731
    return {
        "name": (_is_str, "text"), "units": (_is_str, "text"), "kind": (_is_str, "text"),
        "mean": (numbers, "a number or a list of numbers"), "std": (numbers, "a number or a list of numbers"),
        "bands": (_int_in(1, MAX_BANDS), f"an integer from 1 to {MAX_BANDS}"),
        "band_names": (_list_of(_is_str, MAX_BANDS), "a list of texts"),
        "nodata": (lambda v: v is None or _finite(v), "a number"),
        "value_range": (_list_of(lambda r: _list_of(_finite, 2)(r) and len(r) == 2, MAX_BANDS),
                        "a list of [low, high] pairs"),
    }


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "…"


def check_metadata_fields(d: dict, where: str = "the model file") -> None:
    """Raise :class:`ModelFileError` unless the metadata fields have the types, ranges and agreement GeoML needs."""
    from .models.arch_args import check_arch_args

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"The GeoML metadata in {where} is damaged: {what}.")

    for name in ("architecture", "task", "in_bands"):
        if name not in d:
            raise bad(f"it has no '{name}'")
    for name, (ok, text) in _metadata_rules().items():
        if name in d and not ok(d[name]):
            raise bad(f"'{name}' is {_short(d[name])}; it must be {text}")
    for name, (ok, text) in _target_rules().items():
        t = d.get("target") or {}
        if name in t and not ok(t[name]):
            raise bad(f"target '{name}' is {_short(t[name])}; it must be {text}")
    fewshot = (d.get("extra") or {}).get("fewshot")
    if fewshot is not None and not _is_dict(fewshot):
        raise bad("extra 'fewshot' is not a JSON object")
    _check_agreement(d, bad)
    check_arch_args(d["architecture"], d.get("arch_args") or {},
                    "The model file" + (f" {where}" if where.startswith("'") else ""))


def _check_agreement(d: dict, bad) -> None:
    """The metadata fields agree with each other: band counts, class values, network and target shapes."""
    n = d["in_bands"]
    for name in ("norm_mean", "norm_std"):
        if n and d.get(name) and len(d[name]) != n:
            raise bad(f"'{name}' has {len(d[name])} value(s) for {n} input band(s)")
    values = [c["value"] for c in d.get("classes") or []]
    if len(set(values)) != len(values):
        raise bad("two classes have the same value")
    args = d.get("arch_args") or {}
    if n == 0 and d["task"] != "generation":
        raise bad("'in_bands' is 0, but only a tile generator takes no input")
    if type(args.get("in_bands")) is int and args["in_bands"] != n:
        raise bad(f"the network takes {args['in_bands']} band(s) but the model says {n}")
    target = d.get("target") or {}
    bands = target.get("bands", 1)
    if d["task"] in ("generation", "translation") and type(args.get("out_bands")) is int \
            and args["out_bands"] != bands:
        raise bad(f"the network makes {args['out_bands']} band(s) but the target says {bands}")
    for name in ("mean", "std"):
        if isinstance(target.get(name), list) and len(target[name]) not in (1, bands):
            raise bad(f"target '{name}' has {len(target[name])} value(s) for {bands} output band(s)")


def new_provenance(**extra) -> dict:
    from ..version import __version__ as version  # plain module attribute, no QGIS import

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
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also a 5000-digit number
        raise ModelFileError(f"'{os.path.basename(path)}' is not a GeoML model file.") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"'{os.path.basename(path)}' is not a GeoML model file.")
    return header


def read_metadata(path: str) -> ModelMetadata:
    """Read a model file's metadata (no torch needed)."""
    header = _read_header(path)
    md = header.get("__metadata__")
    if not isinstance(md, dict) or "geoml" not in md:
        raise ModelFileError(
            f"'{os.path.basename(path)}' is a safetensors file but not a GeoML model (no GeoML metadata)."
        )
    where = f"'{os.path.basename(path)}'"
    try:
        d = json.loads(md["geoml"])
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"The GeoML metadata in {where} is damaged: it is not valid JSON.") from exc
    return ModelMetadata.from_dict(d, where)


def tensor_list(path: str, header: Optional[dict] = None) -> dict:
    """``{name: (dtype, shape)}`` of the tensors in a model file's header, after checking that the entries are
    well formed and that their byte ranges tile the data part of the file exactly (as safetensors requires):
    the tensors then hold at most as many bytes as the file."""
    header = _read_header(path) if header is None else header
    name = os.path.basename(path)
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
    data_len = os.path.getsize(path) - 8 - n
    out, spans = {}, []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in DTYPE_SIZES
              and isinstance(entry.get("shape"), list) and len(entry["shape"]) <= 8
              and all(type(s) is int and s >= 0 for s in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(type(o) is int for o in entry["data_offsets"]))
        if not ok:
            raise ModelFileError(f"'{name}' is damaged: the entry of tensor '{_short(key)[1:-1]}' is malformed.")
        begin, end = entry["data_offsets"]
        if end - begin != math.prod(entry["shape"]) * DTYPE_SIZES[entry["dtype"]]:
            raise ModelFileError(f"'{name}' is damaged: tensor '{key}' has shape {entry['shape']} but "
                                 f"{end - begin} bytes of data.")
        out[key] = (entry["dtype"], tuple(entry["shape"]))
        spans.append((begin, end))
    at, contiguous = 0, True
    for begin, end in sorted(spans):
        contiguous = contiguous and begin == at
        at = end
    if not contiguous or at != data_len:
        raise ModelFileError(f"'{name}' is damaged or truncated: its tensors do not fill its {max(data_len, 0)} "
                             "bytes of data exactly.")
    return out


def _describe_shape(shape) -> str:
    return "×".join(str(s) for s in shape) if shape else "a scalar"


def check_model_file(path: str, meta: Optional[ModelMetadata] = None) -> ModelMetadata:
    """Check that the network the metadata describes is the network whose weights the file holds, allocating
    nothing: the network is built on PyTorch's ``meta`` device (shapes only) and every parameter and buffer is
    compared by name and shape with the file's tensor list. A mismatch is a :class:`ModelFileError` saying what
    does not fit. Afterwards building the network costs about the file's size, whatever the metadata says."""
    import torch

    from .models import build_model

    header = _read_header(path)
    meta = meta or read_metadata(path)
    name = os.path.basename(path)
    tensors = tensor_list(path, header)
    try:
        with torch.device("meta"):
            net = build_model(meta.architecture, **meta.arch_args)
    except ModelFileError:
        raise
    except Exception as exc:  # a builder refusing its arguments (TypeError, ValueError …)
        raise ModelFileError(f"The network described in '{name}' cannot be built: {type(exc).__name__}: "
                             f"{str(exc)[:200]}", "The file was changed, or was saved by another GeoML version.") from exc
    wanted = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in wanted if k not in tensors]
    extra = [k for k in tensors if k not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it lacks {len(missing)} tensor(s) the network needs (e.g. '{missing[0]}')")
        if extra:
            parts.append(f"it has {len(extra)} tensor(s) the network does not have (e.g. '{_short(extra[0])[1:-1]}')")
        raise ModelFileError(f"The weights in '{name}' do not fit architecture '{meta.architecture}': "
                             + "; ".join(parts) + ".")
    for k, shape in wanted.items():
        if tensors[k][1] != shape:
            raise ModelFileError(
                f"The weights in '{name}' do not fit architecture '{meta.architecture}': tensor '{k}' is "
                f"{_describe_shape(tensors[k][1])} in the file, but the architecture arguments in its metadata "
                f"({_short(meta.arch_args)}) make it {_describe_shape(shape)}.")
    _check_forward(net.eval(), meta, name)
    return meta


def _check_forward(net, meta: ModelMetadata, name: str) -> None:
    """Run the network on one patch of the model's size on the ``meta`` device (shapes only, no memory): a
    patch size the network cannot take, or a classifier with more outputs than classes, is refused here
    rather than failing in the middle of a job."""
    import torch

    if meta.task == "generation" or not meta.in_bands:
        return
    x = torch.empty(1, meta.in_bands, meta.patch_size, meta.patch_size, device="meta")
    try:
        with torch.no_grad():
            out = net(x)
    except NotImplementedError:  # an operation without a meta kernel: nothing can be said
        return
    except Exception as exc:
        raise ModelFileError(f"The network in '{name}' cannot take the {meta.patch_size} px patches its metadata "
                             f"gives: {str(exc)[:200]}") from exc
    fs = meta.extra.get("fewshot") or {}
    if meta.is_classifier and meta.classes and not fs.get("algorithm") and out.ndim >= 2 \
            and out.shape[1] != meta.num_classes:
        raise ModelFileError(f"The model file '{name}' is damaged: its network gives {out.shape[1]} class "
                             f"score(s) but its metadata lists {meta.num_classes} class(es).")
    if not meta.is_classifier and out.ndim >= 2 and out.shape[1] != meta.target.get("bands", 1):
        raise ModelFileError(f"The model file '{name}' is damaged: its network gives {out.shape[1]} value(s) "
                             f"per pixel but its metadata says {meta.target.get('bands', 1)} output band(s).")


def save_model(path: str, model_or_state, meta: ModelMetadata) -> str:
    """Write weights + metadata atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    from .outputs import check_writable, output_error

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

    tensor_list(path)  # well-formed entries that tile the file: nothing bigger than the file is allocated
    try:
        return load_file(path, device=str(device))
    except Exception as exc:
        raise ModelFileError(f"The weights in '{os.path.basename(path)}' cannot be read: {exc}") from exc


def load_model(path: str, device="cpu", meta: Optional[ModelMetadata] = None) -> tuple[Any, ModelMetadata]:
    """Rebuild the network described by the file and load its weights.

    The network is first checked against the file's tensors without memory (:func:`check_model_file`) and
    only then built for real: a file cannot make GeoML allocate more than about its own size."""
    from .models import build_model

    meta = check_model_file(path, meta)
    model = build_model(meta.architecture, **meta.arch_args)
    state = load_state(path, "cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"The weights in '{os.path.basename(path)}' do not fit architecture '{meta.architecture}': {exc}"
        ) from exc
    return model.to(device).eval(), meta

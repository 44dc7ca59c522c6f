"""Apply ONNX models with onnxruntime: ``geoml:predict`` on an ``.onnx`` file, without PyTorch.

Two kinds of file are understood, both dense (per-pixel) models with one input ``(batch, bands, H, W)``:

* **GeoML exports** (``onnx_export``): metadata key ``geoml`` holds GeoML's model description; the graph
  takes raw pixel values and returns class probabilities or values in the target's units.
* **Deepness models**: metadata ``model_type`` ``Segmentor`` (output: per-class probabilities, or one
  channel thresholded at ``seg_thresh``) or ``Regressor`` (output × ``reg_output_scaling``), optional
  ``class_names``, ``tiles_size``/``tile_size``, ``tiles_overlap`` (per cent) and
  ``standardization_mean``/``_std``; the input is scaled by 1/255 and standardised, as Deepness does.

Tiling, nodata, styling and atomic writing are ``predict.predict_raster``'s; this module provides the
runner (normalise, forward, decode) it calls. onnxruntime runs on CUDA when its CUDA execution provider is
present (``device`` auto or cuda), else on the CPU. An ONNX file is data: no custom operator library is
ever registered, so a graph that needs one fails to load with a message.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .errors import DependencyError, DeviceError, InputError, ModelFileError
from .modelfile import ModelMetadata
from .progress import Feedback
from .raster.classes import make_classes

DEEPNESS_TYPES = ("Segmentor", "Regressor")


def is_onnx(path: str) -> bool:
    return str(path or "").lower().endswith(".onnx")


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DependencyError(
            f"Applying an ONNX model needs onnxruntime, which is not installed ({exc}).",
            "Install it in QGIS with Raster ▸ GeoML ▸ Install dependencies… (the apply-only install is enough: tens of MB), "
            "or pip install onnxruntime.",
        ) from exc
    return ort


def providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for GeoML's device choice (CUDA first when present)."""
    ort = _ort()
    have = ort.get_available_providers()
    name = (device or "auto").strip().lower()
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise DeviceError(f"Unknown device '{device}'.", "Choose auto, cpu or cuda.")
    if name.startswith("cuda"):
        if "CUDAExecutionProvider" not in have:
            raise DeviceError("A CUDA GPU was requested but onnxruntime has no CUDA execution provider here.",
                              "Choose 'auto' or 'cpu', or install onnxruntime-gpu.")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if name == "auto" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: str, device: str = "auto"):
    """An onnxruntime session for ``path``, or a ModelFileError saying why the file cannot be used."""
    ort = _ort()
    if not os.path.isfile(path):
        raise InputError(f"The model file does not exist: {path}")
    opts = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=providers(device))
    except (DeviceError, InputError):
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types, all meaning "unusable"
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"onnxruntime cannot load '{os.path.basename(path)}': {first}",
            "The file is damaged, not an ONNX model, or needs operators this onnxruntime lacks "
            "(custom operator libraries are never loaded).",
        ) from exc


@dataclass
class OnnxModelInfo:
    meta: ModelMetadata  # what GeoML needs to tile, write and style
    kind: str  # 'geoml' or 'deepness'
    tile_size: Optional[int]  # fixed by the graph or suggested by the metadata
    overlap: Optional[int]
    fixed_size: Optional[tuple]  # (h, w) when the graph's input is not dynamic
    scale: float = 1.0  # Deepness: input × scale, then standardised
    threshold: float = 0.5  # Deepness one-channel segmentor
    output_scaling: float = 1.0  # Deepness regressor


def _json(value: str, key: str, path: str):
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        try:
            import ast

            return ast.literal_eval(value)  # Deepness also accepts Python literals (int keys)
        except (ValueError, SyntaxError):
            raise ModelFileError(f"The metadata '{key}' in {os.path.basename(path)} is not valid JSON: "
                                 f"{value[:80]!r}") from None


def _input_layout(sess, path: str) -> tuple[int, Optional[tuple]]:
    """(bands, fixed (h, w) or None) of the single NCHW input, or a clear refusal."""
    name = os.path.basename(path)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ModelFileError(f"{name} has {len(inputs)} inputs; GeoML applies models with one image input.")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] < 1 or shape[1] > 512:
        raise ModelFileError(
            f"The input of {name} has shape {shape}: not the (batch, bands, height, width) layout GeoML uses.",
            "Export the model with channels first (NCHW) and a fixed number of bands.",
        )
    if isinstance(shape[3], int) and isinstance(shape[2], int) and shape[1] == shape[2] and shape[3] < shape[1]:
        raise ModelFileError(
            f"The input of {name} has shape {shape}: it looks like channels last (batch, height, width, bands), "
            f"not the (batch, bands, height, width) layout GeoML uses.",
            "Export the model with channels first (NCHW).",
        )
    if "float" not in str(inputs[0].type):
        raise ModelFileError(f"The input of {name} is {inputs[0].type}; GeoML feeds float32 pixel values.")
    h, w = shape[2], shape[3]
    fixed = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
    return int(shape[1]), fixed


def read_onnx(path: str, sess=None) -> OnnxModelInfo:
    """What the ONNX file is (from its metadata and input), as a GeoML :class:`ModelMetadata`."""
    sess = sess or open_session(path, "cpu")
    name = os.path.basename(path)
    bands, fixed = _input_layout(sess, path)
    md = dict(sess.get_modelmeta().custom_metadata_map)
    if "geoml" in md:
        from .onnx_export import ONNX_FORMAT

        d = _json(md["geoml"], "geoml", path)
        if not isinstance(d, dict) or d.get("format") != ONNX_FORMAT or not isinstance(d.get("meta"), dict):
            raise ModelFileError(f"The GeoML metadata in {name} is damaged.")
        meta = ModelMetadata.from_dict(d["meta"], name)
        if meta.in_bands != bands:
            raise ModelFileError(f"{name} says it takes {meta.in_bands} band(s) but its input has {bands}.")
        meta.output = "dense"
        ex = d.get("export") or {}
        return OnnxModelInfo(meta, "geoml", _int(ex.get("tile_size")), _int(ex.get("overlap")), fixed)
    if "model_type" not in md:
        raise ModelFileError(
            f"{name} has no metadata saying what it is: neither GeoML's ('geoml') nor Deepness's ('model_type').",
            "Add the Deepness metadata: model_type ('Segmentor' or 'Regressor'), class_names ({0: 'name', ...}) "
            "for a segmentor, and standardization_mean/std, resolution, tiles_size, tiles_overlap as the model "
            "needs (Deepness documentation, 'Adding metadata to ONNX model'); or export it with GeoML.",
        )
    model_type = str(_json(md["model_type"], "model_type", path)).capitalize()
    if model_type not in DEEPNESS_TYPES:
        raise ModelFileError(f"{name} is a Deepness '{model_type}' model; GeoML applies Segmentor and Regressor "
                             f"models.")
    out = sess.get_outputs()[0].shape
    channels = out[1] if len(out) == 4 and isinstance(out[1], int) else 1
    mean = _json(md.get("standardization_mean", "0"), "standardization_mean", path)
    std = _json(md.get("standardization_std", "1"), "standardization_std", path)
    try:
        mean = np.broadcast_to(np.asarray(mean, dtype=np.float64).ravel(), (bands,)).tolist()
        std = np.broadcast_to(np.asarray(std, dtype=np.float64).ravel(), (bands,)).tolist()
    except (ValueError, TypeError):
        raise ModelFileError(f"standardization_mean/std in {name} do not give one number (or one per band) for "
                             f"its {bands} input band(s).") from None
    if not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
        raise ModelFileError(f"The standardization_mean/std in {name} are not usable numbers.")
    tile = _int(_json(md[k], k, path)) if (k := next((k for k in ("tiles_size", "tile_size") if k in md), None)) else None
    if fixed:
        tile = fixed[0]
    overlap_pc = _json(md.get("tiles_overlap", "15"), "tiles_overlap", path)
    overlap = int(round((tile or 512) * float(overlap_pc) / 200.0))  # per cent of the tile, shared by two sides
    if model_type == "Segmentor":
        classes = _deepness_classes(md, channels, name, path)
        meta = ModelMetadata(architecture="onnx", task="segmentation", in_bands=bands, output="dense",
                         patch_size=min(tile or 512, 512), norm_mean=mean, norm_std=std, classes=classes,
                         extra={"deepness": True, "model_type": model_type})
    else:
        meta = ModelMetadata(architecture="onnx", task="regression", in_bands=bands, output="dense",
                         patch_size=min(tile or 512, 512), norm_mean=mean, norm_std=std,
                         target={"name": "value", "bands": channels}, extra={"deepness": True})
    if "resolution" in md:
        res = float(_json(md["resolution"], "resolution", path)) / 100.0
        meta.pixel_size = [res, res]
    return OnnxModelInfo(meta, "deepness", tile, overlap, fixed, scale=1.0 / 255.0,
                         threshold=float(_json(md.get("seg_thresh", "0.5"), "seg_thresh", path)),
                         output_scaling=float(_json(md.get("reg_output_scaling", "1.0"), "reg_output_scaling",
                                                    path)))


def _deepness_classes(md: dict, channels: int, name: str, path: str) -> list:
    """A Deepness segmentor's classes from its ``class_names`` ({0: 'name', ...}); one output channel is a
    two-class (background, named class) model; unnamed classes are 'class 0', 'class 1' ..."""
    names = md.get("class_names") or md.get("names")
    k = max(2, channels)
    if names:
        d = _json(names, "class_names", path)
        if not isinstance(d, dict):
            raise ModelFileError(f"class_names in {name} must be a dictionary {{0: 'name', ...}}.")
        listed = [str(v) for _, v in sorted(d.items(), key=lambda kv: int(kv[0]))]
    else:
        listed = []
    if channels == 1 and len(listed) == 1:
        listed = ["background"] + listed
    if listed and len(listed) != k:
        raise ModelFileError(f"{name} names {len(listed)} classes but its output has {k}.")
    return make_classes(listed or [f"class {i}" for i in range(k)])


def _int(v) -> Optional[int]:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


class OnnxRunner:
    """What ``predict._Runner`` provides (normalise, forward, decode), with onnxruntime."""

    def __init__(self, sess, info: OnnxModelInfo):
        self.sess, self.info, self.meta = sess, info, info.meta
        self.model = None  # tiles are aligned to meta.extra["multiple"]
        self.input_name = sess.get_inputs()[0].name
        b = sess.get_inputs()[0].shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.device = "cuda (onnxruntime)" if sess.get_providers()[0] == "CUDAExecutionProvider" \
            else "cpu (onnxruntime)"
        meta = info.meta
        self.mean = np.asarray(meta.norm_mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(meta.norm_std, dtype=np.float32)[:, None, None]

    def normalise(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """What the graph takes: raw values (GeoML, nodata → the training mean) or Deepness's x/255 standardised
        (nodata → 0)."""
        if self.info.kind == "geoml":
            x = np.array(data, dtype=np.float32, copy=True)
            x[:, ~valid] = np.broadcast_to(self.mean, x.shape)[:, ~valid]
            return x
        x = (data.astype(np.float32) * np.float32(self.info.scale) - self.mean) / self.std
        x[:, ~valid] = 0.0
        return x

    def forward(self, batch: np.ndarray, fn=None) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        b, _, h, w = x.shape
        fixed = self.info.fixed_size
        if fixed and (h, w) != tuple(fixed):
            if h > fixed[0] or w > fixed[1]:
                raise InputError(f"The model takes tiles of {fixed[1]}×{fixed[0]} px; a tile of {w}×{h} px was "
                                 f"asked for.", f"Use a tile size of {fixed[0]} px.")
            x = np.pad(x, ((0, 0), (0, 0), (0, fixed[0] - h), (0, fixed[1] - w)))
        try:
            if self.fixed_batch and self.fixed_batch != b:  # a graph exported for one batch size
                out = np.concatenate([self._run1(x[i:i + 1]) for i in range(b)])
            else:
                out = self.sess.run(None, {self.input_name: x})[0]
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors (shapes, memory) as a message
            raise ModelFileError(f"onnxruntime could not run the model on a {w}×{h} px tile: "
                                 f"{str(exc).strip()[:300]}") from exc
        if out.ndim == 3:
            out = out[:, None]
        if out.ndim != 4 or out.shape[0] != b or out.shape[2] < h or out.shape[3] < w:
            raise ModelFileError(f"The model's output has shape {tuple(out.shape)} for input {(b, x.shape[1], h, w)}; "
                                 f"GeoML needs a map of the input's size (batch, channels, height, width).")
        return out[:, :, :h, :w].astype(np.float32, copy=False)

    def _run1(self, x):
        if self.fixed_batch != 1:
            raise ModelFileError(f"The model's input takes batches of exactly {self.fixed_batch} tiles.",
                                 "Export it with a dynamic batch size (or 1).")
        return self.sess.run(None, {self.input_name: x})[0]

    def decode(self, out: np.ndarray):
        """Output → (values, confidence) per sample and pixel, as numpy."""
        meta = self.meta
        if meta.is_classifier:
            prob = out
            if prob.shape[1] == 1:  # Deepness binary segmentor: probability of the class
                p = prob[:, 0]
                prob = np.stack([1.0 - p, p], 1)
                idx = (p >= self.info.threshold).astype(np.int64)
            else:
                idx = prob.argmax(1)
            conf = np.take_along_axis(prob, idx[:, None], 1)[:, 0]
            lut = np.asarray([c.value for c in meta.classes], dtype=np.int32)
            if prob.shape[1] != len(lut):
                raise ModelFileError(f"The model gives {prob.shape[1]} class channels; its metadata names "
                                     f"{len(lut)} classes.")
            return lut[idx], conf
        n = int(meta.target.get("bands", 1))
        if out.shape[1] != n:
            raise ModelFileError(f"The model gives {out.shape[1]} output channels; its metadata says {n}.")
        return out * np.float32(self.info.output_scaling), None


def onnx_runner(cfg, feedback: Feedback):
    """(metadata, ``cfg`` with the file's tile size and overlap where the user left them empty, runner) of an
    ``.onnx`` model file, for ``predict.run_predict_onnx`` (see the module docstring)."""
    if int(cfg.views) != 1:
        raise InputError("Flip/rotation views are not available for ONNX models.", "Set views to 1.")
    sess = open_session(cfg.model_path, cfg.device)
    info = read_onnx(cfg.model_path, sess)
    meta = info.meta
    if cfg.tile_size is None and info.tile_size:
        cfg = replace(cfg, tile_size=info.tile_size)
    if cfg.overlap is None and info.overlap is not None:
        cfg = replace(cfg, overlap=min(info.overlap, (int(cfg.tile_size or info.tile_size or 512) - 1) // 2))
    runner = OnnxRunner(sess, info)
    kind = "GeoML export" if info.kind == "geoml" else "Deepness model"
    feedback.log(f"ONNX {kind} ({meta.task}, {meta.in_bands} band(s)) on onnxruntime, {runner.device.split()[0]} "
                 f"({', '.join(sess.get_providers())})")
    return meta, cfg, runner

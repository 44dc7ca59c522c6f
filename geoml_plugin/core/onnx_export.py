"""Export a GeoML model to ONNX, for Deepness, GeoML without PyTorch, and any ONNX runtime.

The exported graph maps a tile of **raw pixel values** ``(batch, bands, height, width)`` (float32, the
raster's own numbers, e.g. reflectance × 10000) to a map of the same size:

* classifiers (patch and pixel): per-pixel class probabilities ``(batch, classes, height, width)``;
* regression / translation: per-pixel values in the target's units ``(batch, outputs, height, width)``.

GeoML's per-band normalisation ``(x - mean) / std`` is the graph's first operation, and the target's
de-normalisation its last, so no tool needs to know them. Deepness scales its input by 1/255 before
standardising, so the file's Deepness metadata says ``standardization_mean = 0`` and
``standardization_std = 1/255``: Deepness then hands the graph the raw values too.

A patch classifier (or regressor) has no per-pixel counterpart in Deepness (``model_type`` is Segmentor or
Regressor), so it is exported as a dense model: the network scores windows every ``step`` px (fully
convolutionally where ``window_scores`` allows it, otherwise windows cut out inside the graph with
``Unfold``), probabilities are taken (softmax) and each pixel interpolated bilinearly between the pixels its
four nearest windows stand for, as ``geoml:predict`` does. The tile is padded by zeros (the training mean,
after normalisation) so that every pixel gets a value; pixels within half a patch of a tile's edge therefore
see less context than GeoML's own map, which reads real neighbours — apply with overlapping tiles
(``tiles_overlap`` in the metadata says how much).

Batch, height and width are dynamic axes; opset 17.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .device import torch_module
from .errors import InputError, ModelFileError, OutputError
from .model_geometry import dense_geometry, model_multiple
from .modelfile import ModelMetadata, load_model, read_metadata
from .progress import Feedback, ensure_feedback

OPSET = 17
ONNX_FORMAT = "geoml-onnx"
ONNX_FORMAT_VERSION = 1
DEEPNESS_STD = 1.0 / 255.0  # Deepness divides by 255, then standardises: std 1/255 hands the graph raw values
TOLERANCE = 1e-4


@dataclass
class ExportResult:
    output_path: str
    model_type: str  # Deepness's: Segmentor or Regressor
    source_output: str  # 'patch' or 'dense': what the GeoML model was
    step: int  # patch models: pixels between window centres in the graph (0 for dense models)
    tile_size: int
    overlap: int  # pixels cropped at each side of a tile when applying
    max_difference: float  # onnxruntime against PyTorch on the check tiles
    seconds: float


def _dense_wrapper(model, meta: ModelMetadata):

    torch = torch_module()
    nn, F = torch.nn, torch.nn.functional
    multiple = model_multiple(model, meta)

    class DenseExport(nn.Module):
        """Raw pixel values → per-pixel probabilities (classifiers) or values in the target's units."""

        def __init__(self):
            super().__init__()
            self.net = model
            self.register_buffer("mean", torch.tensor(meta.norm_mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(meta.norm_std, dtype=torch.float32).view(1, -1, 1, 1))
            n = _n_outputs(meta)
            self.register_buffer("tmean", _target_vec(torch, meta, "mean", 0.0, n))
            self.register_buffer("tstd", _target_vec(torch, meta, "std", 1.0, n))

        def forward(self, x):
            h, w = x.shape[-2], x.shape[-1]
            z = (x - self.mean) / self.std
            if multiple > 1:  # padded here, with sizes the graph computes: a network padding its input
                # itself decides in Python, which the trace would freeze at the traced size
                z = F.pad(z, (0, (-w) % multiple, 0, (-h) % multiple), mode="reflect")
            y = self.net(z)
            if isinstance(y, dict):  # torchvision segmentation models
                y = y["out"]
            if multiple > 1:
                y = y[:, :, :h, :w]
            if meta.is_classifier:
                return torch.softmax(y, dim=1)
            return y * self.tstd + self.tmean

    return DenseExport()


def _n_outputs(meta: ModelMetadata) -> int:
    return meta.num_classes if meta.is_classifier else int(meta.target.get("bands", 1))


def _target_vec(torch, meta: ModelMetadata, key: str, default: float, n: int):
    v = np.broadcast_to(np.asarray(meta.target.get(key, default), dtype=np.float32).ravel(), (n,))
    return torch.tensor(np.array(v), dtype=torch.float32).view(1, -1, 1, 1)


def _patch_wrapper(model, meta: ModelMetadata, stride: Optional[int]):
    """(module, step, shift): a patch model as a dense one (see the module docstring)."""
    from .window_scores import default_step, fully_convolutional

    torch = torch_module()
    nn, F = torch.nn, torch.nn.functional
    P = int(meta.patch_size)
    stride = int(stride) if stride else default_step(P)
    if stride < 1:
        raise InputError("Stride must be at least 1 pixel.")
    scorer = fully_convolutional(model, P, stride)
    if scorer is None and int(meta.extra.get("window_context", 0) or 0):
        raise InputError(
            f"This {meta.architecture} patch model cannot be exported: its map scores each window cut out with the "
            f"{int(meta.extra['window_context'])} px of context it was trained with, which the exported graph (one "
            "pass over each tile) cannot do.", "Apply it with Apply model (geoml:predict) instead.")
    if scorer is not None:
        scorer.to("cpu")
        step, shift = int(scorer.step), int(scorer.shift)
    else:
        step, shift = stride, 0
    n_out = _n_outputs(meta)
    # The tile is zero-padded (after normalisation) exactly as ``tiling.window_tiles`` reads a raster of the
    # tile's size: windows stand for pixels step·j + step//2, the first read starts ``lo`` px before the tile
    # and the last ends where the last window needed ends. A tile is then scored as GeoML scores a raster of
    # its size, and tiles whose origins lie on the step grid share GeoML's lattice.
    half = step // 2
    m = 1 if step > 1 else 0
    lo = P // 2 + shift - half + step * m
    while lo < 0:
        lo, m = lo + step, m + 1
    crop = step * m - half  # output index of pixel 0 in the interpolated lattice

    def far(n):
        """Padding after a side of ``n`` px (traced: the graph computes it from the input's size)."""
        nx = (n - 1 - half + step) // step + 1 + m  # windows GeoML's window_tiles takes
        return (nx - 1) * step + P - lo - n

    tent = 1.0 - np.abs(np.arange(-(step - 1), step)) / step  # linear interpolation between lattice points
    kernel = np.outer(tent, tent).astype(np.float32)

    class PatchAsDense(nn.Module):
        """Raw pixel values → window scores every ``step`` px → softmax → bilinear per-pixel map."""

        def __init__(self):
            super().__init__()
            if scorer is None:
                self.net = model
            else:  # registered so that .eval() and the trace see them; the scorer calls the same objects
                self.net = scorer.backbone if hasattr(scorer, "backbone") else scorer.blocks
            self.register_buffer("mean", torch.tensor(meta.norm_mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(meta.norm_std, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("tmean", _target_vec(torch, meta, "mean", 0.0, n_out))
            self.register_buffer("tstd", _target_vec(torch, meta, "std", 1.0, n_out))
            self.register_buffer("tent", torch.from_numpy(kernel)[None, None].repeat(n_out, 1, 1, 1))

        def _windows(self, x):
            b, c, h, w = x.shape
            ny, nx = (h - P) // step + 1, (w - P) // step + 1
            cols = F.unfold(x, P, stride=step)  # (B, C·P·P, ny·nx)
            win = cols.transpose(1, 2).reshape(-1, c, P, P)
            out = self.net(win)
            return out.reshape(b, ny, nx, -1).permute(0, 3, 1, 2)

        def forward(self, x):
            h, w = x.shape[-2], x.shape[-1]
            z = F.pad((x - self.mean) / self.std, (lo, far(w), lo, far(h)))
            scores = scorer(z) if scorer is not None else self._windows(z)
            if meta.is_classifier:
                scores = torch.softmax(scores, dim=1)
            else:
                scores = scores * self.tstd + self.tmean
            up = F.conv_transpose2d(scores, self.tent, stride=step, padding=step - 1, groups=n_out)
            return up[:, :, crop : crop + h, crop : crop + w]

    return PatchAsDense(), step, shift


def exportable(model, meta: ModelMetadata, stride: Optional[int] = None):
    """(torch module mapping raw pixels to the per-pixel output, step (0 for dense models), shift).
    ``meta.extra["multiple"]`` is set to the network's total downsampling (tiles are aligned to it)."""

    if meta.output == "patch":
        module, step, shift = _patch_wrapper(model, meta, stride)
        meta.extra["multiple"] = step  # tile origins on the window lattice: GeoML's own map's lattice
        return module, step, shift
    meta.extra["multiple"] = model_multiple(model, meta)
    return _dense_wrapper(model, meta), 0, 0


def resolution_cm(meta: ModelMetadata) -> Optional[float]:
    """The training pixel size in cm/px (Deepness's ``resolution``), or None when the CRS is not metric."""
    if not meta.pixel_size or not meta.crs_wkt:
        return None
    try:
        from osgeo import osr

        srs = osr.SpatialReference()
        if srs.ImportFromWkt(meta.crs_wkt) != 0 or not srs.IsProjected():
            return None
        metres = float(srs.GetLinearUnits())
    except Exception:  # noqa: BLE001 - a CRS GDAL cannot read: no resolution rather than no export
        return None
    return round(abs(float(meta.pixel_size[0])) * metres * 100.0, 6)


def apply_geometry(meta: ModelMetadata, step: int, shift: int) -> tuple[int, int]:
    """(tile size, pixels cropped at each tile side) for applying the exported dense model."""

    P = int(meta.patch_size)
    if meta.output == "patch":
        # every kept pixel's windows lie in real pixels, and half a patch more of their features' context
        overlap = P + step + abs(shift)
        tile = max(512, -(-4 * overlap // step) * step)
        return tile, overlap
    tile, overlap, _ = dense_geometry(P)
    return tile, overlap


def deepness_metadata(meta: ModelMetadata, tile: int, overlap: int) -> dict:
    """Deepness's documented keys, values JSON-encoded as Deepness reads them (``json.loads``)."""
    md = {
        "model_type": "Segmentor" if meta.is_classifier else "Regressor",
        "tiles_size": tile,
        "tile_size": tile,  # the key Deepness's model_base.py reads (the documentation says tiles_size)
        "tiles_overlap": int(round(100.0 * 2 * overlap / tile)),  # per cent of the tile
        "standardization_mean": [0.0] * meta.in_bands,
        "standardization_std": [DEEPNESS_STD] * meta.in_bands,
    }
    if meta.is_classifier:
        md["class_names"] = {str(i): c.name for i, c in enumerate(meta.classes)}
    else:
        md["reg_output_scaling"] = 1.0
    res = resolution_cm(meta)
    if res is not None:
        md["resolution"] = res
    return {k: json.dumps(v) for k, v in md.items()}


def geoml_metadata(meta: ModelMetadata, source: str, step: int, shift: int, tile: int, overlap: int) -> str:
    d = meta.to_dict()
    d["output"] = "dense"
    return json.dumps({
        "format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION,
        "input": "raw pixel values (B, bands, H, W) float32; normalisation is inside the graph",
        "output": "class probabilities (B, classes, H, W)" if meta.is_classifier
        else "values in the target's units (B, outputs, H, W)",
        "meta": d,
        "export": {"source_output": meta.output, "source_file": source, "step": step, "shift": shift,
                   "tile_size": tile, "overlap": overlap, "opset": OPSET,
                   "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    })


def _check_size(meta: ModelMetadata, step: int) -> int:
    """Edge of the square tile traced and checked."""
    P = int(meta.patch_size)
    multiple = int(meta.extra.get("multiple", 1) or 1)
    edge = max(2 * P, 32) if meta.output == "patch" else max(P, 32)
    return -(-edge // max(multiple, 1)) * max(multiple, 1)


def export_onnx(model_path: str, output_path: str, feedback: Optional[Feedback] = None,
                stride: Optional[int] = None) -> ExportResult:
    """Write ``model_path`` (a GeoML model file) as ONNX to ``output_path`` and check it against PyTorch."""
    import time

    fb = ensure_feedback(feedback)
    t0 = time.perf_counter()
    if not str(output_path).lower().endswith(".onnx"):
        raise InputError(f"The output must be an .onnx file: {output_path}")
    meta = read_metadata(model_path)
    if meta.task == "generation":
        raise ModelFileError("This is a GAN tile generator, not a model that maps a raster: it cannot be exported "
                             "as a Segmentor or Regressor.")
    if (meta.extra.get("fewshot") or {}).get("initialisation_only"):
        raise ModelFileError("This is a MAML meta-model: a starting point to adapt, not a classifier.",
                             "Adapt it to your classes with GeoML → Few-shot mapping first, then export.")
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelFileError(f"Exporting needs the onnx and onnxruntime packages ({exc}).",
                             "Install them with GeoML's dependency installer or pip.") from exc
    torch = torch_module()
    model, meta = load_model(model_path, "cpu", meta)
    module, step, shift = exportable(model, meta, stride)
    module = module.eval()
    tile, overlap = apply_geometry(meta, step, shift)
    edge = _check_size(meta, step)
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor(meta.norm_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta.norm_std, dtype=torch.float32).view(1, -1, 1, 1)

    def sample(b, h, w):
        return torch.randn(b, meta.in_bands, h, w, generator=gen) * std + mean

    fb.progress(0.1, "tracing the network")
    part = f"{output_path}.part"
    import io
    import warnings

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample(1, edge, edge),), buf, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "output": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    md = deepness_metadata(meta, tile, overlap)
    md["geoml"] = geoml_metadata(meta, os.path.basename(model_path), step, shift, tile, overlap)
    for k, v in md.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    proto.producer_name = "GeoML"
    proto.doc_string = (f"GeoML {meta.task} model ({meta.architecture}); input: raw pixel values of "
                        f"{meta.in_bands} band(s), normalisation inside the graph.")
    data = proto.SerializeToString()
    fb.progress(0.6, "checking onnxruntime against PyTorch")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    P = int(meta.patch_size)
    other = edge + max(P // 2, 8) + 3  # not a multiple of the network's downsampling: the graph pads it
    for shape in ((1, edge, edge), (2, other, edge)):
        x = sample(*shape)
        with torch.no_grad():
            ref = module(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        if got.shape != ref.shape:
            raise ModelFileError(f"The exported graph gives shape {got.shape} where PyTorch gives {ref.shape}.")
        worst = max(worst, float(np.abs(got - ref).max()))
    if not worst <= TOLERANCE:
        raise ModelFileError(f"The exported model differs from PyTorch by up to {worst:.2g} (more than "
                             f"{TOLERANCE:g}); nothing was written.")
    try:
        with open(part, "wb") as f:
            f.write(data)
        os.replace(part, output_path)
    except OSError as exc:
        if os.path.exists(part):
            os.remove(part)
        raise OutputError(f"Could not write {output_path}: {exc}") from exc
    kind = "Segmentor" if meta.is_classifier else "Regressor"
    how = f", patch model as a dense map (windows every {step} px)" if meta.output == "patch" else ""
    fb.log(f"Wrote {output_path}: {kind}{how}; onnxruntime equals PyTorch within {worst:.1e}")
    fb.progress(1.0, "done")
    return ExportResult(os.path.abspath(output_path), kind, meta.output, step, tile, overlap, worst,
                        time.perf_counter() - t0)

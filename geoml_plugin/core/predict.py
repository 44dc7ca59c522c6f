"""Apply a GeoML model to a raster, tile by tile: the ``geoml:predict`` job.

* Patch models (one prediction per window, e.g. a ResNet classifier) are
  applied to windows whose centres lie ``stride`` pixels apart (default an
  eighth of the patch); each output pixel takes the probabilities (or values)
  of the four centres around it, weighted toward the nearer ones, so the map
  does not depend on where the window lattice falls. ResNet classifiers score
  all windows of a tile in about 1.5 plain network passes (``window_scores``).
* Dense models (segmentation, pixel regression, translation) run on
  overlapping tiles and keep each tile's centre (``tiling.dense_tiles``), with
  tile origins on the network's pooling grid (``dense_geometry``).

Classes are written as values 1..K (0 = nodata) with category names and a
colour table; the optional confidence raster holds the winning class's
probability. Regression/translation outputs are Float32 in the target's units.
Reading runs one step ahead in a thread; nothing is written unless the whole
raster completes.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from .device import log_device, resolve_device, torch_module
from .errors import InputError, JobCancelled, ModelFileError
from .map_stats import MapStats, output_bands
from .model_geometry import dense_geometry, model_multiple
from .modelfile import ModelMetadata, load_model, read_metadata
from .models.view_sets import VIEW_COUNTS, VIEW_SETS, check_views
from .outputs import check_not_an_input, check_writable
from .progress import Feedback, ensure_feedback
from .raster import styles as qml
from .raster.classes import category_names, color_table
from .raster.io import (
    RasterReader,
    RasterWriter,
    check_geotiff_name,
    parse_band_list,
)
from .raster.sieve import count_values, min_region_param, sieve_band
from .raster.tiling import dense_tiles, prefetch, window_tiles
from .sharded import predict_sharded
from .spec import param, validate
from .window_scores import default_step, fully_convolutional, interpolate, window_output

REGRESSION_NODATA = -9999.0
CONFIDENCE_NODATA = -1.0
_PATCH_TILE = 512  # output pixels per side of a patch model's tile
# Patch models scored window by window with their training context (a backbone whose one-pass map is not
# faithful: models.resnets.TorchvisionMobileNetV2): automatic stride patch // this (32 px for 64-px windows)
# instead of patch // 8, as each window costs a network pass over window + context (64 times fewer at 8 px).
CUT_CONTEXT_STEP_DIV = 2


@dataclass
class PredictConfig:
    input_path: str
    model_path: str = ""
    output_path: str = ""
    confidence_path: Optional[str] = None
    device: str = "auto"
    batch_size: int = param(16, label="Batch size", minimum=1, help=(
        "<b>Batch size</b>: windows or tiles per forward pass; for dense models it counts tiles of 4 patches (at "
        "most 512 px), so fewer of the larger default tiles go at once (4 tiles of 512 px for 64-px patches at the "
        "default 16) and memory stays as it was."))
    # patch models: pixels between window centres (default patch // 8)
    stride: Optional[int] = param(None, kind="int", auto=0, minimum=1, advanced=True,
                                  label="Stride for patch classifiers (pixels, 0 = automatic)", help=(
        "<b>Stride</b> (patch classifiers): distance in pixels between classified windows. 0 = automatic: an eighth "
        "of the patch (8 px for 64-px patches); half the patch for MobileNetV2 classifiers, whose windows are "
        "scored one by one with the context they were trained with. Each pixel's class comes from the windows around it, weighted toward "
        "the nearer ones, so the map does not depend on where the windows fall; ResNet classifiers and few-shot "
        "models score all windows of a tile in about two network passes, so the default costs little more than a "
        "larger stride (the network's feature grid sets the possible strides: the log says which was used)."))
    tile_size: Optional[int] = None  # dense models: tile edge (default 8 × patch, ≤ 512)
    # dense models: pixels cropped at each tile side (default: see dense_geometry)
    overlap: Optional[int] = param(None, kind="int", auto=-1, minimum=0, advanced=True,
                                   label="Overlap for dense models (pixels cropped at each tile side, -1 = automatic)",
                                   help=(
        "<b>Overlap</b> (advanced, dense models): pixels cropped at each side of a tile (at least); -1 = automatic: "
        "half a patch (for patches over 64 px: 32 px, or a quarter patch if more), on tiles of 8 patches (at most "
        "512 px; 2 patches for patches over 256 px) placed on the network's pooling grid. For a small U-Net (32-px "
        "patches) on a 512 px scene this changed 0.05 percent of classes against one pass over the whole raster "
        "(about 0.4 percent with the former quarter-patch overlap on 4-patch tiles), at the same model work per "
        "pixel. Larger is closer still and slower, and must stay under half the tile."))
    # 1-based input bands (or "1,2,3"); default from the model
    bands: Optional[list] = param(None, kind="str", optional=True, advanced=True,
                                  label="Input bands (e.g. 1,2,3; empty = as the model)", help=(
        "<b>Input raster</b>: must have the bands the model was trained on (same count and order). From a raster "
        "with more bands the model's own training bands are used (the log names the bands left out); <b>Input "
        "bands</b> (advanced, e.g. 1,2,3) chooses others."))
    window: Optional[tuple] = None  # (x, y, w, h) pixel window to predict; default whole raster
    half_precision: bool = True  # autocast on CUDA
    # test-time augmentation: flips/rotations averaged (costs as many passes)
    views: int = param(1, choices=VIEW_COUNTS, advanced=True, label="Test-time views (flips/rotations averaged)",
                       help=(
        "<b>Test-time views</b> (advanced): average the prediction over 2, 4 or 8 flips/rotations of each window, "
        "as many times slower. It helps models trained without flip/rotation augmentation most; models fine-tuned "
        "with GeoML's defaults gain little (under a point of accuracy on the EuroSAT benchmark: 90.9 against 90.2 "
        "percent)."))
    cog: bool = False  # write Cloud-Optimized GeoTIFFs (GDAL's COG driver, with overviews)
    # class maps: regions under this many pixels take their largest neighbour's class (GDAL's sieve)
    min_region: int = min_region_param()


@dataclass
class PredictResult:
    output_path: str
    confidence_path: Optional[str]
    task: str
    width: int
    height: int
    valid_pixels: int
    seconds: float
    device: str
    class_counts: dict = field(default_factory=dict)  # class name → pixels
    value_range: tuple = ()
    tiles: int = 0
    tile_size: int = 0  # dense models: the tiles' edge, overlap and tiles per forward pass used
    overlap: int = 0
    tile_batch: int = 0
    model_pixels: int = 0  # dense models: pixels the model computed (tiles read past their cores)
    window_step: int = 0  # patch models: pixels between window centres
    fully_convolutional: bool = False  # patch models: windows scored from one pass over each tile


def _numbers(values) -> str:
    return ", ".join(str(v) for v in values)


def choose_bands(meta: ModelMetadata, band_count: int, bands=None, feedback: Optional[Feedback] = None) -> list[int]:
    """Bands of the input raster to feed the model, or a clear refusal.

    When the raster has more bands than the model and none were chosen, the
    model's own training bands (``band_indices``) are used; ``feedback`` is told
    which bands are left out, so that this is never silent.
    """
    if bands:
        chosen = parse_band_list(bands, band_count)
    elif band_count == meta.in_bands:
        chosen = list(range(1, band_count + 1))
    elif meta.band_indices and len(meta.band_indices) == meta.in_bands and max(meta.band_indices) <= band_count:
        chosen = list(meta.band_indices)
        if feedback is not None:
            unused = [b for b in range(1, band_count + 1) if b not in chosen]
            feedback.log(f"The model uses band{'s' if len(chosen) > 1 else ''} {_numbers(chosen)} of the raster's "
                         f"{band_count}; band{'s' if len(unused) > 1 else ''} {_numbers(unused)} "
                         f"{'are' if len(unused) > 1 else 'is'} not used.")
    else:
        raise InputError(
            f"The model expects {meta.in_bands} band(s) but the raster has {band_count}.",
            "Choose a raster with the same bands as the training raster, or select the bands to use.",
        )
    if len(chosen) != meta.in_bands:
        raise InputError(f"The model expects {meta.in_bands} band(s); {len(chosen)} were selected.")
    return chosen


def _call(model, x):
    """``model(x)``; torchvision's segmentation models return a dict with the map under "out"."""
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def predict_views(model, x, views: int = 1, classifier: bool = True):
    """Model output averaged over ``views`` flips/rotations of the input (test-time augmentation).

    Overhead imagery has no "up", so a patch turned or mirrored is as valid an
    input as the patch itself; averaging the views evens out orientation
    quirks of a network trained without flip/rotation augmentation. (A model
    fine-tuned with GeoML's default augmentation is nearly invariant already:
    on EuroSAT chips, 8 views scored 90.9 % against 90.2 % for one, mean of
    four splits.)
    Classifier outputs are averaged as probabilities and returned as their
    logarithm (so softmax/argmax downstream see the average); dense
    outputs are turned back before averaging. ``views`` = 1 is a plain call.
    """
    torch = torch_module()
    check_views(views)
    if views == 1:
        return _call(model, x)
    from .augment import dihedral, undo_dihedral

    acc = None
    for k in VIEW_SETS[views]:
        out = _call(model, dihedral(x, k)).float()
        if out.ndim == 4:
            out = undo_dihedral(out, k)
        if classifier:
            out = torch.softmax(out, dim=1)
        acc = out if acc is None else acc + out
    acc = acc / len(VIEW_SETS[views])
    return torch.log(acc.clamp_min(1e-12)) if classifier else acc


class _Runner:
    """Normalises windows and runs the model in batches on the device."""

    def __init__(self, model, meta: ModelMetadata, device, half: bool, views: int = 1):
        self.torch = torch_module()
        self.model, self.meta, self.device = model, meta, device
        self.views = int(views)
        self.mean = np.asarray(meta.norm_mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(meta.norm_std, dtype=np.float32)[:, None, None]
        self.autocast = device.type == "cuda" and half

    def normalise(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = (data - self.mean) / self.std
        x[:, ~valid] = 0.0  # nodata → the training mean
        return x

    def forward(self, batch: np.ndarray, fn=None):
        """Outputs of ``fn`` (default: the model) on ``batch``, averaged over the views."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            out = predict_views(fn or self.model, x, self.views, self.meta.is_classifier)
        return out.float()

    def decode(self, out):
        """Model output → (values, confidence) as numpy, per sample (and pixel)."""
        torch = self.torch
        meta = self.meta
        if meta.is_classifier:
            prob = torch.softmax(out, dim=1)
            conf, idx = prob.max(dim=1)
            lut = np.asarray([c.value for c in meta.classes], dtype=np.int32)
            return lut[idx.cpu().numpy()], conf.cpu().numpy()
        vals = out.cpu().numpy()
        n = vals.shape[1]
        mean = np.broadcast_to(np.asarray(meta.target.get("mean", 0.0), dtype=np.float32).ravel(), (n,))
        std = np.broadcast_to(np.asarray(meta.target.get("std", 1.0), dtype=np.float32).ravel(), (n,))
        if vals.ndim == 2:  # patch regression: (B, outputs)
            return vals * std + mean, None
        return vals * std[None, :, None, None] + mean[None, :, None, None], None


    def decode_map(self, per_pixel):
        """Per-pixel probabilities (classes) or normalised values ``(K, h, w)`` → (values, confidence) as numpy."""
        meta = self.meta
        if meta.is_classifier:
            conf, idx = per_pixel.max(dim=0)
            lut = np.asarray([c.value for c in meta.classes], dtype=np.int32)
            return lut[idx.cpu().numpy()], conf.cpu().numpy()
        vals, _ = self.decode(per_pixel[None])
        return (vals[0, 0] if vals.shape[1] == 1 else vals[0]), None


def predict_raster(model, meta: ModelMetadata, cfg: PredictConfig, feedback: Optional[Feedback] = None,
                   runner=None, session=None) -> PredictResult:
    """Run ``model`` (already built, any device) over ``cfg.input_path``.

    ``runner``: an object providing ``_Runner``'s normalise/forward/decode for a model that is not a torch
    module (``onnx_runtime.OnnxRunner``, a dense model); ``model`` is then None and torch is not used.
    ``session``: a ``distributed.Session`` (torchrun): the tiles are shared among the ranks (``sharded``)."""
    fb = ensure_feedback(feedback) if session is None else session.feedback(feedback)
    t0 = time.perf_counter()
    if meta.task == "generation":
        raise ModelFileError("This is a GAN tile generator, not a model that maps a raster.", "Use GeoML → Generate tiles.")
    if (meta.extra.get("fewshot") or {}).get("initialisation_only"):
        raise ModelFileError("This is a MAML meta-model: a starting point to adapt, not a classifier.",
                             "Adapt it to your classes with GeoML → Few-shot mapping first.")
    check_writable(cfg.output_path)
    check_geotiff_name(cfg.output_path)
    inputs = {"input raster": cfg.input_path, "model file": cfg.model_path}
    check_not_an_input(cfg.output_path, inputs)
    if cfg.confidence_path:
        check_writable(cfg.confidence_path)
        check_geotiff_name(cfg.confidence_path)
        check_not_an_input(cfg.confidence_path, inputs)
        if os.path.abspath(cfg.confidence_path) == os.path.abspath(cfg.output_path):
            raise InputError("The confidence raster must be a different file from the output.")
    if cfg.batch_size < 1:
        raise InputError("Batch size must be at least 1.")
    check_views(cfg.views)
    validate(cfg)
    runner, device = _prepare_runner(model, meta, cfg, runner, fb)

    with RasterReader(cfg.input_path, None) as probe:
        bands = choose_bands(meta, probe.info.band_count, cfg.bands, fb)
    reader = RasterReader(cfg.input_path, bands)
    info = reader.info
    win = _clip_window(cfg.window, info)
    wx, wy, ww, wh = win
    area = "the area to translate" if meta.task == "translation" else "the area to classify"
    small = _check_area(meta, info, ww, wh, area)

    common = dict(width=ww, height=wh, geotransform=_window_geotransform(info, wx, wy), crs_wkt=info.crs_wkt)
    prov = _provenance(meta, cfg)
    want_conf = bool(cfg.confidence_path and meta.is_classifier)
    if cfg.confidence_path and not meta.is_classifier:
        fb.log(f"No confidence raster is written for a {meta.task} model (confidence is the probability of the "
               f"winning class): {cfg.confidence_path} is not created.")
    dense_info: dict = {}
    src = _MirroredReader(reader) if small and meta.output != "patch" else reader

    sieving = _sieves(meta, cfg, fb)
    tiles_fb = fb.sub(0.0, 0.95) if sieving else fb

    def run_tiles(out_w, conf_w, stats, shard=None) -> int:
        return _predict_tiles(src, runner, meta, cfg, win, out_w, conf_w, stats, tiles_fb, dense_info, shard)

    def finish(out_w, conf_w, stats) -> None:
        if stats.valid == 0:
            raise InputError(f"The raster has no valid pixels (everything is nodata) in {area}.")
        if sieving:
            _sieve_output(out_w, stats, cfg.min_region, fb)
        if not meta.is_classifier:
            out_w.qml = qml.style_for_target(meta.target, stats.value_range())
        _commit_outputs(out_w, conf_w)

    def writers():
        return _writers(meta, cfg, prov, common, want_conf)

    try:
        if session is None:
            stats, n_tiles, wrote_conf = _predict_one_process(writers, run_tiles, finish, meta)
        else:
            stats, n_tiles, wrote_conf = predict_sharded(session, meta, cfg, common, writers, run_tiles, finish,
                                                         dense_info)
    finally:
        reader.close()
    try:
        fb.progress(1.0, "done")
    except JobCancelled:
        pass  # the outputs are complete: a cancel arriving now is too late to undo them
    secs = time.perf_counter() - t0
    fb.log(f"Wrote {cfg.output_path} ({ww}×{wh} px, {stats.valid} valid) in {secs:.1f} s")
    return PredictResult(
        output_path=os.path.abspath(cfg.output_path),
        confidence_path=os.path.abspath(cfg.confidence_path) if wrote_conf else None,
        task=meta.task, width=ww, height=wh, valid_pixels=stats.valid, seconds=secs, device=str(device),
        class_counts=stats.class_counts(), value_range=stats.value_range() if not meta.is_classifier else (),
        tiles=n_tiles, **dense_info,
    )


def _sieves(meta: ModelMetadata, cfg: PredictConfig, fb: Feedback) -> bool:
    """Whether the class map gets its minimum region (``raster.sieve``); a map of values is written as predicted."""
    if cfg.min_region > 1 and not meta.is_classifier:
        fb.log(f"The minimum region ({cfg.min_region} px) applies to class maps; a {meta.task} map is written as "
               "predicted.")
    return meta.is_classifier and cfg.min_region > 1


def _sieve_output(out_w, stats: MapStats, min_region: int, fb: Feedback) -> None:
    """Sieve the complete temporary class raster in place (the last 5 % of the progress) and count its classes
    again."""
    out_w.describe()  # colours and categories first: GeoTIFF refuses them once tiles are read back
    out_w.ds.FlushCache()
    sieve_band(out_w.ds, min_region, fb.sub(0.95, 1.0))
    stats.counts = count_values(out_w.ds, len(stats.counts))
    fb.log(f"Regions under {min_region} px took the class of their largest neighbour.")


def _writers(meta: ModelMetadata, cfg: PredictConfig, prov: dict, common: dict, want_conf: bool):
    """(class or value raster writer, confidence raster writer or None); nothing is left if the second fails."""
    out_w = _output_writer(meta, cfg.output_path, prov, common, cfg.cog)
    try:
        conf_w = _confidence_writer(cfg.confidence_path, prov, common, cfg.cog) if want_conf else None
    except BaseException:
        out_w.abort()
        raise
    return out_w, conf_w


def _predict_one_process(writers, run_tiles, finish, meta: ModelMetadata):
    """(stats, tiles, whether a confidence raster was written): every tile in this process."""
    out_w, conf_w = writers()
    try:
        stats = MapStats(meta)
        n_tiles = run_tiles(out_w, conf_w, stats)
        finish(out_w, conf_w, stats)
    except BaseException:
        out_w.abort()
        if conf_w is not None:
            conf_w.abort()
        raise
    return stats, n_tiles, conf_w is not None


def _prepare_runner(model, meta: ModelMetadata, cfg: PredictConfig, runner, fb: Feedback):
    """(runner, device): a torch ``_Runner`` on the configured device, or the given runner (ONNX: no torch)."""
    if runner is None:
        device = resolve_device(cfg.device)
        model = model.to(device).eval()
        runner = _Runner(model, meta, device, cfg.half_precision, cfg.views)
        log_device(fb, device)
    else:
        device = runner.device  # ONNX models (onnx_runtime): no torch
    return runner, device


def _clip_window(window, info) -> tuple:
    """``window`` (x, y, w, h; None = the whole raster) clipped to the raster: a window starting left of / above
    it loses the part outside, it is not shifted."""
    wx, wy, ww, wh = (int(v) for v in (window or (0, 0, info.width, info.height)))
    x1, y1 = min(wx + ww, info.width), min(wy + wh, info.height)
    wx, wy = max(0, wx), max(0, wy)
    return wx, wy, x1 - wx, y1 - wy


def _window_geotransform(info, wx: int, wy: int) -> list:
    """The raster's geotransform moved to the window's top-left pixel."""
    gt = list(info.geotransform)
    gt[0], gt[3] = info.pixel_to_world(wx, wy)
    return gt


def _provenance(meta: ModelMetadata, cfg: PredictConfig) -> dict:
    """GDAL metadata on every output: which model (file name) made it, and how; a few-shot adapted model also
    names its support points (class: count)."""
    prov = {"GEOML_MODEL": os.path.basename(cfg.model_path or "in-memory"), "GEOML_TASK": meta.task,
            "GEOML_ARCHITECTURE": meta.architecture, "GEOML_VIEWS": cfg.views}
    support = (meta.provenance or {}).get("support")
    if isinstance(support, dict) and support:
        prov["GEOML_SUPPORT"] = ", ".join(f"{k}: {v}" for k, v in support.items())
    return prov


def _check_area(meta: ModelMetadata, info, ww: int, wh: int, area: str) -> bool:
    """Refuse an empty area or a raster smaller than a patch model's window; True when the raster is smaller
    than the patch size (a dense model then reads it mirrored)."""
    if ww <= 0 or wh <= 0:
        raise InputError(f"{area[0].upper()}{area[1:]} does not overlap the raster.")
    small = min(info.width, info.height) < meta.patch_size
    if small and meta.output == "patch":
        raise InputError(
            f"The raster ({info.width}×{info.height} px) is smaller than the model's patch size ({meta.patch_size} px)."
        )
    return small


def _output_writer(meta: ModelMetadata, path: str, prov: dict, common: dict, cog: bool = False) -> RasterWriter:
    """The class raster (values 1..K, 0 = nodata, named categories and colours) or the Float32 value raster."""
    if meta.is_classifier:
        k = max(c.value for c in meta.classes)
        return RasterWriter(path, bands=1, dtype=np.uint8 if k < 255 else np.uint16, nodata=0,
                            category_names=category_names(meta.classes), color_table=color_table(meta.classes),
                            band_descriptions=["class"], metadata=prov, qml=qml.paletted_qml(meta.classes), cog=cog,
                            **common)
    n_out = output_bands(meta)
    names = meta.target.get("band_names") or [meta.target.get("name", "value")] * n_out
    return RasterWriter(path, bands=n_out, dtype=np.float32, nodata=REGRESSION_NODATA,
                        band_descriptions=names, metadata=prov, cog=cog, **common)


def _confidence_writer(path: str, prov: dict, common: dict, cog: bool = False) -> RasterWriter:
    """The winning class's probability, Float32 in 0..1."""
    return RasterWriter(path, bands=1, dtype=np.float32, nodata=CONFIDENCE_NODATA,
                        band_descriptions=["confidence"], metadata=prov,
                        qml=qml.pseudocolor_qml(0.0, 1.0, qml.VIRIDIS), cog=cog, **common)


def _predict_tiles(src, runner, meta, cfg, win, out_w, conf_w, stats, fb, dense_info: dict, shard=None) -> int:
    """Patch models on a window lattice, dense models on overlapping tiles; the number of tiles (all ranks').

    ``shard`` (``sharded.Shard``): this rank's share of the tiles, and the record of what it wrote."""
    shard = shard or _ALL_TILES
    if meta.output == "patch":
        return _predict_patches(src, runner, meta, cfg, win, out_w, conf_w, stats, fb, dense_info, shard)
    # fully convolutional: a small raster is mirrored (``src`` is then a ``_MirroredReader``)
    return _predict_dense(src, runner, meta, cfg, win, out_w, conf_w, stats, fb, dense_info, shard)


class _AllTiles:
    """One process: every tile is its own."""

    def owns(self, i: int) -> bool:
        return True

    def wrote(self, i: int, window) -> None:
        pass


_ALL_TILES = _AllTiles()


def _commit_outputs(out_w, conf_w) -> None:
    """All the writing first, then the renames: a full disk must not leave a new class raster beside the
    confidence raster of an earlier run."""
    for w in (out_w, conf_w):
        if w is not None:
            w.prepare()
    out_w.commit()
    if conf_w is not None:
        conf_w.commit()


def _write(out_w, conf_w, values, conf, valid, x, y, stats: MapStats) -> None:
    if values.ndim == 2:
        values = np.where(valid, values, 0 if stats.meta.is_classifier else REGRESSION_NODATA)
    else:
        values = np.where(valid[None], values, REGRESSION_NODATA)
    stats.add(values, valid)
    out_w.write(values, x, y)
    if conf_w is not None and conf is not None:
        conf_w.write(np.where(valid, conf, CONFIDENCE_NODATA).astype(np.float32), x, y)


def _predict_patches(reader, runner, meta, cfg, win, out_w, conf_w, stats, fb, info: Optional[dict] = None,
                     shard=_ALL_TILES) -> int:
    """Patch models: windows on a lattice, each pixel interpolated between the four window centres around it
    (``window_scores``); scored fully convolutionally where the network allows it."""
    torch = runner.torch
    P = meta.patch_size
    stride = int(cfg.stride) if cfg.stride else default_step(P)
    if stride < 1:
        raise InputError("Stride must be at least 1 pixel.")
    scorer = fully_convolutional(runner.model, P, stride)
    # a model trained with context that cannot be scored in one pass gets its windows cut out with that context
    cut = 0 if scorer is not None else int(meta.extra.get("window_context", 0) or 0)
    if cut and not cfg.stride:  # each window costs a network pass over window + context: a coarser lattice
        stride = max(stride, P // CUT_CONTEXT_STEP_DIV)
    step = stride
    if scorer is not None:
        scorer.to(runner.device)
        step = scorer.step
    wx, wy, ww, wh = win
    # a fully convolutional scorer reads 2 cells of its network more around each tile: the windows at a tile's
    # edge then see their neighbours as on the rest of the map (no seams); windows cut out read their context
    tiles = window_tiles(ww, wh, P, step, core=_PATCH_TILE, shift=scorer.shift if scorer is not None else 0,
                         context=2 * scorer.reduction if scorer is not None else cut)
    how = ("scored fully convolutionally" if scorer is not None else
           f"scored window by window with the {cut} px of context the model was trained with" if cut else
           "scored window by window")
    asked = f" (asked: {stride} px, the nearest the network's feature grid allows)" if step != stride else ""
    fb.log(f"Patch model: {P} px windows every {step} px{asked}, {how}; each pixel interpolated between the "
           f"4 nearest window centres; {len(tiles)} tiles")
    if info is not None:
        info.update(window_step=step, fully_convolutional=scorer is not None)

    def load(i):
        r = tiles[i].padded
        data, valid = reader.read(wx + r.x, wy + r.y, r.w, r.h)
        return i, tiles[i], data, valid

    mine = [i for i in range(len(tiles)) if shard.owns(i)]
    for n, (i, t, data, valid) in enumerate(prefetch(load(i) for i in mine)):
        dx, dy = t.out.x - t.padded.x, t.out.y - t.padded.y
        ov = valid[dy : dy + t.out.h, dx : dx + t.out.w]
        if ov.any():
            x = runner.normalise(data, valid)
            if scorer is not None:
                k = t.pad // step
                scores = runner.forward(x[None], scorer)[0][:, k:k + t.ny, k:k + t.nx]
            else:
                o = t.pad - cut  # the padded tile starts t.pad px before the first window
                scores = _window_by_window(runner, torch.from_numpy(x[:, o:, o:]), P, step, cfg.batch_size, t.nx,
                                           t.ny, cut)
            if meta.is_classifier:
                scores = torch.softmax(scores, dim=0)
            per_pixel = interpolate(scores, t.first, step, (t.out.w, t.out.h))
            values, conf = runner.decode_map(per_pixel)
            _write(out_w, conf_w, values, conf, ov, t.out.x, t.out.y, stats)
            shard.wrote(i, t.out)
        fb.progress((n + 1) / len(mine), f"tile {n + 1}/{len(mine)}")
    return len(tiles)


def _window_by_window(runner, x, patch: int, step: int, batch_size: int, nx: int, ny: int, context: int = 0):
    """(outputs, ny, nx) scores of the windows of a normalised tile ``x`` (C, H, W), cut out and batched;
    with ``context``, each window is cut out with that many pixels around it (``x`` starts ``context`` px
    before the first window) and only its own cells are pooled (``window_output``), as in training."""
    torch = runner.torch
    size = patch + 2 * context
    windows = x.unfold(1, size, step).unfold(2, size, step)[:, :ny, :nx]  # C, ny, nx, size, size
    windows = windows.permute(1, 2, 0, 3, 4).reshape(ny * nx, x.shape[0], size, size)
    fn = (lambda t: window_output(runner.model, t, context)) if context else None  # noqa: E731
    outs = [runner.forward(windows[s : s + batch_size].numpy(), fn)
            for s in range(0, len(windows), max(1, batch_size))]
    return torch.cat(outs).reshape(ny, nx, -1).permute(2, 0, 1)


class _MirroredReader:
    """A raster smaller than a dense model's patch, read as if mirrored at its edges (``np.pad`` 'reflect'):
    the model sees whole tiles of image instead of mostly fill. Only pixels inside the raster are written,
    so the output has the raster's size, georeference and nodata."""

    def __init__(self, reader):
        self.reader = reader

    def read(self, xoff: int, yoff: int, width: int, height: int):
        ix = _reflect(np.arange(xoff, xoff + width), self.reader.width)
        iy = _reflect(np.arange(yoff, yoff + height), self.reader.height)
        x0, y0 = int(ix.min()), int(iy.min())
        data, valid = self.reader.read(x0, y0, int(ix.max()) - x0 + 1, int(iy.max()) - y0 + 1)
        return data[:, iy - y0][:, :, ix - x0], valid[iy - y0][:, ix - x0]


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices ``i`` mirrored into ``[0, n)`` without repeating the edge pixel, as ``np.pad(mode='reflect')``."""
    if n == 1:
        return np.zeros_like(i)
    m = np.mod(i, 2 * (n - 1))
    return np.where(m < n, m, 2 * (n - 1) - m)


def dense_batches(tiles: list, per_batch: int) -> list:
    """Tile indices in forward passes: runs of consecutive tiles with the same read size (a narrower tile at
    the far edge starts a run of its own), at most ``per_batch`` each. Fixed by the geometry alone, so that
    every process of a sharded run forms the same batches as one process (tiles without valid pixels are
    left out of their batch, not replaced), and its pixels come out bit for bit the same."""
    groups: list = []
    for i, t in enumerate(tiles):
        g = groups[-1] if groups else None
        if g and len(g) < per_batch and (tiles[g[0]].read.w, tiles[g[0]].read.h) == (t.read.w, t.read.h):
            g.append(i)
        else:
            groups.append([i])
    return groups


def _predict_dense(reader, runner, meta, cfg, win, out_w, conf_w, stats, fb, info: Optional[dict] = None,
                   shard=_ALL_TILES) -> int:
    tile, overlap, per_batch = dense_geometry(meta.patch_size, cfg.tile_size, cfg.overlap, cfg.batch_size)
    align = model_multiple(runner.model, meta)
    wx, wy, ww, wh = win
    # tiles are cut at the raster's edge (no work on fill), except on a mirrored small raster, whose
    # mirror image is context the model should see
    tiles = dense_tiles(ww, wh, tile, overlap, align, trim=not isinstance(reader, _MirroredReader))
    if info is not None:
        info.update(tile_size=tile, overlap=overlap, tile_batch=per_batch)
    grid = f", origins on its {align}-px pooling grid" if align > 1 else ""
    fb.log(f"Dense model: {len(tiles)} tiles of {tile} px, at least {overlap} px cropped at each side{grid}")
    mine = [(g, i) for g, group in enumerate(dense_batches(tiles, per_batch)) if shard.owns(g) for i in group]

    def load(g, i):
        t = tiles[i]
        data, valid = reader.read(wx + t.read.x, wy + t.read.y, t.read.w, t.read.h)
        return g, i, t, data, valid

    batch: list = []
    done = 0

    def flush():
        nonlocal done
        if batch:
            arr = np.stack([runner.normalise(d, v) for _, _, d, v in batch])
            vals, conf = runner.decode(runner.forward(arr))
            for j, (i, t, _, valid) in enumerate(batch):
                dx, dy = t.core_offset
                sl = (slice(dy, dy + t.core.h), slice(dx, dx + t.core.w))
                v = vals[j][(Ellipsis,) + sl] if vals[j].ndim == 3 else vals[j][sl]
                if v.ndim == 3 and v.shape[0] == 1:
                    v = v[0]
                c = conf[j][sl] if conf is not None else None
                _write(out_w, conf_w, v, c, valid[sl], t.core.x, t.core.y, stats)
                shard.wrote(i, t.core)
            if info is not None:
                info["model_pixels"] = info.get("model_pixels", 0) + int(arr.shape[0] * arr.shape[-1] * arr.shape[-2])
            done += len(batch)
            batch.clear()
        fb.progress(done / max(1, len(mine)), f"tile {done}/{len(mine)}")

    current = None
    for g, i, t, data, valid in prefetch(load(g, i) for g, i in mine):
        if g != current:
            flush()
            current = g
        dx, dy = t.core_offset
        if not valid[dy : dy + t.core.h, dx : dx + t.core.w].any():
            done += 1
            continue
        batch.append((i, t, data, valid))
    flush()
    return len(tiles)


def run_predict(cfg: PredictConfig, feedback: Optional[Feedback] = None) -> PredictResult:
    """Load ``cfg.model_path`` and run :func:`predict_raster`; an ``.onnx`` file runs on onnxruntime
    (:func:`run_predict_onnx`).

    Under ``torchrun`` with several processes the tiles are shared among them (``sharded``): each rank
    computes its tiles on its own device (``LOCAL_RANK``'s GPU on CUDA), rank 0 writes the output."""
    from . import distributed
    from .onnx_runtime import is_onnx

    if is_onnx(cfg.model_path):
        if distributed.is_distributed():
            raise InputError("ONNX models are applied in one process; start this job without torchrun.")
        return run_predict_onnx(cfg, feedback)
    with distributed.session(cfg.device) as session:
        meta = read_metadata(cfg.model_path)
        if meta.task == "generation":
            raise ModelFileError("This is a GAN tile generator, not a model that maps a raster.",
                                 "Use GeoML → Generate tiles.")
        check_writable(cfg.output_path)
        with RasterReader(cfg.input_path) as r:
            choose_bands(meta, r.info.band_count, cfg.bands)
        model, meta = load_model(cfg.model_path, "cpu", meta)
        if session is not None:
            cfg = replace(cfg, device=str(session.device))
        return predict_raster(model, meta, cfg, feedback, session=session)


def run_predict_onnx(cfg: PredictConfig, feedback: Optional[Feedback] = None) -> PredictResult:
    """``run_predict`` for an ``.onnx`` model file: the session and its runner from ``onnx_runtime``
    (:func:`~.onnx_runtime.onnx_runner`), the tiles, outputs and styles of :func:`predict_raster`."""
    from .onnx_runtime import onnx_runner

    fb = ensure_feedback(feedback)
    meta, cfg, runner = onnx_runner(cfg, fb)
    check_writable(cfg.output_path)
    with RasterReader(cfg.input_path) as r:
        choose_bands(meta, r.info.band_count, cfg.bands)
    return predict_raster(None, meta, cfg, fb, runner=runner)

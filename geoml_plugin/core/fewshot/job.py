"""Few-shot mapping: the ``geoml:fewshot`` job.

Adapts a model to the analyst's classes from a few labelled points in a new
raster, then classifies the raster with ``core.predict``:

* a **prototypical meta-model** embeds the support patches (centred on each point and
  shifted by the map's window spacing), uses the class means as prototypes — a linear head
  — and then fine-tunes the whole network from there on augmented support
  patches (``adapt_steps``; the meta-learnt embedding is a far better start
  than random weights, and the prototype head a far better start than a
  random head);
* a **MAML meta-model** takes ``adapt_steps`` gradient steps from its learnt
  initialisation on the support patches;
* a **normal GeoML patch classifier** is used as an embedding (everything
  before its last linear layer) with prototypes, optionally fine-tuned the same way.

The adapted network is an ordinary GeoML classifier (class names and colours
of the support classes), written with ``output_model`` when asked, so
``geoml:predict`` can apply it to other rasters later.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..device import describe_device, resolve_device, seed_everything, torch_for_training, torch_module
from ..errors import InputError, ModelFileError
from ..modelfile import ModelMetadata, load_model, new_provenance, read_metadata, save_model
from ..models.view_sets import VIEW_COUNTS, check_views
from ..outputs import check_outputs, output_error, temp_sibling
from ..predict import PredictConfig, PredictResult, choose_bands, predict_raster
from ..progress import Feedback, ensure_feedback
from ..raster.classes import make_styled_classes
from ..raster.io import RasterInfo, RasterReader
from ..raster.labels import NULL_REASON, LabelSet, extract_patches, is_missing_label, read_vector_labels
from ..raster.sieve import min_region_param
from ..spec import param, validate
from ..window_scores import default_step, map_context, window_output
from .data import normalise_patches

SUPPORT_VIEWS = 8  # MAML adapts on every support patch in its 8 rotations/reflections
# Prototypes from the support windows as they lie (centred and shifted by the map's window spacing), not in
# their 8 rotations/reflections too: on EuroSAT's new classes (10 draws, the same meta-model and points) 8 views
# gave maps of 74.6 % / 84.0 % at 1 / 5 points per class and 1 view 74.5 % / 84.1 %, with the adaptation
# 3.7 s / 17.7 s against 0.6 s / 2.5 s (1 thread). The meta-learnt embedding is already turn-invariant enough.
PROTOTYPE_VIEWS = 1
# Default fine-tuning steps from a prototypical meta-model: none. With the support windows embedded with their
# map context, 50 steps added 0.8 point at 5 shots on EuroSAT (82.3 % → 83.0 %, 4 draws) for 5× the
# adaptation time; the map comes in seconds instead.
PROTONET_STEPS = 0
FINE_TUNE_LR = 3e-4
FINE_TUNE_BATCH = 64


@dataclass
class FewShotConfig:
    input_path: str  # the raster to map (the new region)
    model_path: str  # a GeoML meta-model, or a normal GeoML patch classifier
    output_path: str = ""  # class raster (empty: adapt only)
    support: str = ""  # point layer with the labelled support points …
    label_field: str = ""
    points: Optional[list] = None  # … or (x, y, class name) in the raster's CRS (the map tool)
    confidence_path: Optional[str] = None
    output_model: Optional[str] = None  # the adapted classifier, for geoml:predict
    # -1: the model's default (MAML: its inner steps; prototypical: PROTONET_STEPS = 0; classifier: 0)
    adapt_steps: int = param(-1, label="Adaptation steps (-1 = model default)", minimum=-1, help=(
        "<b>Adaptation steps</b>: -1 = the model's default. For MAML meta-models, gradient steps from the learnt "
        "initialisation (default: as meta-trained); for the others, steps of fine-tuning the whole network on the "
        "support points after the nearest-prototype start (default 0: prototypes only, the map in seconds; 50 steps "
        "added about one point at 5 points per class on EuroSAT, for about a minute more on a CPU)."))
    adapt_lr: Optional[float] = None  # default: MAML's inner rate; 3e-4 for fine-tuning from prototypes
    device: str = "auto"
    seed: int = param(0, label="Random seed", minimum=0, advanced=True)
    window: Optional[tuple] = None  # (x, y, w, h) pixels to classify; default the whole raster
    # pixels between classified windows (default patch / 8)
    stride: Optional[int] = param(None, kind="int", auto=0, minimum=1, advanced=True,
                                  label="Stride (pixels between classified windows, 0 = automatic)", help=(
        "<b>Stride</b> (advanced): pixels between classified windows; 0 = automatic, an eighth of the patch. Each "
        "pixel takes the classes of the windows around it, weighted toward the nearer ones; meta-models with per-pixel "
        "normalisation (the default) score every window of a tile in one pass, older GroupNorm ones window by "
        "window."))
    batch_size: int = param(64, label="Batch size", minimum=1, advanced=True)
    # test-time views per window (costs as many forward passes)
    views: int = param(1, choices=VIEW_COUNTS, label="Test-time views", advanced=True, help=(
        "<b>Test-time views</b> (advanced): average each window over 2, 4 or 8 rotations/reflections: a little more "
        "accurate, as many times slower."))
    bands: Optional[list] = None  # 1-based raster bands to use; default as geoml:predict chooses them
    # regions under this many pixels take their largest neighbour's class (as geoml:predict's)
    min_region: int = min_region_param()


@dataclass
class Adapted:
    """An adapted classifier, ready for ``predict_raster``."""

    model: object
    meta: ModelMetadata
    method: str
    class_counts: dict  # class name → support points used
    support_accuracy: float  # on the support patches themselves (a sanity check, not a score)
    skipped: dict = field(default_factory=dict)


@dataclass
class FewShotResult:
    output_path: Optional[str]
    confidence_path: Optional[str]
    output_model: Optional[str]
    method: str
    classes: list
    class_counts: dict  # support points per class
    pixel_counts: dict  # classified pixels per class
    support_accuracy: float
    adapt_seconds: float
    seconds: float
    device: str
    prediction: Optional[PredictResult] = None


# -- support points ---------------------------------------------------------
def _points_labelset(points: list, info: RasterInfo, reader: RasterReader) -> LabelSet:
    """LabelSet from (x, y, class) tuples in the raster CRS, skipping and counting
    points outside the raster or on nodata, as ``read_vector_labels`` does."""
    if not points:
        raise InputError("No support points: click a few points of each class first.")
    named = np.array([not is_missing_label(p[2]) for p in points], bool)
    names = []
    for p in points:
        if not is_missing_label(p[2]) and str(p[2]) not in names:
            names.append(str(p[2]))
    cols, rows = zip(*(info.world_to_pixel(float(x), float(y)) for x, y, _ in points))
    cols_a, rows_a = np.asarray(cols), np.asarray(rows)
    values = np.array([names.index(str(p[2])) if ok else -1 for p, ok in zip(points, named)], np.int64)
    inside = (cols_a >= 0) & (rows_a >= 0) & (cols_a < info.width) & (rows_a < info.height) & named
    ok = inside.copy()
    for i in np.flatnonzero(inside):
        _, v = reader.read(int(cols_a[i]), int(rows_a[i]), 1, 1)
        ok[i] = bool(v[0, 0])
    skipped = {k: n for k, n in ((NULL_REASON, int((~named).sum())),
                                 ("outside the raster", int((named & ~inside).sum())),
                                 ("on nodata pixels", int((inside & ~ok).sum()))) if n}
    return LabelSet(cols_a[ok], rows_a[ok], values[ok], names, "point", skipped, np.flatnonzero(ok))


def read_support(cfg: FewShotConfig, reader: RasterReader, feedback: Feedback) -> LabelSet:
    """The support points with every problem turned into a clear message."""
    if cfg.points is not None:
        ls = _points_labelset(cfg.points, reader.info, reader)
    else:
        if not cfg.support:
            raise InputError("No support points layer was given.")
        if not cfg.label_field:
            raise InputError("Choose the field that holds the class of each support point.")
        try:
            ls = read_vector_labels(cfg.support, cfg.label_field, reader.info, reader=reader)
        except InputError as exc:
            if "every label was skipped" in exc.message:
                raise InputError("None of the support points can be used: " + exc.message.split(": ", 1)[1],
                                 "Click points inside the raster, on pixels with data.") from exc
            raise
        if ls.geometry != "point":
            feedback.log("The support layer has polygons: using pixels sampled inside them.")
    if ls.skipped:
        feedback.log(f"Ignored support points: {ls.describe_skipped()}.")
    counts = ls.counts
    empty = [n for n, c in counts.items() if c == 0]
    if empty:
        raise InputError(
            f"Class(es) {', '.join(repr(n) for n in empty)} have no usable support point"
            + (f" (ignored: {ls.describe_skipped()})" if ls.skipped else "") + ".",
            "Add at least one point of every class inside the raster, on pixels with data.")
    if len(counts) < 2:
        only = next(iter(counts), "")
        raise InputError(f"The support points are all of one class ('{only}'): a map needs at least two classes.",
                         "Add points of the other classes you want to map.")
    return ls


# -- adaptation -------------------------------------------------------------
def _embedding_split(model):
    """(model, parent, attribute) of the last linear layer of a classifier."""
    torch = torch_module()
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            last = name
    if last is None:
        raise ModelFileError("The model has no final linear layer to re-use for new classes.")
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr


def _embed_fn(model, kind: str, context: int = 0):
    """A function patches → embedding for the model kind (``context``: the patches are windows with that
    many px of neighbourhood around them, pooled as the map pools them: ``window_scores.window_output``)."""
    from ..window_scores import window_output

    torch = torch_module()
    if kind in ("protonet", "maml", "fomaml"):
        return lambda x: model.embed(x, context) if context else model.embed(x)
    parent, attr = _embedding_split(model)
    head = getattr(parent, attr)

    def embed(x):
        setattr(parent, attr, torch.nn.Identity())
        try:
            return window_output(model, x, context)
        finally:
            setattr(parent, attr, head)

    return embed


def model_kind(meta: ModelMetadata) -> str:
    fs = meta.extra.get("fewshot") or {}
    if fs.get("algorithm") in ("protonet", "maml", "fomaml"):
        return fs["algorithm"]
    if meta.task == "classification" and meta.output == "patch":
        return "classifier"
    raise ModelFileError(
        f"Few-shot adaptation needs a GeoML meta-model or a patch classifier; this model is a {meta.describe()}.",
        "Meta-train a model with GeoML → Meta-train, or use a patch classifier made by Fine-tune.")


def _support_tensor(reader, ls: LabelSet, meta: ModelMetadata, mean, std, device, context: int = 0):
    """Normalised support patches read with ``context`` px of the neighbourhood their map windows see, plus
    ``default_step`` px on each side (for shifts)."""
    torch = torch_module()
    data, valid = extract_patches(reader, ls.cols, ls.rows,
                                  meta.patch_size + 2 * (context + default_step(meta.patch_size)))
    return torch.from_numpy(normalise_patches(data, valid, mean, std)).to(device)


def adapt(cfg: FewShotConfig, feedback: Optional[Feedback] = None) -> Adapted:
    """Read the model and the support points and adapt the model to the support classes."""
    fb = ensure_feedback(feedback)
    torch = torch_module()
    seed_everything(cfg.seed)
    meta = read_metadata(cfg.model_path)
    kind = model_kind(meta)
    device = resolve_device(cfg.device)
    check_views(cfg.views)
    validate(cfg)  # also when the panel calls adapt and classify itself
    with RasterReader(cfg.input_path) as probe:
        bands = choose_bands(meta, probe.info.band_count, bands=cfg.bands, feedback=fb)
    model, _ = load_model(cfg.model_path, device, meta)
    # what the map's windows see around them (one pass per tile); MAML adapts functionally on windows alone
    context = map_context(model, meta.patch_size) if kind not in ("maml", "fomaml") else 0
    with RasterReader(cfg.input_path, bands) as reader:
        ls = read_support(cfg, reader, fb)
        fs = meta.extra.get("fewshot") or {}
        if fs.get("per_raster_normalisation"):
            mean, std, _ = reader.band_statistics()
        else:
            mean, std = np.asarray(meta.norm_mean), np.asarray(meta.norm_std)
        fb.progress(0.2, "reading support patches")
        xs_context = _support_tensor(reader, ls, meta, mean, std, device, context)
    from ..augment import crop

    xs = crop(xs_context, meta.patch_size + 2 * context)  # the windows at the points, with their context
    ys = torch.from_numpy(ls.values).to(device)
    n_classes = len(ls.class_names)
    fb.log(f"{len(ls)} support points of {n_classes} classes ("
           + ", ".join(f"{k} {v}" for k, v in ls.counts.items()) + f"); model: {meta.describe()}")
    fb.progress(0.3, "adapting")
    steps = cfg.adapt_steps
    if kind in ("maml", "fomaml"):
        steps = int(fs.get("inner_steps", 5)) if steps < 0 else steps
        lr = cfg.adapt_lr or float(fs.get("inner_lr", 0.1))
        model = _adapt_maml(model, xs_context, ys, n_classes, steps, lr, meta.patch_size, cfg.seed)
        method = f"MAML, {steps} steps"
    else:
        steps = (PROTONET_STEPS if kind == "protonet" else 0) if steps < 0 else steps
        model, method = _adapt_prototypes(model, kind, xs_context, ys, n_classes, steps,
                                          cfg.adapt_lr or FINE_TUNE_LR, cfg.seed, fb, meta.patch_size, context)
    model.eval()
    if kind != "classifier" and cfg.views > 1:
        model.views = cfg.views
    with torch.no_grad():
        support_acc = float((window_output(model, xs, context).argmax(1) == ys).float().mean())
    new_meta = _adapted_metadata(meta, cfg, ls, mean, std, bands, method, kind, n_classes)
    fb.log(f"Adapted ({method}); accuracy on the support points themselves: {support_acc:.0%}")
    return Adapted(model, new_meta, method, ls.counts, support_acc, dict(ls.skipped))


def _adapt_prototypes(model, kind: str, xs, ys, n_classes: int, steps: int, lr: float, seed: int, fb: Feedback,
                      patch: int, context: int = 0):
    """Nearest-prototype head on the embedding, then ``steps`` of fine-tuning the
    whole network on augmented support patches, starting from that head.

    ``xs`` are the support patches read with ``context`` px of neighbourhood plus a shift margin around
    them: a prototype averages each window at its centre and shifted by the margin (map windows are rarely
    centred on a point; ``PROTOTYPE_VIEWS`` views of each), each embedded with its context as the map embeds
    it."""
    from ..augment import all_views, shifted
    from .protonet import prototype_head, prototypes

    torch = torch_module()
    model.eval()
    embed = _embed_fn(model, kind, context)
    with torch.no_grad():
        around = shifted(xs, patch + 2 * context)
        z = embed(all_views(around, PROTOTYPE_VIEWS))
        w, b = prototype_head(prototypes(z, ys.repeat(PROTOTYPE_VIEWS * (len(around) // len(xs))), n_classes))
    if kind == "classifier":
        parent, attr = _embedding_split(model)
        setattr(parent, attr, torch.nn.Linear(w.shape[1], n_classes).to(w.device))
        head = getattr(parent, attr)
    else:
        model.head = torch.nn.Linear(w.shape[1], n_classes).to(w.device)
        head = model.head
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    if steps <= 0:
        return model, "nearest prototype"
    fine_tune(model, xs, ys, steps, lr, seed, fb.sub(0.3, 0.95), patch=patch, context=context)
    return model, f"nearest prototype + {steps} fine-tuning steps"


def fine_tune(model, xs, ys, steps: int, lr: float, seed: int, fb: Feedback, batch: int = FINE_TUNE_BATCH,
              patch: Optional[int] = None, context: int = 0) -> None:
    """Fine-tune all weights on randomly shifted, turned, mirrored and jittered copies of the support patches
    (with ``patch``, ``xs`` were read with a margin around them for the shifts: see ``augment.crop``; with
    ``context``, the windows keep that much of their neighbourhood, pooled as on the map).

    The network stays in eval mode: GroupNorm does not care, and a normal
    classifier's BatchNorm keeps its training statistics instead of
    re-estimating them from a handful of patches."""
    from ..augment import augment
    from ..window_scores import window_output

    torch = torch_for_training()
    size = None if patch is None else patch + 2 * context
    gen = torch.Generator().manual_seed(seed)
    reps = max(1, -(-batch // len(xs)))
    opt = torch.optim.Adam(model.parameters(), lr)
    model.eval()
    for i in range(steps):
        if len(xs) * reps > batch:
            idx = torch.randperm(len(xs) * reps, generator=gen)[:batch] % len(xs)
        else:
            idx = torch.arange(len(xs)).repeat(reps)
        idx = idx.to(xs.device)
        xb = augment(xs[idx].cpu(), gen, patch=size).to(xs.device)
        loss = torch.nn.functional.cross_entropy(window_output(model, xb, context), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        fb.progress((i + 1) / steps, f"fine-tuning {i + 1}/{steps}")
    model.eval()


def _adapt_maml(model, xs, ys, n_classes: int, steps: int, lr: float, patch: int, seed: int = 0):
    """Inner loop of MAML from the meta-learnt initialisation, on all views of the support, each view
    shifted at random within the context ``xs`` was read with."""
    from ..augment import all_views, crop
    from .maml import MAML

    torch = torch_module()
    maml = MAML(model, lr, steps)
    views = crop(all_views(xs, SUPPORT_VIEWS), patch, torch.Generator().manual_seed(seed))
    params = maml.adapt(maml.params(), views, ys.repeat(SUPPORT_VIEWS), n_classes)
    model.head = torch.nn.Linear(model.head.in_features, n_classes).to(xs.device)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    return model


def _adapted_metadata(meta: ModelMetadata, cfg: FewShotConfig, ls: LabelSet, mean, std, bands, method: str, kind: str,
                  n_classes: int) -> ModelMetadata:
    arch_args = dict(meta.arch_args)
    if kind == "classifier":
        key = next((k for k in ("num_classes", "num_outputs", "out_channels")
                    if arch_args.get(k) == meta.num_classes), None)
        if key is None:
            raise ModelFileError(f"Cannot tell how architecture '{meta.architecture}' sets its number of classes.")
        arch_args[key] = n_classes
    else:
        arch_args.update(num_classes=n_classes, views=cfg.views)
    return ModelMetadata(
        architecture=meta.architecture, arch_args=arch_args, task="classification", output="patch",
        in_bands=meta.in_bands, patch_size=meta.patch_size, band_indices=list(bands), band_names=meta.band_names,
        norm_mean=[float(v) for v in mean], norm_std=[float(v) for v in std], classes=make_styled_classes(ls.class_names),
        pixel_size=meta.pixel_size, crs_wkt=meta.crs_wkt,
        provenance=new_provenance(method=f"few-shot adaptation ({method})", base_model=os.path.basename(cfg.model_path),
                                  source=os.path.basename(cfg.input_path),
                                  support={k: int(v) for k, v in ls.counts.items()}),
        metrics={}, extra={"fewshot_adapted": {"method": method, "base_kind": kind}},
    )


# -- the job ----------------------------------------------------------------
def _inputs(cfg: FewShotConfig) -> dict:
    """What no output may be: the job's inputs, named as the messages name them."""
    return {"input raster": cfg.input_path, "model file": cfg.model_path, "support layer": cfg.support}


def run_fewshot(cfg: FewShotConfig, feedback: Optional[Feedback] = None) -> FewShotResult:
    """Adapt (:func:`adapt`), optionally save the adapted model, and classify the raster (:func:`classify`)."""
    from ..distributed import require_one_process

    require_one_process("Few-shot mapping")
    fb = ensure_feedback(feedback)
    t0 = time.perf_counter()
    if not cfg.output_path and not cfg.output_model:
        raise InputError("Nothing to do: give an output raster, an output model, or both.")
    check_outputs((cfg.output_path, cfg.confidence_path, cfg.output_model), _inputs(cfg))  # before adapting
    check_views(cfg.views)
    validate(cfg)
    adapted = adapt(cfg, fb.sub(0.0, 0.15))
    t_adapt = time.perf_counter() - t0
    result = None
    # The adapted model is written first, to a hidden temporary file (a full disk fails here, before any map
    # is replaced), and renamed into place last (a cancelled or failed classification leaves no model behind).
    model_tmp = None
    if cfg.output_model:
        model_tmp = save_model(temp_sibling(cfg.output_model, ".safetensors"), adapted.model, adapted.meta)
    try:
        if cfg.output_path:
            result = classify(cfg, adapted, fb.sub(0.15, 0.99))
        if model_tmp:
            try:
                os.replace(model_tmp, cfg.output_model)
            except OSError as exc:
                raise output_error(cfg.output_model, exc) from exc
            fb.log(f"Saved the adapted model to {cfg.output_model}")
    finally:
        if model_tmp and os.path.exists(model_tmp):
            os.remove(model_tmp)
    if result is None:
        result = _result(cfg, adapted, None, 0.0)
    result.output_model = os.path.abspath(cfg.output_model) if cfg.output_model else None
    result.adapt_seconds, result.seconds = t_adapt, time.perf_counter() - t0
    return result


def classify(cfg: FewShotConfig, adapted: Adapted, feedback: Optional[Feedback] = None) -> FewShotResult:
    """Classify ``cfg.input_path`` (``cfg.window``, or the whole raster) with an :func:`adapt`-ed model into
    ``cfg.output_path`` (and ``cfg.confidence_path``) with ``predict_raster``, after the job's output checks.

    The step ``run_fewshot`` takes after :func:`adapt`; the few-shot panel calls it for its preview (a
    ``dataclasses.replace`` of the config with the visible window and a coarse stride) and for its full map, so
    every few-shot raster gets the same checks and names the meta-model it was adapted from
    (``GEOML_MODEL``) and its support points (``GEOML_SUPPORT``). ``cfg.output_model`` is not written here."""
    fb = ensure_feedback(feedback)
    t0 = time.perf_counter()
    if not cfg.output_path:
        raise InputError("No output raster was given.")
    check_outputs((cfg.output_path, cfg.confidence_path), _inputs(cfg))
    # meta-models average their views themselves (model.views, set in adapt); a classifier's are predict's
    base_kind = adapted.meta.extra.get("fewshot_adapted", {}).get("base_kind")
    pcfg = PredictConfig(cfg.input_path, cfg.model_path, cfg.output_path, cfg.confidence_path, device=cfg.device,
                         batch_size=cfg.batch_size, stride=cfg.stride, bands=adapted.meta.band_indices,
                         window=cfg.window, views=cfg.views if base_kind == "classifier" else 1,
                         min_region=cfg.min_region)
    pred = predict_raster(adapted.model, adapted.meta, pcfg, fb)
    return _result(cfg, adapted, pred, time.perf_counter() - t0)


def _result(cfg: FewShotConfig, adapted: Adapted, pred: Optional[PredictResult], seconds: float) -> FewShotResult:
    return FewShotResult(
        output_path=pred.output_path if pred else None, confidence_path=pred.confidence_path if pred else None,
        output_model=None, method=adapted.method, classes=[c.name for c in adapted.meta.classes],
        class_counts=adapted.class_counts, pixel_counts=pred.class_counts if pred else {},
        support_accuracy=adapted.support_accuracy, adapt_seconds=0.0, seconds=seconds,
        device=describe_device(resolve_device(cfg.device)), prediction=pred,
    )


def clone_adapted(adapted: Adapted) -> Adapted:
    """A copy whose model another thread may use (the map tool's background run)."""
    return Adapted(copy.deepcopy(adapted.model), copy.deepcopy(adapted.meta), adapted.method,
                   dict(adapted.class_counts), adapted.support_accuracy, dict(adapted.skipped))

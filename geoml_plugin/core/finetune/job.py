"""Fine-tune a CNN on the analyst's raster and labels: the ``geoml:finetune`` job.

``run_finetune(FinetuneConfig(...), feedback)`` is what the dialog, the
Processing algorithm and Python scripts all call. Steps:

1. check every parameter and the output paths, before any heavy work;
2. read labels (points, polygons or a label raster) and cut normalised
   patches around them (``trainset.py``); refuse unusable labels clearly;
3. split off a stratified validation set (whole features or areas);
4. build the network (``models/``) and load its starting weights
   (``weights.py``: none, catalogue weights such as ImageNet — from the local
   cache, downloaded first only when ``download_weights`` allows it, mapped onto
   the bands and scaled as they expect by ``pretrained.py`` — or an earlier model);
5. train (``trainer.py``) with live progress; Cancel stops within a batch;
6. write the HTML/JSON report, then the model file — atomically, and only
   when everything succeeded, so a failed or cancelled run leaves no file.

Defaults are chosen for a CPU laptop: the small residual CNN from scratch,
64-px patches, batch 32, automatic epochs and learning rate.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..outputs import sidecar_name
from ..progress import Feedback, ensure_feedback
from ..spec import param, validate
from .backbones import BACKBONE_LABELS, BACKBONES

TASKS = ("classification", "segmentation", "regression")
AUTO_EPOCH_SAMPLES = 100_000  # patch models' automatic epochs: about this many patches seen in all
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 5, 100
# Dense models' (segmentation, regression on a target raster) automatic epochs: a budget of pixel visits that
# scales with the labelled area, not the raster: about DENSE_VISITS_PER_PIXEL training visits per labelled
# pixel (patches of patch² pixels), counted up to DENSE_MAX_PIXELS labelled pixels (a fully labelled 4 MP image:
# the most a run spends, about 10 min on a 2-core CPU for the default U-Net), and at least DENSE_MIN_PATCHES
# patches (a small labelled area still gets enough steps to learn). See docs/segmentation-budget.md.
DENSE_VISITS_PER_PIXEL = 20
# The segmentation U-Net with the full-resolution skip (``full_res_unet``) costs about 1.4× per step (2 threads,
# batch 32, 96 px: 2.4–2.9 s against 1.8–2.1 s): fewer visits keep a fully labelled 4 MP image inside the time.
FULL_RES_VISITS_PER_PIXEL = 15
DENSE_MAX_PIXELS = 4_000_000
DENSE_MIN_PATCHES = 2_000
# Patch models trained with context (``window_context``) spend this fraction of their epochs on the window
# alone first (2.25× cheaper for 64-px patches), then learn with the context what the map shows them.
CONTEXT_FROM = 0.7
# Automatic patch size. Dense models (segmentation, pixel regression) take larger windows where the raster is
# large enough (AUTO_PATCH_AREAS of them along its shorter side): on the Dubai aerial parts
# (bench/segmentation_dubai.py) 96 px lifted the maps of unseen parts from 0.678 to 0.739 pixel accuracy (mean
# IoU 0.469 → 0.477, no class left at 0), and NAIP RGB → NIR (bench/regression_naip.py) from 15.3 to 11.9 DN MAE.
# 128 px refused a Dubai part whose rare class then fell in a single validation area (patch-sized blocks): an
# automatic size that leaves a class too few areas falls back to AUTO_PATCH (``_training_data``). Patch models
# keep 64 px (EuroSAT's chip size).
AUTO_PATCH = 64
AUTO_SEGMENTATION_PATCH = 96
AUTO_PATCH_AREAS = 4
# Patch classifiers pool their feature cells with a Gaussian of this many window widths around the window's
# centre (``models.resnets.CentrePool``): the window's class is what lies at its centre, where the map puts it.
CENTRE_POOL = 0.25
# small_resnet patch classifiers are built 1.5× wider than the network's default (32, 64, 128, 256), which
# segmentation and regression keep: on EuroSAT the wider network mapped better (README, Benchmarks).
CLASSIFIER_WIDTHS = (48, 96, 192, 384)
# Patch classifiers (with Augment) train on mixed pairs of patches (mixup: Beta(α, α) blend of two patches and
# of their losses): on EuroSAT, four splits, the chips rose from 89.3 to 90.2 %, the map from 89.5 to 89.9 % and
# its pixel accuracy by 1.2 points, for no extra compute (README, Benchmarks). Dense models do not mix.
PATCH_MIXUP = 0.2
# Blended patches are harder to fit: patch classifiers trained with mixup see this many times the automatic
# patches (130 000, up to 130 epochs). On EuroSAT, four splits, the map rose from 89.8 to 90.8 % (higher on every
# split), the chips from 90.2 to 91.0 %, for 1.3× the training time (README, Benchmarks).
MIXUP_EPOCH_FACTOR = 1.3


@dataclass
class FinetuneConfig:
    input_path: str
    labels: str  # vector layer source (points/polygons) or label/target raster
    # class or value field of a vector layer; unused for rasters
    label_field: str = param("", optional=True, label="Label field (class or value; empty for a label raster)", help=(
        "<b>Label field</b>: the name of the field holding the class (name or number), or a numeric value for "
        "regression; a wrong name gets a message listing the layer's fields. Not used with a label raster."))
    output_model: str = ""
    # 1-based; default all bands but alpha bands
    input_bands: Optional[list] = param(None, kind="bands", label="Bands (default all but alpha)", help=(
        "<b>Input raster</b> and <b>bands</b> (default all but an alpha band, which stays a nodata mask). Per-band "
        "statistics are stored in the model and applied at prediction."))
    task: str = param("classification", choices=TASKS, label="Task", help=(
        "<b>Task</b>: classification (one class per patch), segmentation (a class per pixel, U-Net), regression "
        "(a value per patch from points/polygons, per pixel from a target raster)."))
    backbone: str = param("small_resnet", choices=[(b, BACKBONE_LABELS[b]) for b in BACKBONES], label="Backbone",
                          help=(
        "<b>Backbone</b>: the small residual CNN trains in minutes on a CPU; ResNet-18/34/50 and MobileNetV2 are "
        "torchvision's, adapted to any band count. For an RGB raster, MobileNetV2 with <i>imagenet</i> weights (a "
        "14 MB download) made the best class maps measured (EuroSAT: 94 % against 89 % from scratch); its maps "
        "take longer (each window is scored with its context, every half patch)."))
    # 'none', 'imagenet', a catalogue name (weights_catalog.py) or a GeoML model file
    weights: str = param("none", label="Starting weights: none, imagenet, a catalogue name, or an earlier GeoML "
                         "model file", help=(
        "<b>Weights</b>: <i>none</i> (from scratch), <i>imagenet</i> (torchvision's ImageNet weights of the chosen "
        "ResNet or MobileNetV2), a name from GeoML's weights catalogue (e.g. <i>resnet18_sentinel2_all_moco</i>, "
        "<i>resnet50_sentinel2_all_dino</i>, <i>resnet18_sentinel2_rgb_seco</i>, <i>resnet18_landsat_oli_sr_moco</i>; "
        "the <i>Weights…</i> manager lists them with bands, size and licence), or the path of an earlier GeoML model "
        "file with the same backbone and bands (transfer: its backbone, a new head). Catalogue weights are read from "
        "the torch cache (TORCH_HOME/hub/checkpoints)."))
    # a catalogue entry not cached may be downloaded (the user's consent)
    download_weights: bool = param(False, label="Download catalogue weights that are not cached (checksum verified)",
                                   help=(
        "<b>Download weights</b> (default no): a job downloads missing catalogue weights only when this is yes; then "
        "the file's SHA-256 is checked before it is cached, an interrupted download resumes, and the standard proxy "
        "variables (http_proxy, https_proxy, no_proxy) are used. Without it the message names the file, its URL, its "
        "checksum and the folder to copy it into."))
    # per band used: the weights' band name, '' / '-' = unknown; None = auto
    weight_bands: Optional[list] = param(None, kind="str", optional=True, advanced=True, label=(
        "Weight bands: the weights' band of each band used (e.g. B04,B03,B02; '-' = unknown; empty = from band "
        "descriptions)"), help=(
        "<b>Weight bands</b>: which band of the weights each selected band is, comma-separated in band order (e.g. "
        "<i>B04,B03,B02,B08</i>; <i>-</i> for a band the weights do not know). Empty: read from the raster's band "
        "descriptions (B4, B04, B8A, red…); with no names, a raster with the weights' band count is taken in their "
        "order. Named bands take their pretrained first-layer kernels and the scaling the weights expect (e.g. "
        "Sentinel-2 reflectance ÷ 10000), which is stored in the model file and applied by prediction; other bands "
        "take the mean kernel and the raster's statistics."))
    proxies: Optional[dict] = None  # download proxies ({'https': url}); None = the standard proxy variables
    # None (shells: 0) = automatic (auto_patch_size): AUTO_PATCH, or AUTO_SEGMENTATION_PATCH for a dense model of a
    # large raster
    patch_size: Optional[int] = param(None, kind="int", auto=0, minimum=8, maximum=1024,
                                      label="Patch size (pixels, 0 = automatic)", help=(
        f"<b>Patch size</b>: the side of the windows the network learns from and maps with. 0 (automatic): "
        f"{AUTO_PATCH} px, and {AUTO_SEGMENTATION_PATCH} px for segmentation and pixel regression (a target "
        f"raster) of a raster at least {AUTO_PATCH_AREAS * AUTO_SEGMENTATION_PATCH} px on its shorter side: more "
        f"of the scene around each pixel (on real aerial images the maps of unseen parts scored 0.74 pixel "
        f"accuracy against 0.68 with {AUTO_PATCH} px), at up to 2.5× the training time of a small raster; "
        f"{AUTO_PATCH} px when the larger patches would leave a class too few validation areas."))
    # 0 = automatic: patch models about 100 000 patches seen (5–100 epochs; × MIXUP_EPOCH_FACTOR for classifiers
    # trained with mixup); dense models a budget that scales with the labelled area (DENSE_VISITS_PER_PIXEL,
    # FULL_RES_VISITS_PER_PIXEL)
    epochs: int = param(0, label="Epochs (0 = automatic)", minimum=0, maximum=10000, help=(
        "<b>Epochs</b> 0 and <b>learning rate</b> 0 choose automatically: patch classification and regression see "
        "about 100 000 patches (5–100 epochs; classifiers trained with <b>Augment</b>, which blends patches, 130 000 "
        "and up to 130 epochs); segmentation and pixel regression (a target raster) get a budget "
        "that grows with the labelled area, not the raster: about 15 training visits per labelled pixel for "
        "segmentation (its U-Net is larger) and 20 for pixel regression, counted "
        "up to 4 megapixels (a fully labelled 4 MP image trains in under 10 minutes on a 2-core CPU), at least "
        "2 000 patches. The log says what was chosen and the progress shows the time left. <b>Validation "
        "fraction</b>: share of the labelled features kept apart, per class, for the metrics (0 = none); checked after every epoch, "
        "or every few in runs of over 25 epochs, and always after the last."))
    batch_size: int = param(32, label="Batch size", minimum=2, maximum=4096)
    # 0 = automatic (3e-3 from scratch, 1e-3 from pretrained weights)
    learning_rate: float = param(0.0, label="Learning rate (0 = automatic)", minimum=0.0, maximum=1.0,
                                 help_of="epochs")
    # below 1: the core's range (Processing and the dialog stopped at 0.9 before the specification)
    validation_fraction: float = param(0.2, label="Validation fraction (stratified; 0 = none)", minimum=0.0,
                                       maximum=1.0, maximum_exclusive=True, advanced=True, help_of="epochs")
    freeze_backbone: bool = param(False, label="Freeze the backbone (train the head only)", advanced=True,
                                  help_of="augment")
    augment: bool = param(True, label="Augment (shifts, flips, 90° rotations; contrast jitter for classes)",
                          advanced=True, help=(
        "<b>Augment</b>: random shifts, flips and 90° rotations; for classes also a mild contrast/brightness "
        "jitter, and patch classifiers learn from blended pairs of patches (mixup). <b>Freeze backbone</b>: train "
        "only the head, the backbone's weights and normalisation statistics stay as loaded (fast; for pretrained "
        "weights and very few labels)."))
    device: str = "auto"
    seed: int = param(0, label="Random seed", minimum=0, advanced=True)
    output_report: Optional[str] = None  # HTML; metrics JSON beside it
    # label rasters: patches sampled at most
    max_raster_samples: int = param(2000, name="MAX_SAMPLES", label="Label rasters: patches sampled at most",
                                    minimum=10, advanced=True)
    checkpoint_dir: Optional[str] = None  # an existing folder: a checkpoint after every epoch (checkpoint.py)
    resume: bool = False  # continue from the checkpoint in checkpoint_dir when there is one
    checkpoint_every: int = 0  # also a checkpoint every this many steps within an epoch (0: after epochs only)


@dataclass
class FinetuneResult:
    model_path: str
    task: str
    metrics: dict
    history: list
    class_names: list = field(default_factory=list)
    report_path: Optional[str] = None
    metrics_path: Optional[str] = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0  # training throughput (steps only)
    n_train: int = 0
    n_val: int = 0
    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    device: str = ""
    model: Any = field(default=None, repr=False)  # the trained network (eval mode), for Python callers
    meta: Any = field(default=None, repr=False)  # its ModelMetadata, as saved in the file

    def summary(self) -> str:
        from .metrics import format_r2

        m = self.metrics
        if "overall_accuracy" in m:
            s = f"overall accuracy {m['overall_accuracy']:.1%}, kappa {m['kappa']:.3f}"
            if m.get("mean_iou") is not None:
                s += f", mean IoU {m['mean_iou']:.3f}"
        elif "rmse" in m:
            units = (getattr(self.meta, "target", None) or {}).get("units", "")
            u = f" {units}" if units else ""
            s = f"RMSE {m['rmse']:.4g}{u}, MAE {m['mae']:.4g}{u}, R² {format_r2(m.get('r2'))}"
        else:
            s = "no metrics"
        counted = "pixels" if getattr(self.meta, "output", "") == "dense" else "samples"  # dense: held-out pixels
        return f"{s} ({m.get('evaluated_on', '')}, {m.get('samples', 0)} {counted})"


def shift_margin(patch: int, dense: bool = False) -> int:
    """Pixels a patch may be shifted by in augmentation, in x and in y.

    Patch models (one label per window) are shifted by up to the default spacing of the windows that make
    their map (``window_scores.default_step``: 1/8 of the patch), with the real neighbouring pixels coming
    into view: a window is then labelled by what lies at its centre wherever the window lattice falls, which
    is how ``geoml:predict`` uses it. Dense models keep 1/16 of the patch (their labels move with the
    pixels)."""
    from ..window_scores import default_step

    return max(1, int(patch) // 16) if dense else max(1, default_step(patch))


def _dense_task(cfg: "FinetuneConfig") -> bool:
    """Whether the task trains a dense model (segmentation, or regression on a target raster)."""
    from .trainset import kind_is_dense

    return kind_is_dense(cfg.task, cfg.labels)


REDUCTIONS = {  # each backbone's last reduction (torch-free; a test compares it with the networks)
    "small_resnet": 16, "resnet18": 32, "resnet34": 32, "resnet50": 32, "mobilenet_v2": 32}


def window_context(cfg: "FinetuneConfig") -> int:
    """Pixels of real neighbourhood a patch model is trained with around its window: one cell of its
    backbone (16 px for small_resnet) when the patch is a whole number of cells, else 0.

    ``geoml:predict`` scores such models fully convolutionally, where the features near a window's edge
    see past it (``window_scores.DenseWindows``); trained on isolated patches (zero padding at the edge),
    a small_resnet scored 85 % on EuroSAT chips through that pass when centred on a chip but 58–78 % a
    few pixels off, against 84–90 % for the same windows cut out. Trained with the context, the window
    sees in training what it sees on the map."""
    if _dense_task(cfg):
        return 0
    r = REDUCTIONS.get(cfg.backbone)
    return r if r and cfg.patch_size % r == 0 else 0


def auto_patch_size(cfg: "FinetuneConfig", width: int, height: int) -> int:
    """The user's PATCH_SIZE, else :data:`AUTO_SEGMENTATION_PATCH` for a dense model (segmentation, or
    regression on a target raster) of a raster whose shorter side holds :data:`AUTO_PATCH_AREAS` of them, else
    :data:`AUTO_PATCH`."""
    if cfg.patch_size:
        return int(cfg.patch_size)
    if _dense_task(cfg) and min(width, height) >= AUTO_PATCH_AREAS * AUTO_SEGMENTATION_PATCH:
        return AUTO_SEGMENTATION_PATCH
    return AUTO_PATCH


def _with_patch_size(cfg: "FinetuneConfig", width: int, height: int, fb: Feedback) -> "FinetuneConfig":
    """``cfg`` with its patch size settled (:func:`auto_patch_size`, said in the log when automatic); a patch
    larger than the raster is refused."""
    patch = auto_patch_size(cfg, width, height)
    if cfg.patch_size is None:
        fb.log(f"Patch size automatic: {patch} px"
               + (" (a dense model on a raster this large: more of the scene around each pixel)."
                  if patch != AUTO_PATCH else "."))
    if patch > min(width, height):
        raise InputError(f"The patch size ({patch} px) is larger than the raster ({width}×{height} px).",
                         "Choose a smaller PATCH_SIZE.")
    return replace(cfg, patch_size=patch)


def _training_data(cfg: "FinetuneConfig", reader, norm, fb: Feedback, auto_patch: bool):
    """(data, train_idx, val_idx, cfg): the labelled patches read and split for validation. An automatic patch
    larger than :data:`AUTO_PATCH` whose validation areas (patch-sized blocks of a label raster) leave a class
    too few to split falls back to :data:`AUTO_PATCH`, said in the log (the returned ``cfg`` has the size used)."""
    from .trainset import build_training_data, stratified_split

    while True:
        fb.progress(0.0, "reading labels and patches")
        data = build_training_data(cfg.labels, cfg.label_field, reader, cfg.task, cfg.patch_size,
                                   cfg.max_raster_samples, cfg.seed, fb.sub(0.0, 0.08),
                                   margin=shift_margin(cfg.patch_size, _dense_task(cfg)) if cfg.augment else 0,
                                   norm=norm, context=window_context(cfg))
        fb.log(_describe_labels(data))
        _check_labels(data, cfg)
        try:
            train_idx, val_idx = stratified_split(data, cfg.validation_fraction, cfg.seed)
        except InputError as exc:
            if not auto_patch or cfg.patch_size == AUTO_PATCH:
                raise
            fb.log(f"With {cfg.patch_size} px patches: {exc.message} Automatic patch size: {AUTO_PATCH} px instead.")
            cfg = replace(cfg, patch_size=AUTO_PATCH)
            continue
        return data, train_idx, val_idx, cfg


def auto_epochs(n_train: int, factor: float = 1.0) -> int:
    """Patch models: about ``factor`` × ``AUTO_EPOCH_SAMPLES`` patches seen in all, 5 to ``factor`` × 100 epochs
    (``factor``: ``MIXUP_EPOCH_FACTOR`` for classifiers trained with mixup, else 1)."""
    top = round(MAX_AUTO_EPOCHS * factor)
    return int(min(top, max(MIN_AUTO_EPOCHS, round(factor * AUTO_EPOCH_SAMPLES / max(1, n_train)))))


def dense_budget(labelled_pixels: int, patch: int, per_pixel: int = DENSE_VISITS_PER_PIXEL) -> int:
    """Dense models: training patches of ``patch``² pixels the automatic schedule spends: ``per_pixel`` visits
    (``DENSE_VISITS_PER_PIXEL``, or ``FULL_RES_VISITS_PER_PIXEL`` for the full-resolution U-Net) × the labelled
    pixels (at most ``DENSE_MAX_PIXELS``) / patch², at least ``DENSE_MIN_PATCHES``."""
    visits = per_pixel * min(int(labelled_pixels), DENSE_MAX_PIXELS)
    return int(max(DENSE_MIN_PATCHES, round(visits / float(patch) ** 2)))


def auto_dense_epochs(labelled_pixels: int, patch: int, n_train: int, per_pixel: int = DENSE_VISITS_PER_PIXEL) -> int:
    """Dense models: epochs over ``n_train`` patches that spend :func:`dense_budget` (rounded up: at least 1)."""
    return int(max(1, -(-dense_budget(labelled_pixels, patch, per_pixel) // max(1, n_train))))


def full_res_unet(cfg: "FinetuneConfig", data) -> bool:
    """Whether the dense model gets the full-resolution skip (``models/segmentation.py``): segmentation on the
    ``small_resnet`` encoder. It mapped the Dubai parts better and NAIP's pixel regression worse
    (docs/segmentation-budget.md)."""
    return bool(data.dense and data.is_classifier and cfg.backbone == "small_resnet")


def _epochs(cfg: FinetuneConfig, data, area: int, n_train: int, fb: Feedback, mixup: float = 0.0) -> int:
    """The user's EPOCHS, else the automatic schedule (patch classifiers trained with mixup: longer; dense models:
    the budget, said in the log)."""
    if cfg.epochs:
        return int(cfg.epochs)
    if not data.dense:
        return auto_epochs(n_train, MIXUP_EPOCH_FACTOR if mixup else 1.0)
    per_pixel = FULL_RES_VISITS_PER_PIXEL if full_res_unet(cfg, data) else DENSE_VISITS_PER_PIXEL
    epochs = auto_dense_epochs(area, cfg.patch_size, n_train, per_pixel)
    fb.log(f"Training budget: {area / 1e6:.2f} MP labelled → about {dense_budget(area, cfg.patch_size, per_pixel)} "
           f"patches of {cfg.patch_size} px ({per_pixel} visits per labelled pixel, counted up to "
           f"{DENSE_MAX_PIXELS / 1e6:g} MP; at least {DENSE_MIN_PATCHES} patches): {epochs} epochs.")
    return epochs


def auto_learning_rate(cfg: FinetuneConfig) -> float:
    if cfg.learning_rate > 0:
        return float(cfg.learning_rate)
    pretrained = cfg.weights.strip().lower() != "none"
    return 1e-3 if pretrained and not cfg.freeze_backbone else 3e-3


def report_path_for(model_path: str) -> str:
    """Where the dialog puts the HTML report of the model ``model_path``: ``x_report.html`` for
    ``x.safetensors`` (its metrics JSON, ``x_report.json``, goes beside it)."""
    return sidecar_name(model_path, "finetune_report")


def map_paths_for(model_path: str, task: str) -> list:
    """The rasters the dialog writes beside ``model_path`` when it classifies the raster with the new model:
    ``x_classes.tif`` and ``x_confidence.tif`` for ``x.safetensors`` (classification, segmentation), or
    ``x_values.tif`` (regression: no confidence raster)."""
    if task == "regression":
        return [sidecar_name(model_path, "values")]
    return [sidecar_name(model_path, "classes"), sidecar_name(model_path, "confidence")]


def output_paths(cfg: FinetuneConfig, classify: bool = False) -> list:
    """Every file a run with ``cfg`` writes, replacing any file of that name: the model, then the HTML report
    and its metrics JSON when ``cfg.output_report`` is set, then with ``classify`` the maps the dialog writes
    beside the model afterwards (:func:`map_paths_for`)."""
    from .report import metrics_path

    paths = [cfg.output_model]
    if cfg.output_report:
        paths += [cfg.output_report, metrics_path(cfg.output_report)]
    if classify:
        paths += map_paths_for(cfg.output_model, cfg.task)
    return paths


def check_config(cfg: FinetuneConfig) -> None:
    """Refuse bad parameters before any heavy work, with what to do about them."""
    from ..outputs import check_not_an_input, check_outputs
    from ..train_state import check_folder
    from .report import metrics_path

    if cfg.task not in TASKS:
        raise InputError(f"Unknown task '{cfg.task}'.", "Choose classification, segmentation or regression.")
    if cfg.backbone not in BACKBONES:
        raise InputError(f"Unknown backbone '{cfg.backbone}'.", "Choose one of: " + ", ".join(BACKBONES) + ".")
    if cfg.patch_size is not None and not 8 <= int(cfg.patch_size) <= 1024:
        raise InputError(f"Patch size {cfg.patch_size} is out of range.",
                         f"Use 8 to 1024 pixels, or automatic ({AUTO_PATCH} px; {AUTO_SEGMENTATION_PATCH} px for "
                         "segmentation and regression of a large raster).")
    if cfg.epochs < 0 or cfg.batch_size < 2 or cfg.learning_rate < 0:
        raise InputError("Epochs must be ≥ 0 (0 = automatic), batch size ≥ 2 and learning rate ≥ 0 (0 = automatic).")
    if not 0 <= cfg.validation_fraction < 1:
        raise InputError("VALIDATION_FRACTION must be at least 0 and below 1 (0.2 keeps a fifth of the labels apart).")
    if not cfg.labels:
        raise InputError("No labels were given.", "Choose a points or polygons layer, or a label raster.")
    validate(cfg)
    check_folder(cfg.checkpoint_dir, cfg.resume, cfg.checkpoint_every)
    if cfg.task != "regression":
        from ..raster.labels import check_class_raster, is_raster_source

        if is_raster_source(cfg.labels):
            check_class_raster(cfg.labels)
    inputs = {"input raster": cfg.input_path, "labels": cfg.labels}
    check_outputs([cfg.output_model, cfg.output_report], inputs)
    if cfg.output_report:
        check_not_an_input(metrics_path(cfg.output_report), inputs)  # metrics beside the report
        if os.path.abspath(cfg.output_report) == os.path.abspath(cfg.output_model):
            raise InputError("The report must be a different file from the model.")


def _check_weights(cfg: FinetuneConfig, in_bands: int):
    """``(catalogue entry, earlier model's metadata)`` of ``cfg.weights``, each None where it is not that kind
    (both for none), refused early when unusable."""
    from .pretrained import is_cached, missing_message
    from .weights import catalogue_entry, check_transfer_source, is_model_file, torchvision_weights_enum

    w = cfg.weights.strip()
    if is_model_file(w):
        return None, check_transfer_source(w, cfg.backbone, in_bands)
    if w.lower() == "none":
        return None, None
    if w.lower() == "imagenet":
        torchvision_weights_enum(cfg.backbone)  # "ImageNet weights exist only for the torchvision ResNets"
    entry = catalogue_entry(w, cfg.backbone)
    if entry.arch != cfg.backbone:
        raise InputError(f"The weights '{entry.name}' are for {entry.arch}, but this run uses {cfg.backbone}.",
                         f"Choose BACKBONE={entry.arch}, or other weights.")
    if not is_cached(entry) and not cfg.download_weights:
        raise missing_message(entry)
    return entry, None


def _check_labels(data, cfg: FinetuneConfig) -> None:
    from ..raster.labels import NULL_REASON

    labels = data.labels
    n_null = labels.skipped.get(NULL_REASON, 0)
    if n_null:
        raise InputError(
            f"{n_null} label(s) have no value in field '{cfg.label_field}' (NULL, NaN or empty).",
            "Fill them in, or leave them out (e.g. a layer filter \"" + cfg.label_field + "\" IS NOT NULL), and run again.",
        )
    if data.is_classifier:
        present = sorted(set(labels.values.tolist()))
        if len(present) < 2:
            name = labels.class_names[present[0]] if present else "?"
            raise InputError(f"The labels have only one class ('{name}'); a classifier needs at least two.",
                             "Add labels of the other classes (e.g. background).")
    elif len(labels) < 2 or float(labels.values.max() - labels.values.min()) == 0.0:
        where = f"in field '{cfg.label_field}'" if cfg.label_field else "in the target raster"
        noun = "sampled pixels" if labels.geometry == "raster" else "labels"
        what = (f"All {len(labels)} {noun} have the same value ({float(labels.values[0]):g}) {where}" if len(labels) > 1
                else f"There is only one usable label ({float(labels.values[0]):g} {where})")
        raise InputError(f"{what}: a regression needs different values to learn from.",
                         "Check the field (or the target raster's nodata value), or add labels with other values.")


def _small_widths(cfg: FinetuneConfig, data, source=None):
    """small_resnet's stage widths for this run, or None for the builder's default: those of ``source``, the
    earlier model's metadata (transfer copies its backbone, so the shapes must match), else
    ``CLASSIFIER_WIDTHS`` for a patch classifier."""
    if cfg.backbone != "small_resnet":
        return None
    if source is not None:
        return source.arch_args.get("widths")
    return CLASSIFIER_WIDTHS if data.is_classifier and not data.dense else None


def _build_model(cfg: FinetuneConfig, data, in_bands: int, fb: Feedback, pretrained=None, source=None):
    from ..models import build_model
    from .weights import apply_transfer

    if data.dense:
        arch, args = "unet", {"backbone": cfg.backbone, "in_bands": in_bands, "num_outputs": data.num_outputs}
        if full_res_unet(cfg, data):
            args["full_res"] = True
    else:
        arch, args = cfg.backbone, {"in_bands": in_bands, "num_outputs": data.num_outputs}
        if data.is_classifier and CENTRE_POOL:
            args["centre_pool"] = CENTRE_POOL
    widths = _small_widths(cfg, data, source)
    if widths is not None:
        args["widths"] = list(widths)
    model = build_model(arch, **args)
    if source is not None:
        fb.log(apply_transfer(model, cfg.weights.strip()))
    elif pretrained is not None:
        from .pretrained import apply_entry

        entry, path, match = pretrained
        fb.log(apply_entry(model, entry, path, match))
    else:
        fb.log(f"Training {arch}{' (' + cfg.backbone + ' encoder)' if data.dense else ''} from scratch.")
    return model, arch, args


def _describe_labels(data) -> str:
    labels = data.labels
    what = {"point": "points", "polygon": "positions in polygons", "raster": "pixels sampled from the label raster"}
    head = f"Labels: {len(labels)} {what.get(labels.geometry, 'labels')}"
    if data.is_classifier:
        head += f", {len(data.class_names)} classes (" + ", ".join(f"{k} {v}" for k, v in labels.counts.items()) + ")"
    else:
        t = data.target
        head += f", target '{t['name']}' from {t['min']:.4g} to {t['max']:.4g} (mean {t['mean']:.4g})"
    return head + f"; skipped: {labels.describe_skipped()}."


def run_finetune(cfg: FinetuneConfig, feedback: Optional[Feedback] = None) -> FinetuneResult:
    """Train a model on ``cfg.input_path`` + ``cfg.labels`` and save it to ``cfg.output_model``.

    Under ``torchrun`` with several processes this is one data-parallel run (``trainer``: DDP, the global
    batch is ``cfg.batch_size``); every rank reads the labels and makes the same split, only rank 0 writes
    the model and the report, and a failure on any rank stops them all (``distributed``)."""
    from .. import distributed

    with distributed.session(cfg.device) as session:
        return _finetune(cfg, feedback, session)


def _ensure_weights_once(entry, session, fb, proxies):
    """(path of the weights, feedback for the rest): downloaded first by rank 0 only (the others then find
    them in the cache, or download them too where their cache is not shared)."""
    from .pretrained import ensure_weights

    if session is not None and not session.is_main:
        session.barrier("finetune/weights")
        return ensure_weights(entry, True, None, proxies), fb
    path = ensure_weights(entry, True, fb.sub(0.0, 0.3), proxies)  # the download is the first 30 %
    if session is not None:
        session.barrier("finetune/weights")
    return path, fb.sub(0.3, 1.0)


def _check_same_data(session, data, train_idx, val_idx) -> None:
    """Every rank read the same labels and made the same split (they train on shares of it)."""
    if session is None:
        return
    mine = [len(data), int(np.asarray(train_idx).sum()), int(np.asarray(val_idx).sum())]
    if any(v != mine for v in session.exchange("finetune/data", mine)):
        raise InputError("The processes of this distributed run read different training data.",
                         "Give every process the same input raster and labels (the same files on every node).")


def _finetune(cfg: FinetuneConfig, feedback: Optional[Feedback], session) -> FinetuneResult:
    from ..device import describe_device, resolve_device, seed_everything
    from ..raster.io import RasterReader
    from .trainer import Trainer, TrainSpec
    from .trainset import hold_out_pixels, labelled_area

    fb = ensure_feedback(feedback) if session is None else session.feedback(feedback)
    t0 = time.perf_counter()
    check_config(cfg)
    world = session.world_size if session is not None else 1
    if cfg.batch_size < 2 * world:
        raise InputError(f"A batch of {cfg.batch_size} is too small for {world} processes.",
                         f"BATCH_SIZE is the batch of all processes together: use at least {2 * world}.")
    device = session.device if session is not None else resolve_device(cfg.device)
    seed_everything(cfg.seed)
    with RasterReader(cfg.input_path, cfg.input_bands, skip_alpha=True) as reader:
        info = reader.info
        if reader.alpha_note():
            fb.log(reader.alpha_note())
        auto_patch = cfg.patch_size is None
        cfg = _with_patch_size(cfg, info.width, info.height, fb)
        in_bands = len(reader.bands)
        entry, source = _check_weights(cfg, in_bands)
        pretrained, norm = None, None
        if entry is not None:
            from .pretrained import ensure_weights, is_cached, match_bands, parse_weight_bands, scaling

            match = match_bands(entry, [info.band_names[b - 1] for b in reader.bands],
                                parse_weight_bands(cfg.weight_bands))
            if not is_cached(entry):  # allowed by the user (checked above)
                path, fb = _ensure_weights_once(entry, session, fb, cfg.proxies)
            else:
                path = ensure_weights(entry)
            pretrained = (entry, path, match)
            norm = lambda m, s: scaling(entry, match, m, s)  # noqa: E731
            if entry.scale_mean is not None and match.index is not None:
                fb.log(f"Input scaling of {entry.name} for the matched bands: {entry.scaling}.")
        fb.log(f"Input: {os.path.basename(cfg.input_path)}, {info.width}×{info.height} px, bands {reader.bands}; "
               f"device: {describe_device(device)}")
        data, train_idx, val_idx, cfg = _training_data(cfg, reader, norm, fb, auto_patch)
        bands = list(reader.bands)
        band_names = [info.band_names[b - 1] for b in bands]
    area = labelled_area(data) if data.dense else 0
    hold_out_pixels(data, train_idx, val_idx)
    _check_same_data(session, data, train_idx, val_idx)
    mixup = PATCH_MIXUP if cfg.augment and data.kind == "patch_class" else 0.0
    epochs = _epochs(cfg, data, area, len(train_idx), fb, mixup)
    lr = auto_learning_rate(cfg)
    spec = TrainSpec(epochs=epochs, batch_size=cfg.batch_size, learning_rate=lr, augment=cfg.augment,
                     freeze_backbone=cfg.freeze_backbone, context_from=CONTEXT_FROM if data.context else 0.0,
                     mixup=mixup)
    fb.log(f"Training on {len(train_idx)} patches, validating on {len(val_idx)}; {epochs} epochs, batch "
           f"{cfg.batch_size}, learning rate {lr:g}{', backbone frozen' if cfg.freeze_backbone else ''}"
           f"{', shifts/flips/rotations' if cfg.augment else ''}"
           f"{' and contrast jitter' if cfg.augment and data.is_classifier else ''}"
           f"{f', mixup (α {mixup:g})' if mixup else ''}.")
    model, arch, args = _build_model(cfg, data, in_bands, fb, pretrained, source)
    if session is not None:
        fb.log(f"Distributed: {world} processes ({device.type}), {cfg.batch_size // world}–"
               f"{-(-cfg.batch_size // world)} patches each per step.")
    trainer = Trainer(model, data, train_idx, val_idx, spec, device, cfg.seed, fb.log, session)
    if cfg.checkpoint_dir:
        from .checkpoint import Checkpoints, fingerprint

        trainer.checkpoints = Checkpoints(cfg.checkpoint_dir, fingerprint(cfg, world, len(train_idx), len(val_idx),
                                                                          epochs), cfg.resume)
        trainer.checkpoint_every = int(cfg.checkpoint_every)
    outcome = trainer.fit(fb.sub(0.08, 0.97))
    fb.progress(0.97, "saving")

    result = FinetuneResult(
        model_path=os.path.abspath(cfg.output_model), task=cfg.task, metrics=outcome.metrics,
        history=outcome.history_dicts(), class_names=list(data.class_names), n_train=len(train_idx),
        n_val=len(val_idx), epochs=epochs, batch_size=outcome.batch_size, learning_rate=lr, device=str(device),
        train_seconds=round(outcome.train_seconds, 2),
        samples_per_second=round(outcome.samples_seen / max(outcome.train_seconds, 1e-9), 2),
    )
    meta = _model_metadata(cfg, data, info, bands, band_names, arch, args, result, outcome)
    if pretrained is not None:
        entry, _, match = pretrained
        meta.extra["pretrained"] = {"name": entry.name, "url": entry.url, "hash_prefix": entry.hash_prefix,
                                    "licence": entry.licence, "band_match": match.as_dict(),
                                    "scaling": entry.scaling if entry.scale_mean is not None and match.index
                                    is not None else "the raster's per-band statistics"}
    meta.extra["training"]["world_size"] = world
    _save_on_rank_0(cfg, session, model, meta, result)
    result.model, result.meta = model.eval(), meta
    result.seconds = round(time.perf_counter() - t0, 2)
    fb.done()
    fb.log(f"Saved {cfg.output_model}: {result.summary()} in {result.seconds:.0f} s.")
    if "mean_iou" in result.metrics:
        fb.log("IoU per class: " + ", ".join(f"{name} " + ("not in the evaluated pixels" if v["iou"] is None
                                                          else f"{v['iou']:.3f}")
                                             for name, v in result.metrics["per_class"].items()) + ".")
    return result


def _model_metadata(cfg, data, info, bands, band_names, arch, args, result, outcome):
    from ..modelfile import ModelMetadata, new_provenance
    from ..raster.classes import make_styled_classes
    from .weights import is_model_file

    weights = cfg.weights.strip()
    training = {"epochs": result.epochs, "batch_size": outcome.batch_size, "learning_rate": result.learning_rate,
                "validation_fraction": cfg.validation_fraction, "augment": cfg.augment,
                "freeze_backbone": cfg.freeze_backbone, "train_patches": result.n_train, "val_patches": result.n_val,
                "seed": cfg.seed, "device": result.device, "balance": outcome.balance}
    return ModelMetadata(
        architecture=arch, arch_args=args, task=cfg.task, in_bands=len(bands),
        output="dense" if data.dense else "patch", patch_size=int(cfg.patch_size), band_indices=bands,
        band_names=band_names, norm_mean=[float(v) for v in data.mean], norm_std=[float(v) for v in data.std],
        classes=make_styled_classes(data.class_names, data.class_colors or None) if data.is_classifier else [],
        target=dict(data.target), pixel_size=list(info.pixel_size), crs_wkt=info.crs_wkt,
        provenance=new_provenance(method="geoml:finetune", source=os.path.basename(cfg.input_path),
                                  labels=os.path.basename(cfg.labels.split("|")[0]), label_field=cfg.label_field,
                                  backbone=cfg.backbone,
                                  weights=weights.lower() if weights.lower() in ("none", "imagenet")
                                  or not is_model_file(weights) else os.path.basename(weights)),
        metrics=result.metrics, extra={"training": training, "window_context": int(data.context)},
    )


def _save_on_rank_0(cfg: FinetuneConfig, session, model, meta, result: FinetuneResult) -> None:
    """The model and report, written by rank 0 only; the other ranks return once it has (or stop with
    PeerFailed when it failed)."""
    if session is None or session.is_main:
        _write_outputs(cfg, model, meta, result)
    else:
        result.report_path, result.metrics_path = _report_paths(cfg)
    if session is not None:
        session.barrier("finetune/saved")


def _report_paths(cfg: FinetuneConfig) -> tuple:
    from .report import metrics_path

    if not cfg.output_report:
        return None, None
    return os.path.abspath(cfg.output_report), os.path.abspath(metrics_path(cfg.output_report))


def _write_outputs(cfg: FinetuneConfig, model, meta, result: FinetuneResult) -> None:
    """Report first, model last; on any failure the report files are as before this run (an earlier run's report
    comes back: before, it was deleted)."""
    from ..modelfile import save_model
    from ..outputs import write_report_then_model
    from .report import write_report

    def report():
        result.report_path, result.metrics_path = write_report(cfg.output_report, result, meta)

    write_report_then_model(output_paths(cfg)[1:], report if cfg.output_report else None,  # the report, its JSON
                            lambda: save_model(cfg.output_model, model, meta))

"""Training examples for fine-tuning: labels → normalised patches and targets in memory.

One :class:`TrainingData` holds everything a training run iterates over, so
the training loop only slices tensors (no disk access per batch):

=============  =======================  ==========================================
kind           labels                   target per patch
=============  =======================  ==========================================
patch_class    points / polygons /      class index of the patch centre
               class raster
patch_value    points / polygons        the field's value (regression)
dense_class    polygons (rasterised),   (P, P) class indices, -1 = unlabelled
               class raster, points
               (centre pixel only)
dense_value    target raster            (P, P) values, NaN = no target
=============  =======================  ==========================================

Inputs are normalised per band with the training raster's statistics (also
stored in the model file and applied by ``geoml:predict``); nodata pixels
become 0, the band mean, as at prediction time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError
from ..raster.io import RasterReader, band_units
from ..raster.labels import (
    LabelSet,
    extract_patches,
    is_raster_source,
    rasterize_feature_ids,
    rasterize_window,
    rasterize_windows,
    read_raster_labels,
    read_vector_labels,
)

PATCH_KINDS = ("patch_class", "patch_value")
_FLOAT16_ABOVE_BYTES = 2 * 2**30  # keep large sets in half precision to halve memory
_RASTERIZE_ONCE_MAX_PIXELS = 16_000_000


@dataclass
class TrainingData:
    x: np.ndarray  # (N, C, P, P) normalised inputs
    y: np.ndarray  # (N,) or (N, P, P), see module docstring
    groups: np.ndarray  # (N,) source feature / area of each patch: split unit
    strata: np.ndarray  # (N,) class index (or value bin) used to stratify the split
    kind: str
    patch: int = 0  # patch size the model sees
    margin: int = 0  # extra context kept around each patch for random shifts (x and y are patch + 2·margin)
    context: int = 0  # patch models trained as they map: pixels the network sees around its window (in x, not y)
    class_names: list = field(default_factory=list)
    class_colors: list = field(default_factory=list)  # from a label raster's colour table, else empty
    target: dict = field(default_factory=dict)  # regression: name, mean, std of the target
    mean: np.ndarray = None
    std: np.ndarray = None
    labels: Optional[LabelSet] = None
    pixel_groups: Optional[np.ndarray] = None  # dense: (N, S, S) feature / area of each labelled pixel, -1 = none

    @property
    def dense(self) -> bool:
        return self.kind.startswith("dense")

    @property
    def is_classifier(self) -> bool:
        return self.kind.endswith("class")

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.is_classifier else 1

    def __len__(self) -> int:
        return len(self.y)


def kind_is_dense(task: str, source: str) -> bool:
    """Whether ``task`` with labels ``source`` trains a dense model (segmentation, or values from a raster)."""
    return task == "segmentation" or (task == "regression" and is_raster_source(source))


def data_kind(task: str, labels_are_raster: bool) -> str:
    if task == "classification":
        return "patch_class"
    if task == "segmentation":
        return "dense_class"
    if task == "regression":
        return "dense_value" if labels_are_raster else "patch_value"
    raise InputError(f"Unknown task '{task}'.", "Choose classification, segmentation or regression.")


def normalise_patches(x: np.ndarray, valid: np.ndarray, mean, std) -> np.ndarray:
    """In place: (x − mean) / std per band; nodata pixels set to 0 (the mean)."""
    x -= np.asarray(mean, np.float32)[None, :, None, None]
    x /= np.asarray(std, np.float32)[None, :, None, None]
    x *= valid[:, None]
    return x


def read_labels(source: str, label_field: str, reader: RasterReader, task: str, patch: int,
                max_raster_samples: int, seed: int, feedback) -> tuple[LabelSet, object]:
    """Label positions from a vector layer or a raster; also the open label raster (or None)."""
    if is_raster_source(source):
        return read_raster_labels(source, reader.info, task, max_samples=max_raster_samples, group_cell=patch,
                                  seed=seed, reader=reader, feedback=feedback)
    if not label_field:
        raise InputError("Choose the field of the labels layer that holds the class (or the value, for regression).")
    labels = read_vector_labels(source, label_field, reader.info, "regression" if task == "regression" else task,
                                polygon_samples=20, min_spacing=patch / 4, seed=seed, reader=reader)
    return labels, None


def build_training_data(source: str, label_field: str, reader: RasterReader, task: str, patch: int,
                        max_raster_samples: int = 2000, seed: int = 0, feedback=None, margin: int = 0,
                        norm=None, context: int = 0) -> TrainingData:
    """Read labels and patches; see the module docstring for what comes out.

    With ``margin`` > 0 every patch is read ``margin`` pixels wider on each
    side, so training can shift it randomly (real neighbouring pixels, not
    padding); the centre ``patch``×``patch`` is what validation sees.
    ``context`` > 0 (patch models) reads that many more pixels on each side, which the network sees around
    its window (the trainer pools only the window's features; see ``Trainer.forward``).
    ``norm(mean, std) -> (mean, std)`` may replace the raster's per-band statistics (the scaling pretrained
    weights expect, ``pretrained.scaling``); what is used is stored in ``mean`` / ``std``.
    """
    if context and kind_is_dense(task, source):
        context = 0
    margin += context
    size = patch + 2 * margin
    labels_fb = feedback.sub(0.0, 0.3) if feedback is not None else None
    patches_fb = feedback.sub(0.3, 1.0) if feedback is not None else None
    labels, label_raster = read_labels(source, label_field, reader, task, patch, max_raster_samples, seed, labels_fb)
    try:
        kind = data_kind(task, label_raster is not None)
        mean, std, n_valid = reader.band_statistics()
        if n_valid == 0:
            raise InputError("The input raster has no valid pixels (everything is nodata).")
        if norm is not None:
            mean, std = norm(mean, std)
        x, valid = extract_patches(reader, labels.cols, labels.rows, size, feedback=patches_fb)
        normalise_patches(x, valid, mean, std)
        if x.nbytes > _FLOAT16_ABOVE_BYTES:
            x = x.astype(np.float16)
        target: dict = {}
        colors = label_raster.class_colors() if label_raster is not None and kind.endswith("class") else []
        strata = labels.values if kind != "patch_value" and kind != "dense_value" else None
        pixel_groups = None
        if kind == "patch_class":
            y = labels.values.astype(np.int64)
        elif kind == "patch_value":
            y = labels.values.astype(np.float32)
        elif kind == "dense_class":
            y, pixel_groups = _dense_classes(source, label_field, reader, labels, label_raster, size, patch)
            y[~valid] = -1
        else:
            y = np.stack([label_raster.read_target(int(c) - size // 2, int(r) - size // 2, size, size)
                          for c, r in zip(labels.cols, labels.rows)])
            y[~valid] = np.nan
            pixel_groups = _cell_groups(labels, size, reader.info.width, patch)
        if kind.endswith("value"):
            vals = y[np.isfinite(y)]
            t_mean, t_std = float(vals.mean()), float(vals.std()) or 1.0
            y = ((y - t_mean) / t_std).astype(np.float32)
            name, units = _target_name(source) if label_raster is not None else (label_field or "value", "")
            target = {"name": name, "units": units, "kind": "continuous", "mean": t_mean, "std": t_std, "bands": 1,
                      "min": float(vals.min()), "max": float(vals.max())}
            strata = np.digitize(labels.values, np.quantile(labels.values, [0.25, 0.5, 0.75]))
    finally:
        if label_raster is not None:
            label_raster.close()
    groups = labels.feature_ids if len(labels.feature_ids) == len(labels) else np.arange(len(labels))
    return TrainingData(x=x, y=y, groups=np.asarray(groups, np.int64), strata=np.asarray(strata, np.int64), kind=kind,
                        patch=patch, margin=margin, context=context,
                        class_names=list(labels.class_names), class_colors=colors, target=target, mean=np.asarray(mean, np.float64),
                        std=np.asarray(std, np.float64), labels=labels, pixel_groups=pixel_groups)


def _target_name(source: str) -> tuple[str, str]:
    """(name, units) of a target raster: its band description ("canopy height (m)"), else its file name; the
    units from GDAL's unit type or the description's "(m)"."""
    names, units = band_units(source, [1])  # the GDAL name the label raster was opened with
    stem = os.path.splitext(os.path.basename(source.rstrip("/").split(":")[-1]))[0]
    return (names[0] if names[0] != "band 1" else stem or "value"), units


def _origins(labels: LabelSet, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raster column and row of the top-left pixel of each sample's ``size``×``size`` array."""
    return np.floor(labels.cols).astype(int) - size // 2, np.floor(labels.rows).astype(int) - size // 2


def _cell_groups(labels: LabelSet, size: int, width: int, cell: int) -> np.ndarray:
    """(N, size, size) area of each pixel of each sample: the ``cell``-pixel cell that ``read_raster_labels``
    groups label-raster positions by (``feature_ids``)."""
    xs, ys = _origins(labels, size)
    cells_x = width // max(1, cell) + 1
    off = np.arange(size)
    rows = (ys[:, None] + off[None]) // max(1, cell)
    cols = (xs[:, None] + off[None]) // max(1, cell)
    return rows[:, :, None] * cells_x + cols[:, None, :]


def _dense_classes(source, label_field, reader, labels: LabelSet, label_raster, patch: int, cell: int):
    """(N, P, P) class indices (-1 = unlabelled) and the feature / area each labelled pixel belongs to
    (a label raster's positions are grouped by ``cell``-pixel cells)."""
    half = patch // 2
    xs, ys = _origins(labels, patch)
    n = len(labels)
    if label_raster is not None:
        y = np.stack([label_raster.read_classes(int(x), int(y), patch, patch) for x, y in zip(xs, ys)])
        return y, _cell_groups(labels, patch, reader.info.width, cell)
    if labels.geometry == "point":  # sparse: only the labelled pixel of each patch
        y = np.full((n, patch, patch), -1, np.int64)
        y[:, half, half] = labels.values
        groups = np.full((n, patch, patch), -1, np.int64)
        groups[:, half, half] = labels.feature_ids if len(labels.feature_ids) == n else np.arange(n)
        return y, groups
    # polygons: burn once over the area all patches cover (or per patch when that is huge)
    x0, y0 = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) + patch - x0, int(ys.max()) + patch - y0
    if w * h <= _RASTERIZE_ONCE_MAX_PIXELS:
        burnt = rasterize_window(source, label_field, reader.info, (x0, y0, w, h), classes=labels.class_names)
        ids = rasterize_feature_ids(source, reader.info, [(x0, y0, w, h)])[0]
        cut = [(slice(y - y0, y - y0 + patch), slice(x - x0, x - x0 + patch)) for x, y in zip(xs, ys)]
        return np.stack([burnt[c] for c in cut]).astype(np.int64), np.stack([ids[c] for c in cut])
    windows = [(int(x), int(y), patch, patch) for x, y in zip(xs, ys)]
    y = np.stack(rasterize_windows(source, label_field, reader.info, windows, classes=labels.class_names)).astype(np.int64)
    return y, np.stack(rasterize_feature_ids(source, reader.info, windows))


def labelled_area(data: TrainingData) -> int:
    """Labelled pixels a dense model learns from: every labelled pixel of a label or target raster over valid
    input (counted before sampling), else (polygons, points) the distinct labelled pixels its patches hold."""
    if data.labels is not None and data.labels.labelled_pixels:
        return int(data.labels.labelled_pixels)
    if not data.dense or data.labels is None or not len(data):
        return 0
    size = data.y.shape[-1]
    xs, ys = _origins(data.labels, size)
    k, rr, cc = np.nonzero(data.y >= 0 if data.is_classifier else np.isfinite(data.y))
    return int(len(np.unique((ys[k] + rr).astype(np.int64) * (1 << 32) + (xs[k] + cc + size))))


def hold_out_pixels(data: TrainingData, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
    """Dense labels: keep the held-out features / areas apart pixel by pixel (in place).

    A patch reaches past the feature or area it was drawn from, so its mask holds labelled pixels of
    neighbours that may be on the other side of the split. Training patches lose the labels of held-out
    pixels, and validation patches keep only held-out pixels, each counted once (the first validation
    patch whose centre holds it): the metrics are on held-out pixels, as many as there are.
    """
    groups, data.pixel_groups = data.pixel_groups, None
    if not data.dense or groups is None or not len(val_idx):
        return
    ignore = -1 if data.is_classifier else np.nan
    held_out = np.unique(data.groups[val_idx])
    for i in train_idx:
        data.y[i][np.isin(groups[i], held_out)] = ignore
    size, m, p = data.y.shape[-1], data.margin, data.patch
    centre = np.zeros((size, size), bool)
    centre[m:m + p, m:m + p] = True  # what validation scores (the margin is only for training shifts)
    labelled = ~np.isnan(data.y[val_idx]) if not data.is_classifier else data.y[val_idx] >= 0
    keep = labelled & centre[None] & np.isin(groups[val_idx], held_out)
    xs, ys = _origins(data.labels, size)
    k, rr, cc = np.nonzero(keep)
    key = (ys[val_idx][k] + rr).astype(np.int64) * (1 << 32) + (xs[val_idx][k] + cc + size)
    first = np.zeros(len(key), bool)
    first[np.unique(key, return_index=True)[1]] = True  # np.nonzero is in sample order: the first patch wins
    keep[k[~first], rr[~first], cc[~first]] = False
    yv = data.y[val_idx]
    yv[~keep] = ignore
    data.y[val_idx] = yv


def stratified_split(data: TrainingData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): whole groups (features / areas) go to one side,
    about ``fraction`` of each class's groups to validation."""
    n = len(data)
    if fraction <= 0:
        return np.arange(n), np.zeros(0, np.int64)
    if fraction >= 1:
        raise InputError("VALIDATION_FRACTION must be below 1 (0 = no validation set).")
    rng = np.random.default_rng(seed)
    group_stratum: dict = {}
    if data.dense and data.is_classifier:
        # an area of a label raster holds samples of several classes: each area counts for the class of its
        # samples that has the fewest areas so far, so no class present in many areas is left with one
        # because other classes were sampled there first
        present: dict = {}
        for g, s in zip(data.groups.tolist(), data.strata.tolist()):
            present.setdefault(g, set()).add(s)
        taken = np.zeros(max(len(data.class_names), int(data.strata.max()) + 1), np.int64)
        for g, classes in present.items():
            s = min(sorted(classes), key=lambda c: taken[c])
            group_stratum[g] = s
            taken[s] += 1
    else:
        for g, s in zip(data.groups.tolist(), data.strata.tolist()):
            group_stratum.setdefault(g, s)
    by_stratum: dict = {}
    for g, s in group_stratum.items():
        by_stratum.setdefault(s, []).append(g)
    val_groups = []
    for s, groups in sorted(by_stratum.items()):
        if len(groups) < 2:
            if data.is_classifier:
                name = data.class_names[s] if 0 <= s < len(data.class_names) else str(s)
                raise InputError(
                    f"Class '{name}' has only {len(groups)} labelled feature/area, too few to keep some apart for "
                    "validation (a stratified split needs at least 2 per class).",
                    "Add labels for that class, remove it, or set VALIDATION_FRACTION to 0.",
                )
            continue
        k = min(len(groups) - 1, max(1, int(round(len(groups) * fraction))))
        val_groups += list(rng.choice(np.asarray(groups), k, replace=False))
    is_val = np.isin(data.groups, np.asarray(val_groups, dtype=data.groups.dtype))
    if not is_val.any() or is_val.all():
        raise InputError("Too few labels to split off a validation set.",
                         "Add labels or set VALIDATION_FRACTION to 0.")
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)

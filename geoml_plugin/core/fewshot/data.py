"""Labelled patches from one or more rasters, normalised per raster.

Each raster (region) is normalised with its own band statistics. Few-shot
adaptation later normalises the new region with *its* statistics too, so a
region that is brighter or hazier as a whole does not look like other classes
to the network — a cheap, effective adaptation to a new scene.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..progress import Feedback
from ..raster.io import RasterReader
from ..raster.labels import extract_patches, read_vector_labels
from .episodes import PatchBank


@dataclass
class RegionStats:
    path: str
    mean: np.ndarray
    std: np.ndarray
    bands: list = field(default_factory=list)  # the raster's bands read (1-based)


def normalise_patches(data: np.ndarray, valid: np.ndarray, mean, std) -> np.ndarray:
    """Raw ``(N, C, P, P)`` patches → standardised, nodata set to 0 (the mean),
    exactly as ``core.predict`` prepares windows."""
    x = (data - np.asarray(mean, np.float32)[None, :, None, None]) / np.asarray(std, np.float32)[None, :, None, None]
    x[np.broadcast_to(~valid[:, None], x.shape)] = 0.0
    return x.astype(np.float32, copy=False)


def load_patch_bank(rasters: list[str], labels: str, label_field: str, patch_size: int, bands=None,
                    max_per_class: int = 1000, seed: int = 0, feedback: Feedback | None = None,
                    margin: int = 0) -> tuple[PatchBank, list[RegionStats]]:
    """Read the labelled patches of every raster into one :class:`PatchBank`.

    Labels are one layer for all rasters: each raster takes the labels that
    fall inside it. At most ``max_per_class`` patches per class and raster
    are kept (a random subset), so polygons with many samples stay cheap.
    Patches are read ``margin`` px wider on each side (real context for random shifts).
    """
    if not rasters:
        raise InputError("No training raster was given.")
    rng = np.random.default_rng(seed)
    per_raster, stats, n_bands = [], [], None
    for i, path in enumerate(rasters):
        with RasterReader(path, bands, skip_alpha=True) as reader:
            if feedback and reader.alpha_note():
                feedback.log(reader.alpha_note())
            if n_bands is not None and len(reader.bands) != n_bands:
                raise InputError(
                    f"All training rasters need the same bands: '{os.path.basename(path)}' has "
                    f"{len(reader.bands)}, the first has {n_bands}.")
            n_bands = len(reader.bands)
            try:
                ls = read_vector_labels(labels, label_field, reader.info, reader=reader)
            except InputError as exc:
                if len(rasters) == 1:
                    raise
                if feedback:
                    feedback.log(f"{os.path.basename(path)}: no usable labels ({exc}); raster skipped.")
                continue
            if feedback:
                feedback.log(f"{os.path.basename(path)}: {len(ls)} labels ("
                             + ", ".join(f"{k} {v}" for k, v in ls.counts.items() if v)
                             + f"); skipped: {ls.describe_skipped()}")
            keep = []
            for c in np.unique(ls.values):
                idx = np.flatnonzero(ls.values == c)
                keep.append(rng.choice(idx, max_per_class, replace=False) if len(idx) > max_per_class else idx)
            ls = ls.subset(np.sort(np.concatenate(keep)))
            mean, std, n_valid = reader.band_statistics()
            if n_valid == 0:
                raise InputError(f"The raster '{os.path.basename(path)}' has no valid pixels.")
            sub = feedback.sub(i / len(rasters), (i + 1) / len(rasters)) if feedback else None
            data, valid = extract_patches(reader, ls.cols, ls.rows, patch_size + 2 * margin, sub)
            x = normalise_patches(data, valid, mean, std)
            names = [ls.class_names[v] for v in ls.values]
            per_raster.append((x, names, os.path.basename(path)))
            stats.append(RegionStats(path, mean, std, list(reader.bands)))
    if not per_raster:
        raise InputError("None of the training rasters has usable labels inside it.")
    class_names = sorted({n for _, names, _ in per_raster for n in names}, key=_natural)
    lookup = {n: i for i, n in enumerate(class_names)}
    xs, ys, rs = [], [], []
    for r, (x, names, _) in enumerate(per_raster):
        xs.append(x)
        ys.append(np.array([lookup[n] for n in names], np.int64))
        rs.append(np.full(len(names), r, np.int64))
    bank = PatchBank(np.concatenate(xs), np.concatenate(ys), class_names, np.concatenate(rs),
                     [name for _, _, name in per_raster], margin)
    return bank, stats


def _natural(name: str):
    """Sort '2' before '10' when class labels are numbers."""
    return (0, float(name), "") if _is_number(name) else (1, 0.0, name)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False

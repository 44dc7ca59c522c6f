"""What a map step gathers while it writes: pixel counts per class, a sample of values for the style, and
how many bands the main output has. Shared by one-process and sharded prediction (``predict``,
``sharded``)."""
from __future__ import annotations

import numpy as np

from .modelfile import ModelMetadata


def output_bands(meta: ModelMetadata) -> int:
    """Bands of the main output: 1 for a class map, the target's bands for values."""
    if meta.is_classifier:
        return 1
    return int(meta.target.get("bands", 1))



class MapStats:
    """What a map holds, gathered tile by tile: valid pixels, pixels per class, a sample of values (for the
    style's range)."""


    def __init__(self, meta: ModelMetadata):
        self.meta = meta
        self.valid = 0
        self.counts = np.zeros(max([c.value for c in meta.classes], default=0) + 1, dtype=np.int64)
        self.samples: list = []

    def add(self, values: np.ndarray, valid: np.ndarray) -> None:
        n = int(valid.sum())
        self.valid += n
        if n == 0:
            return
        if self.meta.is_classifier:
            self.counts += np.bincount(values[valid].ravel(), minlength=len(self.counts))[: len(self.counts)]
        else:
            v = values[..., valid] if values.ndim == 3 else values[valid]
            self.samples.append(np.random.default_rng(len(self.samples)).choice(v.ravel(), min(v.size, 4096)))

    def class_counts(self) -> dict:
        return {c.name: int(self.counts[c.value]) for c in self.meta.classes}

    def value_range(self) -> tuple:
        if not self.samples:
            return (0.0, 1.0)
        s = np.concatenate(self.samples)
        return float(np.percentile(s, 2)), float(np.percentile(s, 98))

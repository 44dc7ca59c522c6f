"""Few-shot episodes drawn from labelled patches.

An *episode* (a task) is a small classification problem: ``ways`` classes
picked at random, ``shots`` support patches and ``query`` query patches of
each, relabelled 0..ways-1 in random order. Meta-learning trains on many
episodes so that what is learnt is *how to learn a new problem from a few
examples*, not the training classes themselves.

When patches come from several rasters (regions), every episode is drawn
inside one region, the way the model will be used: a new region, mapped from
a few points clicked in it. Meta-validation uses episodes drawn from patches
held out of training.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError


@dataclass
class PatchBank:
    """Normalised patches with their class and region."""

    x: np.ndarray  # (N, C, P + 2·margin, P + 2·margin) float32
    y: np.ndarray  # (N,) class index into class_names
    class_names: list
    region: np.ndarray = None  # (N,) region index; default all 0
    region_names: list = field(default_factory=list)
    margin: int = 0  # context read around each patch, for random shifts (augment.crop)

    def __post_init__(self):
        if self.region is None:
            self.region = np.zeros(len(self.y), np.int64)
        if not self.region_names:
            self.region_names = [f"raster {i + 1}" for i in range(int(self.region.max(initial=0)) + 1)]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx) -> "PatchBank":
        return PatchBank(self.x[idx], self.y[idx], list(self.class_names), self.region[idx], list(self.region_names),
                         self.margin)

    def groups(self) -> dict:
        """region → class → indices of its patches."""
        out: dict = defaultdict(dict)
        for r in np.unique(self.region):
            for c in np.unique(self.y[self.region == r]):
                out[int(r)][int(c)] = np.flatnonzero((self.region == r) & (self.y == c))
        return out


def holdout_split(bank: PatchBank, shots: int, query: int, fraction: float = 0.2,
                  seed: int = 0) -> tuple[PatchBank, PatchBank]:
    """Hold out about ``fraction`` of each class (per region) for meta-validation.

    A class keeps at least ``shots + query`` patches for training and gives at
    least ``shots + 1`` to validation; classes too small for both stay in
    training only.
    """
    rng = np.random.default_rng(seed)
    if fraction <= 0:
        return bank, bank.subset(np.zeros(0, np.int64))
    train, val = [], []
    for classes in bank.groups().values():
        for idx in classes.values():
            idx = rng.permutation(idx)
            n_val = int(round(fraction * len(idx)))
            n_val = min(max(n_val, shots + 1), len(idx) - (shots + query))
            if n_val < shots + 1:
                train.append(idx)
                continue
            val.append(idx[:n_val])
            train.append(idx[n_val:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)  # noqa: E731
    return bank.subset(cat(train)), bank.subset(cat(val))


@dataclass
class Episode:
    support: np.ndarray  # indices into the bank, (ways * shots,), class-major
    query: np.ndarray  # (ways * query,)
    classes: list  # bank class index of each way
    region: int
    shots: int
    query_per_class: int

    @property
    def support_labels(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.classes)), self.shots)

    @property
    def query_labels(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.classes)), self.query_per_class)


class EpisodeSampler:
    """Draws N-way K-shot episodes with Q queries per class from a :class:`PatchBank`."""

    def __init__(self, bank: PatchBank, ways: int, shots: int, query: int, seed: int = 0):
        if ways < 2:
            raise InputError("WAYS must be at least 2: an episode is a choice between classes.")
        if shots < 1 or query < 1:
            raise InputError("SHOTS and QUERY must be at least 1.")
        self.bank, self.ways, self.shots, self.query = bank, ways, shots, query
        self.rng = np.random.default_rng(seed)
        need = shots + query
        self.groups = {r: {c: idx for c, idx in classes.items() if len(idx) >= need}
                       for r, classes in bank.groups().items()}
        self.regions = [r for r, classes in self.groups.items() if len(classes) >= ways]
        if not self.regions:
            raise InputError(
                f"Episodes need {ways} classes (WAYS) with at least {need} labelled patches each "
                f"(SHOTS {shots} + QUERY {query}), but no raster has that many: {self.describe_counts()}.",
                "Lower WAYS, SHOTS or QUERY, or add labels." if ways > 2 else
                "Lower SHOTS or QUERY, or add labels: an episode needs at least 2 classes.",
            )

    def describe_counts(self) -> str:
        parts = []
        for r, classes in self.bank.groups().items():
            counts = ", ".join(f"{self.bank.class_names[c]} {len(i)}" for c, i in sorted(classes.items()))
            parts.append(f"{self.bank.region_names[r]}: {counts}" if len(self.bank.region_names) > 1 else counts)
        return "; ".join(parts)

    def sample(self) -> Episode:
        region = self.regions[self.rng.integers(len(self.regions))]
        classes = self.groups[region]
        chosen = self.rng.choice(sorted(classes), self.ways, replace=False)
        support, query = [], []
        for c in chosen:
            pick = self.rng.choice(classes[c], self.shots + self.query, replace=False)
            support.append(pick[: self.shots])
            query.append(pick[self.shots:])
        return Episode(np.concatenate(support), np.concatenate(query), [int(c) for c in chosen], int(region),
                       self.shots, self.query)

    def batch(self, n: int, part: Optional[tuple] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` episodes stacked for a batch of tasks:
        support ``(n, ways*shots, C, P, P)``, labels ``(n, ways*shots)``, query likewise.

        ``part`` = (first, count): only those episodes of the ``n`` drawn are stacked (a process's share of the
        global meta-batch under torchrun; every process draws all ``n`` so their samplers stay in step)."""
        eps = [self.sample() for _ in range(n)]
        if part is not None:
            eps = eps[part[0]:part[0] + part[1]]
        x = self.bank.x
        return (np.stack([x[e.support] for e in eps]), np.stack([e.support_labels for e in eps]),
                np.stack([x[e.query] for e in eps]), np.stack([e.query_labels for e in eps]))

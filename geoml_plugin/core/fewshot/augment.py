"""Random label-preserving changes of patches, on the fly, per episode.

Meta-training sees every labelled patch many times; without augmentation a
network memorises them. Patches are shifted (they are read with real
neighbouring pixels around them: a window on the map is rarely centred on a
labelled point, and must still be labelled by what lies at its centre),
turned/mirrored (overhead imagery has no 'up') and get a small per-band gain
and offset (illumination, sensor drift).
"""
from __future__ import annotations

import torch

from ..models.fewshot import dihedral


def crop(x: torch.Tensor, patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Patches read with context ``(..., C, S, S)`` → ``(..., C, patch, patch)``: the centre, or (with a
    ``generator``) each patch shifted at random by up to ``(S - patch) // 2`` px in x and y."""
    m = (x.shape[-1] - patch) // 2
    if m <= 0:
        return x
    if generator is None:
        return x[..., m:m + patch, m:m + patch]
    flat = x.reshape(-1, *x.shape[-3:])
    off = torch.randint(0, 2 * m + 1, (flat.shape[0], 2), generator=generator).tolist()
    out = torch.stack([flat[i, :, a:a + patch, b:b + patch] for i, (a, b) in enumerate(off)])
    return out.reshape(*x.shape[:-2], patch, patch)


def shifted(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, C, S, S)`` patches with context → ``(5 * N, C, patch, patch)``: the centre and the four
    crops shifted by the whole context margin left, right, up and down (prototypes of the neighbourhood a
    map window sees around a point)."""
    m = (x.shape[-1] - patch) // 2
    if m <= 0:
        return x
    offs = [(m, m), (0, m), (2 * m, m), (m, 0), (m, 2 * m)]
    return torch.cat([x[..., a:a + patch, b:b + patch] for a, b in offs])


def augment(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1, patch: int | None = None) -> torch.Tensor:
    """Randomly augment a batch of normalised patches ``(..., C, H, W)``; with ``patch``, patches read with
    context are first shifted at random (:func:`crop`)."""
    if patch is not None:
        x = crop(x, patch, generator)
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:])
    ks = torch.randint(0, 8, (flat.shape[0],), generator=generator)
    out = torch.empty_like(flat)
    for k in range(8):
        sel = ks == k
        if sel.any():
            out[sel] = dihedral(flat[sel], k)
    if jitter > 0:
        n, c = flat.shape[:2]
        gain = 1.0 + jitter * torch.randn(n, 1, 1, 1, generator=generator)
        offset = jitter * torch.randn(n, c, 1, 1, generator=generator)
        out = out * gain + offset
    return out.reshape(shape)


def all_views(x: torch.Tensor, views: int = 8) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(views * N, C, H, W)``: every patch in ``views`` orientations."""
    return torch.cat([dihedral(x, k) for k in range(views)])

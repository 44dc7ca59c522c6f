"""Random label-preserving changes of patches, on the fly, per episode.

Meta-training sees every labelled patch many times; without augmentation a
network memorises them. Patches are turned/mirrored (overhead imagery has no
'up') and get a small per-band gain and offset (illumination, sensor drift).
"""
from __future__ import annotations

import torch

from ..models.meta import dihedral


def augment(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Randomly augment a batch of normalised patches ``(..., C, H, W)``."""
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

"""An endless, seeded latent field anchored to a map's pixel grid.

A tile generator (``models/gan.py``) turns a spatial latent grid into pixels,
one latent cell per ``stride`` pixels. Here every cell of an infinite grid
gets its latent vector from a counter-based hash of ``(seed, channel, row,
column)``, so the value of a cell never depends on which window asks for it.
Decoding any pixel window = hashing the cells that cover it plus the
generator's margin and running :meth:`TileGenerator.forward_crop`, which is
exact: two windows decoded separately agree pixel for pixel with one window
decoded over both. That is why tiles generated at different times (a click,
then "grow") join without seams, and why a seed reproduces a tile anywhere.

Pixel indices are global: column ``i`` covers ``x ∈ [i·px, (i+1)·px)`` and
row ``j`` covers ``y ∈ (−(j+1)·px, −j·px]`` in the output CRS.
"""
from __future__ import annotations

import numpy as np

from ..device import torch_module

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _C1
        x = (x ^ (x >> np.uint64(27))) * _C2
        return x ^ (x >> np.uint64(31))


def _u64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).astype(np.uint64)


NOISE_CHANNEL0 = 1000  # hash channels of the generator's per-pixel noise (stage k: 1000 + k)


def latent_noise(seed: int, channels: int, row0: int, col0: int, rows: int, cols: int,
                 channel0: int = 0) -> np.ndarray:
    """Standard-normal ``(channels, rows, cols)`` float32 for global cells ``row0.., col0..``
    (hash channels ``channel0..``)."""
    k = _u64(np.arange(channel0, channel0 + channels))[:, None, None]
    r = _u64(np.arange(row0, row0 + rows))[None, :, None]
    c = _u64(np.arange(col0, col0 + cols))[None, None, :]
    key = _mix(_mix(_mix(_u64(seed) ^ (k << np.uint64(1))) ^ r) ^ c)
    u1 = ((key >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (_mix(key) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


class FieldDecoder:
    """Decodes pixel windows of a seeded latent field with a loaded generator."""

    def __init__(self, generator, device=None):
        self.torch = torch_module()
        self.g = generator.eval()
        self.device = device or next(generator.parameters()).device
        self.stride = generator.stride
        self.margin = generator.margin_px()
        self.nz = generator.nz

    def cells_for(self, col0: int, row0: int, width: int, height: int) -> tuple[int, int, int, int]:
        """(cell_col0, cell_row0, cell_cols, cell_rows) covering the window plus margin."""
        s, m = self.stride, self.margin
        c0, r0 = (col0 - m) // s, (row0 - m) // s
        c1, r1 = -(-(col0 + width + m) // s), -(-(row0 + height + m) // s)
        return c0, r0, c1 - c0, r1 - r0

    def decode(self, seed: int, col0: int, row0: int, width: int, height: int) -> np.ndarray:
        """``(bands, height, width)`` float32 in normalised units for global pixels
        ``col0..col0+width``, ``row0..row0+height`` (one forward pass)."""
        torch = self.torch
        c0, r0, nc, nr = self.cells_for(col0, row0, width, height)
        z = latent_noise(seed, self.nz, r0, c0, nr, nc)[None]
        x = torch.from_numpy(z).to(self.device)
        with torch.inference_mode():
            out = self.g.forward_crop(x, col0 - c0 * self.stride, row0 - r0 * self.stride, width, height,
                                      self.noise_fn(seed), (c0 * self.stride, r0 * self.stride))
        return out[0].float().cpu().numpy()

    def noise_fn(self, seed: int):
        """The generator's per-pixel noise, from the same hash as the latent field."""
        torch = self.torch

        def fn(stage: int, row: int, col: int, h: int, w: int):
            n = latent_noise(seed, 1, row, col, h, w, channel0=NOISE_CHANNEL0 + stage)
            return torch.from_numpy(n)[None].to(self.device)

        return fn

    def decode_blocks(self, seed: int, col0: int, row0: int, width: int, height: int, block: int = 512):
        """Yield ``(x, y, array)`` blocks (offsets relative to the window) covering a large window.

        Each block is decoded on its own; exactness of ``forward_crop`` makes
        the mosaic identical to one pass, so memory stays bounded.
        """
        for y in range(0, height, block):
            for x in range(0, width, block):
                w, h = min(block, width - x), min(block, height - y)
                yield x, y, self.decode(seed, col0 + x, row0 + y, w, h)

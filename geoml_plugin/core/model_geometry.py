"""How a model's input is laid out in tiles: the size multiple its network pads to, and the tile, overlap
and batch of a dense model's map. Used by prediction and by the ONNX export (which records them)."""
from __future__ import annotations

from typing import Optional

from .errors import InputError
from .modelfile import ModelMetadata


def model_multiple(model, meta: ModelMetadata) -> int:
    """The network's total downsampling (input sides it pads to a multiple of), 1 if unknown."""
    m = getattr(model, "multiple", None)
    if m is None:
        m = meta.extra.get("multiple", 1)
    try:
        return max(1, int(m))
    except (TypeError, ValueError):
        return 1


def dense_geometry(patch: int, tile_size: Optional[int] = None, overlap: Optional[int] = None,
                   batch_size: int = 16) -> tuple[int, int, int]:
    """(tile, overlap, tiles per forward pass) for a dense model trained on ``patch``-px patches.

    Default tile: 8 patches (at most 512 px; 2 patches for patches over 256 px); default overlap: half a patch where the tile is at least 16
    overlaps wide (a quarter of a patch at least), so every kept pixel sees as much context on each side
    as the centre of a training patch, for about 1.31 model pixels per output pixel (a 4-patch tile with
    a quarter-patch overlap cost as much). ``batch_size`` counts tiles of 4 patches (≤ 512 px), the
    tiles of earlier versions: default tiles are batched so that a forward pass holds as many pixels, and
    memory stays where it was. An explicit ``tile_size`` is batched ``batch_size`` at a time.
    """
    P = int(patch)
    tile = int(tile_size or max(min(512, 8 * P), 2 * P))  # patches over 256 px: 2 patches (room for the crop)
    if overlap is None:
        overlap = max(P // 4, min(P // 2, tile // 16))
    overlap = int(overlap)
    if overlap < 0:
        raise InputError("The overlap must be 0 or more pixels.")
    if tile <= 2 * overlap:
        raise InputError(f"Tile size {tile} must be larger than twice the overlap ({overlap}).",
                         f"Use an overlap below {(tile + 1) // 2} pixels.")
    per_batch = max(1, int(batch_size))
    if not tile_size:
        ref = min(512, max(P, 4 * P))
        per_batch = max(1, round(per_batch * ref * ref / (tile * tile)))
    return tile, overlap, per_batch

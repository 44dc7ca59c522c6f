"""Tiling a raster of any size into overlapping windows, and stitching back.

Dense models (segmentation, pixel regression, image translation) see a tile
of ``tile`` pixels that reaches ``overlap`` pixels past the part of the output
it is responsible for (its *core*). Only the core is written, so every output
pixel comes from a tile in which it lies at least ``overlap`` pixels from the
edge (crop-to-centre stitching). Tile origins can be aligned on the
network's pooling grid (``align``), so a tile pools the same pixels as one
pass over the whole raster would. Tiles at the raster edge read past it; the
reader fills and masks that part.

Patch classifiers give one value per window; :func:`patch_grid` lays window
centres on a regular grid of spacing ``stride`` and assigns every output pixel
to the nearest centre, so a class map is made at a stride's cost.

Both are generators over small windows: memory does not depend on raster size.
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar


@dataclass(frozen=True)
class Window:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Tile:
    read: Window  # window to read (may extend past the raster edge)
    core: Window  # part of the output this tile writes (inside the raster)

    @property
    def core_offset(self) -> tuple[int, int]:
        """(dx, dy) of the core inside the read window."""
        return self.core.x - self.read.x, self.core.y - self.read.y


def dense_tiles(width: int, height: int, tile: int, overlap: int, align: int = 1, trim: bool = False) -> list[Tile]:
    """Cover ``width`` × ``height`` with tiles of ``tile`` px whose cores abut.

    The core step is ``tile - 2 * overlap``; the last row/column of cores is
    clipped to the raster. Every output pixel belongs to exactly one core, at
    least ``overlap`` px from its tile's edges.

    ``align`` > 1 (a network's total downsampling, e.g. 16 for a U-Net on a
    ResNet) puts every tile's origin on a multiple of ``align`` px from the
    raster's (or window's) origin, where one pass over the whole raster has its
    pooling grid: the tile then pools the same pixels together as that pass,
    and its output matches it wherever the tile's context suffices. The step
    is rounded down to a multiple of ``align`` (the overlap grows by at most
    ``align // 2``) and the grid starts a little before the raster.

    ``trim``: tiles of the last column/row end at the first multiple of
    ``align`` at or past the raster's edge (no model work on fill beyond it),
    so they can be narrower than ``tile`` (for fully convolutional models).
    """
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    step = tile - 2 * overlap
    align = max(1, int(align))
    if align > 1 and step >= align:
        step -= step % align
    else:
        align = 1
    margin = (tile - step) // 2  # core offset inside the tile: ≥ overlap
    start = -(-margin // align) * align  # first tile origin: -start, a multiple of align, core from ≤ 0
    xs = range(margin - start, width, step)
    ys = range(margin - start, height, step)
    tiles = []
    for cy0 in ys:
        for cx0 in xs:
            cx, cy = max(0, cx0), max(0, cy0)
            cw, ch = min(cx0 + step, width) - cx, min(cy0 + step, height) - cy
            rx, ry = cx0 - margin, cy0 - margin
            tw, th = tile, tile
            if trim:
                tw = min(tile, -(-(width - rx) // align) * align)
                th = min(tile, -(-(height - ry) // align) * align)
            tiles.append(Tile(Window(rx, ry, tw, th), Window(cx, cy, cw, ch)))
    return tiles


@dataclass(frozen=True)
class PatchBlock:
    """A rectangle of output pixels filled from a grid of patch windows."""

    read: Window  # input window holding all patches of the block
    out: Window  # output pixels (inside the raster)
    nx: int  # patch centres across
    ny: int  # patch centres down


def patch_grid(width: int, height: int, patch: int, stride: int, block: int = 512) -> list[PatchBlock]:
    """Blocks of output pixels and the input windows their patches need.

    Output pixel ``(r, c)`` takes the prediction of the patch centred on grid
    point ``(r // stride, c // stride)``, whose centre pixel is
    ``stride * j + stride // 2``; that patch covers
    ``[centre - patch // 2, centre - patch // 2 + patch)``.
    """
    stride = max(1, int(stride))
    per = max(1, block // stride)  # centres per block side
    half = patch // 2
    out = []
    gy_total, gx_total = math.ceil(height / stride), math.ceil(width / stride)
    for gy in range(0, gy_total, per):
        for gx in range(0, gx_total, per):
            ny, nx = min(per, gy_total - gy), min(per, gx_total - gx)
            ox, oy = gx * stride, gy * stride
            ow, oh = min(nx * stride, width - ox), min(ny * stride, height - oy)
            rx, ry = ox + stride // 2 - half, oy + stride // 2 - half
            rw, rh = (nx - 1) * stride + patch, (ny - 1) * stride + patch
            out.append(PatchBlock(Window(rx, ry, rw, rh), Window(ox, oy, ow, oh), nx, ny))
    return out


T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Run ``items`` (e.g. GDAL window reads) in a thread ``depth`` steps ahead.

    GDAL and torch both release the GIL, so reading the next tiles overlaps
    with the model working on the current ones. Exceptions are re-raised in
    the consumer; closing the consumer stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    _END = object()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((True, _END))
        except BaseException as exc:  # hand the error to the consumer
            q.put((False, exc))

    t = threading.Thread(target=produce, daemon=True, name="geoml-prefetch")
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)

"""Tiling a raster of any size into overlapping windows, and stitching back.

Dense models (segmentation, pixel regression, image translation) see a tile
of ``tile`` pixels that reaches ``overlap`` pixels past the part of the output
it is responsible for (its *core*). Only the core is written, so every output
pixel comes from a tile in which it lies at least ``overlap`` pixels from the
edge (crop-to-centre stitching). Tile origins can be aligned on the
network's pooling grid (``align``), so a tile pools the same pixels as one
pass over the whole raster would. Tiles at the raster edge read past it; the
reader fills and masks that part.

Patch models give one value per window; :func:`window_tiles` lays window
centres on a lattice ``step`` px apart, anchored at the raster's origin, and
gives each block of output pixels the windows around it (each pixel is then
interpolated between its four nearest centres: ``window_scores.interpolate``).

Both are generators over small windows: memory does not depend on raster size.
"""
from __future__ import annotations

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
class WindowTile:
    """A rectangle of output pixels and the lattice of windows that maps it.

    Windows are ``patch`` px wide; their top-left corners are ``step`` px apart, the first at ``read``'s
    origin, so ``read`` is ``(nx - 1) * step + patch`` px wide. A window *stands for* the pixel
    ``patch // 2`` px right of and below its top-left corner, as a training patch stands for its labelled
    pixel (plus the scorer's ``shift``); ``first`` is that pixel of the first window, relative to ``out``'s
    origin.
    """

    read: Window  # input pixels under all windows (may extend past the raster edge)
    out: Window  # output pixels (inside the raster)
    nx: int  # windows across
    ny: int  # windows down
    first: tuple  # (x, y)
    pad: int = 0  # pixels read around ``read`` (a multiple of the step): context for the outer windows

    @property
    def padded(self) -> Window:
        """``read`` with ``pad`` more pixels on each side: what a fully convolutional scorer is given, so the
        windows at a tile's edge see their real neighbours as those inside do (no seams between tiles)."""
        return Window(self.read.x - self.pad, self.read.y - self.pad, self.read.w + 2 * self.pad,
                      self.read.h + 2 * self.pad)


def window_lattice(patch: int, step: int, shift: int = 0) -> tuple[int, int]:
    """(top-left corner of window 0, the pixel it stands for): window ``j`` starts at ``corner + step * j``
    and stands for pixel ``step * j + step // 2``, so no pixel is more than ``step / 2`` from one in x or y.
    A window stands for the pixel ``patch // 2 + shift`` from its corner (``shift``: where the scorer's
    features are centred, see ``window_scores.DenseWindows.shift``)."""
    return step // 2 - patch // 2 - shift, step // 2


def window_tiles(width: int, height: int, patch: int, step: int, core: int = 512, shift: int = 0,
                 context: int = 0) -> list[WindowTile]:
    """Tiles of about ``core`` output pixels covering ``width`` × ``height``, each with the windows that stand
    for pixels around it (every output pixel lies between two such pixels, in x and in y, or on one). All
    tiles share one lattice anchored at the raster's (or window's) origin: pixel values do not depend on the
    tiling. ``context``: pixels to read around each tile (rounded up to whole steps, ``WindowTile.pad``)."""
    step = max(1, int(step))
    core = max(step, int(core) // step * step)
    pad = -(-max(0, int(context)) // step) * step
    corner, anchor = window_lattice(patch, step, shift)
    out = []
    for oy in range(0, height, core):
        for ox in range(0, width, core):
            ow, oh = min(core, width - ox), min(core, height - oy)
            jx0, jy0 = (ox - anchor) // step, (oy - anchor) // step
            nx = (ox + ow - 1 - anchor) // step + 2 - jx0
            ny = (oy + oh - 1 - anchor) // step + 2 - jy0
            rx, ry = corner + step * jx0, corner + step * jy0
            read = Window(rx, ry, (nx - 1) * step + patch, (ny - 1) * step + patch)
            first = (anchor + step * jx0 - ox, anchor + step * jy0 - oy)  # = read origin + patch // 2 + shift
            out.append(WindowTile(read, Window(ox, oy, ow, oh), nx, ny, first, pad))
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

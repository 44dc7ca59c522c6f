"""Training tiles for GANs: co-registered input/target crops without nodata.

* :func:`align_target` puts a TARGET raster on the INPUT raster's pixel grid
  (GDAL warp into an in-memory VRT, read lazily) when the grids differ, and
  refuses rasters that do not overlap.
* :class:`TileSampler` draws random ``tile``×``tile`` crops whose input pixels
  are all valid (and, with a target, ≥ 90 % of the target pixels valid; the
  rest is masked out of the loss), rotated by a random multiple of 90° and
  randomly flipped (``augment.random_view``), normalised to z-scores with the band statistics. Small
  rasters are held in memory and every valid position is enumerated once
  (integral image of the nodata mask); large ones are read window by window.
"""
from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from typing import Optional

import numpy as np
from osgeo import gdal

from ..augment import random_view
from ..errors import InputError
from ..raster.georef import crs_name, same_crs, transform_extent
from ..raster.io import RasterInfo, RasterReader, open_raster, raster_info, read_error

MIN_TARGET_VALID = 0.9
_IN_MEMORY_VALUES = 48_000_000  # ≈ 190 MB of float32


def _grids_equal(a: RasterInfo, b: RasterInfo) -> bool:
    return (a.width, a.height) == (b.width, b.height) and same_crs(a.crs_wkt, b.crs_wkt) and np.allclose(
        a.geotransform, b.geotransform, rtol=0, atol=1e-9 * max(1.0, *map(abs, a.geotransform)))


def _is_categorical(path: str) -> bool:
    ds = open_raster(path)
    band = ds.GetRasterBand(1)
    return band.GetColorTable() is not None or bool(band.GetCategoryNames())


def align_target(input_info: RasterInfo, target_path: str) -> str:
    """Path of ``target_path`` on the input's grid: itself, or a warped in-memory VRT.

    Continuous targets are resampled bilinearly, class rasters with nearest
    neighbour. The caller removes a ``/vsimem/`` result with :func:`release`.
    """
    tinfo = raster_info(target_path)
    if _grids_equal(input_info, tinfo):
        return target_path
    if not input_info.crs_wkt or not tinfo.crs_wkt:
        raise InputError("INPUT and TARGET have different pixel grids and one has no CRS, so they cannot be matched.",
                         "Give both rasters a CRS, or make TARGET on the same grid as INPUT.")
    ix0, iy0, ix1, iy1 = input_info.extent
    tx0, ty0, tx1, ty1 = transform_extent(tinfo.extent, tinfo.crs_wkt, input_info.crs_wkt)
    if min(ix1, tx1) <= max(ix0, tx0) or min(iy1, ty1) <= max(iy0, ty0):
        raise InputError(
            f"The TARGET raster ({os.path.basename(target_path)}) does not overlap the INPUT raster "
            f"({os.path.basename(input_info.path)}) in {crs_name(input_info.crs_wkt)}.",
            "Conditional training needs both rasters over the same area.",
        )
    nodata = tinfo.nodata[0] if tinfo.nodata[0] is not None else -9999.0
    out = f"/vsimem/geoml_target_{uuid.uuid4().hex}.vrt"
    gdal.Warp(out, target_path, format="VRT", outputBounds=(ix0, iy0, ix1, iy1), width=input_info.width,
              height=input_info.height, dstSRS=input_info.crs_wkt, srcNodata=tinfo.nodata[0], dstNodata=nodata,
              resampleAlg="near" if _is_categorical(target_path) else "bilinear", outputType=gdal.GDT_Float32)
    return out


def release(path: Optional[str]) -> None:
    if path and path.startswith("/vsimem/"):
        gdal.Unlink(path)


@dataclass
class Batch:
    x: np.ndarray  # (n, C, T, T) normalised input (unconditional: the training tiles)
    y: Optional[np.ndarray] = None  # (n, Ct, T, T) normalised target
    mask: Optional[np.ndarray] = None  # (n, T, T) valid target pixels


def _window_sums(bad: np.ndarray, tile: int) -> np.ndarray:
    """Count of ``bad`` pixels in every tile×tile window, indexed by top-left corner."""
    ii = np.zeros((bad.shape[0] + 1, bad.shape[1] + 1), dtype=np.int64)
    ii[1:, 1:] = bad.astype(np.int64).cumsum(0).cumsum(1)
    return ii[tile:, tile:] - ii[:-tile, tile:] - ii[tile:, :-tile] + ii[:-tile, :-tile]


class TileSampler:
    """Random valid, augmented, normalised crops from INPUT (and TARGET)."""

    def __init__(self, reader: RasterReader, tile: int, target: Optional[RasterReader] = None,
                 in_mean=None, in_std=None, tgt_mean=None, tgt_std=None, augment: bool = True,
                 in_memory: Optional[bool] = None):
        self.reader, self.target, self.tile, self.augment = reader, target, int(tile), augment
        w, h = reader.width, reader.height
        if self.tile > min(w, h):
            raise InputError(f"The tile size ({self.tile} px) is larger than the raster ({w}×{h} px).",
                             "Choose a smaller TILE_SIZE.")
        self.in_mean = np.asarray(in_mean, np.float32)[:, None, None]
        self.in_std = np.asarray(in_std, np.float32)[:, None, None]
        if target is not None:
            self.tgt_mean = np.asarray(tgt_mean, np.float32)[:, None, None]
            self.tgt_std = np.asarray(tgt_std, np.float32)[:, None, None]
        bands = len(reader.bands) + (len(target.bands) if target is not None else 0)
        self.in_memory = in_memory if in_memory is not None else w * h * bands <= _IN_MEMORY_VALUES
        self.positions = None
        self._coarse = None
        if self.in_memory:
            self._load_all()
        else:
            self._find_candidates()

    # -- whole raster in memory --------------------------------------------
    def _load_all(self) -> None:
        w, h, t = self.reader.width, self.reader.height, self.tile
        self.x_all, valid = self.reader.read(0, 0, w, h)
        ok = _window_sums(~valid, t) == 0
        if self.target is not None:
            self.y_all, self.m_all = self.target.read(0, 0, w, h)
            ok &= _window_sums(~self.m_all, t) <= (1 - MIN_TARGET_VALID) * t * t
        self.positions = np.flatnonzero(ok)
        if self.positions.size == 0:
            raise self._no_tiles_error()
        self._stride_w = ok.shape[1]

    # -- large rasters: windowed reads ----------------------------------------
    def _coarse_valid(self, reader: RasterReader, cw: int, ch: int) -> np.ndarray:
        try:
            arr = reader.ds.ReadAsArray(0, 0, reader.width, reader.height, buf_xsize=cw, buf_ysize=ch,
                                        band_list=reader.bands)
        except RuntimeError as exc:  # a damaged overview or tile
            raise read_error(reader.name, "an overview", exc) from exc
        arr = np.asarray(arr).reshape(len(reader.bands), ch, cw)
        ok = np.isfinite(arr).all(axis=0) if np.issubdtype(arr.dtype, np.floating) else np.ones((ch, cw), bool)
        for i, nd in enumerate(reader._nodata):
            if nd is not None:
                ok &= arr[i] != nd
        return ok

    def _find_candidates(self) -> None:
        """Where valid tiles may be, from a decimated read of the nodata mask (≤ 4 M cells).

        Windows are then drawn there instead of anywhere in the raster, so a small valid area in
        a large raster (a DEM clipped to a coastline) is found in a few reads, not by luck.
        """
        w, h, t = self.reader.width, self.reader.height, self.tile
        f = max(1, math.ceil(max(w * h / 4_000_000, 1.0) ** 0.5))  # raster pixels per coarse cell
        cw, ch = math.ceil(w / f), math.ceil(h / f)
        ok = self._coarse_valid(self.reader, cw, ch)
        if self.target is not None:
            ok &= self._coarse_valid(self.target, cw, ch)
        k = max(1, t // f)
        if min(ch, cw) < k:
            return
        cand = np.flatnonzero(_window_sums(~ok, k) == 0)
        if cand.size:
            self._coarse = (f, cand, cw - k + 1)

    def _window_position(self, rng: np.random.Generator) -> tuple[int, int]:
        t = self.tile
        if self._coarse is None:
            return int(rng.integers(self.reader.width - t + 1)), int(rng.integers(self.reader.height - t + 1))
        f, cand, stride = self._coarse
        r, c = divmod(int(cand[rng.integers(cand.size)]), stride)
        return (min(c * f + int(rng.integers(f)), self.reader.width - t),
                min(r * f + int(rng.integers(f)), self.reader.height - t))

    def valid_positions(self) -> int:
        return int(self.positions.size) if self.positions is not None else -1

    def _no_tiles_error(self) -> InputError:
        what = "INPUT and TARGET both have" if self.target is not None else "the raster has"
        return InputError(f"No {self.tile}×{self.tile} px tile was found where {what} valid pixels "
                          "(no nodata) — the rasters are mostly nodata, or the tile size is too large.",
                          "Choose a smaller TILE_SIZE or a raster with more valid data.")

    def _crop(self, rng: np.random.Generator):
        t = self.tile
        if self.in_memory:
            p = int(self.positions[rng.integers(self.positions.size)])
            r, c = divmod(p, self._stride_w)
            x = self.x_all[:, r : r + t, c : c + t]
            if self.target is None:
                return x, None, None
            return x, self.y_all[:, r : r + t, c : c + t], self.m_all[r : r + t, c : c + t]
        for _ in range(200):  # rejection sampling on windowed reads
            c, r = self._window_position(rng)
            x, v = self.reader.read(c, r, t, t)
            if not v.all():
                continue
            if self.target is None:
                return x, None, None
            y, m = self.target.read(c, r, t, t)
            if m.mean() >= MIN_TARGET_VALID:
                return x, y, m
        raise self._no_tiles_error()

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        xs, ys, ms = [], [], []
        for _ in range(n):
            x, y, m = self._crop(rng)
            x = (x - self.in_mean) / self.in_std
            if y is not None:
                y = np.where(m[None], (y - self.tgt_mean) / self.tgt_std, 0.0).astype(np.float32)
            if self.augment:
                x, y, m = random_view([x, y, m], rng) if y is not None else (*random_view([x], rng), None, None)
            xs.append(x)
            ys.append(y)
            ms.append(m)
        if self.target is None:
            return Batch(np.stack(xs).astype(np.float32))
        return Batch(np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32), np.stack(ms))

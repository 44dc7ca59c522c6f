"""The training report: a PNG with sample tiles and loss curves, and a CSV of the losses.

Tiles are shown as analysts know them: single-band rasters (e.g. a DEM) as
a hillshade tinted with a terrain colour ramp, three or more bands as RGB
with a 2–98 % stretch. With matplotlib importable (its Agg canvas, no GUI
backend touched) the figure has titles and axes; without it the same panels
are composed with numpy and written by GDAL's PNG driver.
"""
from __future__ import annotations

import os
import uuid
from typing import Optional

import numpy as np
from osgeo import gdal

from ..outputs import sidecar_name, write_text_atomic
from ..raster.styles import TERRAIN


def hillshade(z: np.ndarray, pixel: float = 1.0, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Lambertian hillshade in 0..1 of a 2-D array (same units for z and pixel)."""
    gy, gx = np.gradient(z.astype(np.float64), pixel)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(360.0 - azimuth + 90.0), np.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0)


def _ramp(values: np.ndarray, colors=TERRAIN) -> np.ndarray:
    stops = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.float64) / 255.0
    pos = np.clip(values, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def _per_shown_band(v, c: int, idx: list) -> np.ndarray:
    """A stretch bound given per band of the tile (or one for all) → one per shown band."""
    v = np.asarray(v, dtype=float).ravel()
    return np.broadcast_to(v, (c,))[idx] if v.size in (1, c) else np.broadcast_to(v, (len(idx),))


def tile_to_rgb(tile: np.ndarray, lo=None, hi=None, exaggeration: float = 2.0) -> np.ndarray:
    """``(C, h, w)`` → ``(h, w, 3)`` floats in 0..1 for display.

    ``lo``/``hi`` fix the stretch (per band) so that several tiles are shown
    on one scale; default is the tile's own 2–98 % range.
    """
    tile = np.asarray(tile, dtype=np.float64)
    c = tile.shape[0]
    idx = [0, 1, 2] if c >= 3 else [0]
    sub = tile[idx]
    lo = np.percentile(sub, 2, axis=(1, 2)) if lo is None else _per_shown_band(lo, c, idx)
    hi = np.percentile(sub, 98, axis=(1, 2)) if hi is None else _per_shown_band(hi, c, idx)
    norm = (sub - lo[:, None, None]) / np.maximum(hi - lo, 1e-9)[:, None, None]
    if c >= 3:
        return np.clip(np.moveaxis(norm, 0, -1), 0, 1)
    shade = hillshade(sub[0] * exaggeration / max(float(hi[0] - lo[0]), 1e-9) * 8.0)
    return _ramp(norm[0]) * (0.35 + 0.65 * shade[..., None])


def sample_grid(rows: list, gap: int = 4) -> np.ndarray:
    """Rows of ``(h, w, 3)`` images → one ``(H, W, 3)`` mosaic on white."""
    h = max(im.shape[0] for row in rows for im in row)
    w = max(im.shape[1] for row in rows for im in row)
    ncol = max(len(r) for r in rows)
    out = np.ones((len(rows) * (h + gap) + gap, ncol * (w + gap) + gap, 3))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            out[y : y + im.shape[0], x : x + im.shape[1]] = im
    return out


def _plot_numpy(losses: dict, height: int, width: int) -> np.ndarray:
    """Loss curves drawn without a plotting library (one colour per curve, light axes)."""
    img = np.ones((height, width, 3))
    img[-2:, :] = img[:, :2] = 0.6
    colors = [(0.12, 0.47, 0.71), (0.84, 0.15, 0.16), (0.17, 0.63, 0.17), (1.0, 0.5, 0.05)]
    for k, (_name, vals) in enumerate(losses.items()):
        v = np.asarray(vals, dtype=np.float64)
        if v.size < 2:
            continue
        v = np.convolve(v, np.ones(min(25, v.size)) / min(25, v.size), mode="valid")
        lo, hi = np.percentile(v, 1), np.percentile(v, 99)
        xs = np.linspace(2, width - 1, v.size)
        ys = (height - 3) - (np.clip(v, lo, hi) - lo) / max(hi - lo, 1e-9) * (height - 6)
        xx = np.arange(2, width)
        yy = np.interp(xx, xs, ys)
        for dy in (-1, 0, 1):
            img[np.clip(yy.astype(int) + dy, 0, height - 1), xx] = colors[k % len(colors)]
    return img


def _save_png_gdal(path: str, rgb: np.ndarray) -> None:
    arr = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    mem = gdal.GetDriverByName("MEM").Create("", arr.shape[1], arr.shape[0], 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(arr[..., i])
    gdal.GetDriverByName("PNG").CreateCopy(path, mem)


def _save_matplotlib(path: str, grid: np.ndarray, row_titles: list, losses: dict, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.02, 0.33, 0.96, 0.62])
    ax.imshow(grid)
    ax.set_axis_off()
    ax.set_title(title + ("\nrows: " + " / ".join(row_titles) if row_titles else ""), fontsize=10)
    lx = fig.add_axes([0.08, 0.05, 0.88, 0.23])
    for name, vals in losses.items():
        v = np.asarray(vals, dtype=np.float64)
        k = min(25, max(1, v.size // 20))
        lx.plot(np.arange(v.size), v, alpha=0.2)
        if v.size >= k:
            lx.plot(np.arange(k - 1, v.size), np.convolve(v, np.ones(k) / k, mode="valid"), label=name,
                    color=lx.lines[-1].get_color())
    lx.set_xlabel("iteration")
    lx.set_ylabel("loss")
    lx.legend(loc="upper right", fontsize=8)
    lx.grid(alpha=0.3)
    fig.savefig(path, format="png")


def losses_path(report_path: str) -> str:
    """The loss table that :func:`write_report` writes beside the PNG report ``report_path``:
    ``<report minus .png>_losses.csv``."""
    return sidecar_name(report_path, "losses")


def write_report(path: str, rows: list, row_titles: list, losses: dict, title: str = "",
                 use_matplotlib: Optional[bool] = None) -> str:
    """Write ``path`` (PNG) atomically and ``<path minus .png>_losses.csv`` beside it (:func:`losses_path`)."""
    grid = sample_grid(rows)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.part-{uuid.uuid4().hex[:8]}.png")
    if use_matplotlib is None:
        try:
            import matplotlib  # noqa: F401

            use_matplotlib = True
        except ImportError:
            use_matplotlib = False
    try:
        if use_matplotlib:
            _save_matplotlib(tmp, grid, row_titles, losses, title)
        else:
            plot = _plot_numpy(losses, 160, grid.shape[1])
            _save_png_gdal(tmp, np.concatenate([grid, plot], axis=0))
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)
    n = max((len(v) for v in losses.values()), default=0)
    lines = [",".join(["iteration", *losses])]
    for i in range(n):
        lines.append(",".join([str(i + 1)] + [f"{v[i]:.6g}" if i < len(v) else "" for v in losses.values()]))
    write_text_atomic(losses_path(path), "\n".join(lines) + "\n")
    return path


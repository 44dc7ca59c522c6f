"""Distribution distances used to judge generated rasters (training report, benchmarks)."""
from __future__ import annotations

import numpy as np


def wasserstein_1d(a, b, n_quantiles: int = 1000) -> float:
    """1-D Wasserstein-1 distance (mean absolute quantile difference) of two samples."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    q = (np.arange(n_quantiles) + 0.5) / n_quantiles
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def slope_degrees(z: np.ndarray, pixel: float, valid=None) -> np.ndarray:
    """Slope (degrees) of the interior pixels of a 2-D elevation array whose 3×3
    neighbourhood is valid; ``z`` and ``pixel`` in the same units."""
    z = np.asarray(z, np.float64)
    gy, gx = np.gradient(z, pixel)
    s = np.degrees(np.arctan(np.hypot(gx, gy)))[1:-1, 1:-1]
    if valid is None:
        return s.ravel()
    v = np.asarray(valid, bool)
    ok = v[1:-1, 1:-1] & v[:-2, 1:-1] & v[2:, 1:-1] & v[1:-1, :-2] & v[1:-1, 2:]
    return s[ok]


def gradient_magnitude(tiles: np.ndarray) -> np.ndarray:
    """|∇| per pixel (units per pixel) of ``(n, C, h, w)`` tiles, all bands pooled."""
    gy, gx = np.gradient(np.asarray(tiles, np.float64), axis=(-2, -1))
    return np.hypot(gx, gy)[..., 1:-1, 1:-1].ravel()

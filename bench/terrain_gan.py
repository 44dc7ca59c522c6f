#!/usr/bin/env python3
"""Terrain GAN realism on real DEMs, printed as JSON.

For each DEM in ``../shared/data/dem`` (or --data): train a tile generator with
``geoml:traingan``'s core job, generate terrain with ``geoml:generate``'s core
(one seamless --gen-px × --gen-px area per seed), and compare slope
distributions with the 1-D Wasserstein distance (degrees):

* ``w1_generated_vs_real`` — generated slopes vs all valid slopes of the DEM;
* ``w1_real_halves`` — west vs east half and north vs south half of the DEM
  (the natural variation of the terrain itself), and their mean;
* ``ratio`` = generated / mean real-vs-real. Target: ≤ 1.5.

Skips (JSON ``skipped``) when the data folder is absent.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "dem"


def _real(path):
    from osgeo import gdal

    ds = gdal.Open(str(path))
    z = ds.ReadAsArray().astype(np.float64)
    nd = ds.GetRasterBand(1).GetNoDataValue()
    valid = np.isfinite(z) & ((z != nd) if nd is not None else True)
    return z, valid, abs(ds.GetGeoTransform()[1])


def bench_dem(path: Path, args, tmp: str) -> dict:
    from osgeo import gdal

    from geoml_plugin.core.gan.generate import GenerateConfig, run_generate
    from geoml_plugin.core.gan.metrics import slope_degrees, wasserstein_1d
    from geoml_plugin.core.gan.train import GanTrainConfig, run_traingan
    from geoml_plugin.core.progress import PrintFeedback

    z, valid, px = _real(path)
    h, w = z.shape
    real = slope_degrees(z, px, valid)
    halves = {
        "west_east": wasserstein_1d(slope_degrees(z[:, : w // 2], px, valid[:, : w // 2]),
                                    slope_degrees(z[:, w // 2 :], px, valid[:, w // 2 :])),
        "north_south": wasserstein_1d(slope_degrees(z[: h // 2], px, valid[: h // 2]),
                                      slope_degrees(z[h // 2 :], px, valid[h // 2 :])),
    }
    ref = float(np.mean(list(halves.values())))
    model = os.path.join(args.out or tmp, path.stem + ".safetensors")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr, JSON alone on stdout
        tr = run_traingan(GanTrainConfig(str(path), model, tile_size=args.tile, iterations=args.iterations,
                                         batch_size=args.batch, architecture=args.arch, seed=args.seed,
                                         device=args.device,
                                         report_path=os.path.join(args.out or tmp, path.stem + "_report.png")),
                          PrintFeedback(prefix=f"  [{path.stem}] ", every_s=60))
    train_s = time.perf_counter() - t0
    gen_slopes, gen_z = [], []
    t0 = time.perf_counter()
    for s in range(args.seeds):
        out = os.path.join(args.out or tmp, f"{path.stem}_generated_seed{s}.tif")
        run_generate(GenerateConfig(model, out, extent=_extent_near(path, args.gen_px, s), seed=s, device=args.device))
        g = gdal.Open(out).ReadAsArray().astype(np.float64)
        gen_slopes.append(slope_degrees(g, px))
        gen_z.append(g.ravel())
    gen_s = time.perf_counter() - t0
    if args.out:
        compare_figure(path, [os.path.join(args.out, f"{path.stem}_generated_seed{s}.tif") for s in range(2)],
                       os.path.join(args.out, f"{path.stem}_real_vs_generated.png"))
    gen = np.concatenate(gen_slopes)
    w1 = wasserstein_1d(gen, real)
    return {
        "dem": path.name, "size_px": [w, h], "pixel_m": px,
        "slope_deg_real_median": float(np.median(real)), "slope_deg_generated_median": float(np.median(gen)),
        "slope_deg_real_p90": float(np.percentile(real, 90)), "slope_deg_generated_p90": float(np.percentile(gen, 90)),
        "w1_generated_vs_real": round(w1, 3), "w1_real_halves": {k: round(v, 3) for k, v in halves.items()},
        "w1_real_vs_real_mean": round(ref, 3), "ratio": round(w1 / ref, 3), "target_ratio": 1.5,
        "meets_target": bool(w1 / ref <= 1.5),
        "elevation_w1_generated_vs_real_m": round(wasserstein_1d(np.concatenate(gen_z), z[valid]), 3),
        "train_seconds": round(train_s, 1), "generate_seconds": round(gen_s, 1),
        "generated_px": args.gen_px, "seeds": args.seeds, "training_metrics": tr.metrics,
    }


def compare_figure(dem: Path, generated: list, png: str) -> str:
    """Real DEM beside generated areas, hillshade × terrain colours on one elevation scale."""
    from osgeo import gdal

    from geoml_plugin.core.gan.report import _save_png_gdal, sample_grid, tile_to_rgb

    z, valid, _ = _real(dem)
    lo, hi = np.percentile(z[valid], 2), np.percentile(z[valid], 98)
    z = np.where(valid, z, np.median(z[valid]))
    images = [tile_to_rgb(z[None], [lo], [hi])]
    images += [tile_to_rgb(gdal.Open(g).ReadAsArray().astype(np.float64)[None], [lo], [hi]) for g in generated]
    _save_png_gdal(png, sample_grid([images], gap=8))
    return png


def _extent_near(path: Path, size_px: int, seed: int) -> tuple:
    """An area of size_px × size_px model pixels at the DEM's place, shifted per seed."""
    from geoml_plugin.core.raster.io import raster_info

    info = raster_info(str(path))
    px = info.pixel_size[0]
    x0, y0, _, _ = info.extent
    x0 += seed * size_px * px * 3  # far apart: independent samples of the field
    return (x0, y0, x0 + size_px * px, y0 + size_px * px)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--dem", action="append", help="file name(s) in --data (default: all .tif)")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--arch", default="dcgan_sn")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--gen-px", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="keep models, reports and generated rasters here")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(json.dumps({"benchmark": "terrain_gan", "skipped": f"no data at {data}"}))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    files = [data / d for d in args.dem] if args.dem else sorted(data.glob("*.tif"))
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="geoml_terrain_") as tmp:
        results = [bench_dem(f, args, tmp) for f in files]
    print(json.dumps({
        "benchmark": "terrain_gan", "architecture": args.arch, "iterations": args.iterations, "batch": args.batch,
        "tile": args.tile, "torch_threads": args.threads, "device": args.device, "results": results,
        "cpu_count": os.cpu_count(), "load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "note": "a load average above the core count means the CPU was shared with other processes (slower, "
                "same results)",
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

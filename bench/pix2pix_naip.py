#!/usr/bin/env python3
"""RGB → NIR translation on NAIP imagery (pix2pix vs a per-pixel linear fit), printed as JSON.

Spatial split of one scene (--train-year, default 2012): train on the western
60 % with ``geoml:traingan``'s core job (INPUT = bands 1–3, TARGET = band 4 of
the same raster), predict the eastern 40 % with ``geoml:generate``'s core, and
compare the NIR mean absolute error (digital numbers, valid pixels) with a
per-pixel linear regression NIR ~ R + G + B + 1 fitted on the same training
pixels. Target: MAE ≤ 0.6 × the linear baseline.

Then the same model on the eastern 40 % of other years (sensor and season
drift), with the training normalisation and with per-scene normalisation of
the input bands (each whole scene z-scored by its own statistics, GeoML's
SCENE_NORMALISATION), against the linear fit applied the same two ways.

``sharpness`` = mean gradient magnitude of the prediction / of the true NIR on
the test area (1 = as much fine texture as the real band; blurry < 1).
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
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "naip"


def _crop(src: str, dst: str, x0: int, width: int) -> str:
    from osgeo import gdal

    ds = gdal.Open(src)
    gdal.Translate(dst, ds, srcWin=[x0, 0, width, ds.RasterYSize], format="VRT")
    return dst


def _bands(path: str):
    from osgeo import gdal

    ds = gdal.Open(path)
    arr = ds.ReadAsArray().astype(np.float64)
    nd = ds.GetRasterBand(1).GetNoDataValue()
    valid = (arr != nd).all(axis=0) if nd is not None else np.ones(arr.shape[1:], bool)
    return arr, valid


def _zscore(rgb, valid, stats=None):
    m = rgb[:, valid].mean(axis=1) if stats is None else stats[0]
    s = rgb[:, valid].std(axis=1) if stats is None else stats[1]
    return (rgb - m[:, None, None]) / s[:, None, None], (m, s)


def _linear(train_rgb, train_nir, valid):
    X = np.c_[train_rgb[:, valid].T, np.ones(valid.sum())]
    coef, *_ = np.linalg.lstsq(X, train_nir[valid], rcond=None)
    return lambda rgb: np.tensordot(coef[:3], rgb, axes=1) + coef[3]


def _mae(pred, truth, valid):
    return float(np.abs(pred - truth)[valid].mean())


def _sharpness(pred, truth, valid):
    def g(a):
        gy, gx = np.gradient(a)
        return np.hypot(gx, gy)[valid].mean()

    return float(g(pred) / g(truth))


def _predict(model, src, out, scene_norm, device):
    from osgeo import gdal

    from geoml_plugin.core.gan.generate import GenerateConfig, run_generate

    run_generate(GenerateConfig(model, out, input_path=src, bands=[1, 2, 3], scene_normalisation=scene_norm,
                                device=device))
    return gdal.Open(out).ReadAsArray().astype(np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--train-year", default="2012")
    ap.add_argument("--other-years", default="2009,2010,2014,2015")
    ap.add_argument("--archs", default="pix2pix", help="comma list of pix2pix, unet_l1")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--critic-widths", help="e.g. 64,128,256 (default: GeoML's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="keep models, reports and predictions here")
    ap.add_argument("--reuse", action="store_true", help="evaluate models already in --out instead of training")
    args = ap.parse_args()
    data = Path(args.data)
    scenes = {p.stem.split("_")[1][:4]: str(p) for p in sorted(data.glob("naip_*.tif"))} if data.is_dir() else {}
    if args.train_year not in scenes:
        print(json.dumps({"benchmark": "pix2pix_naip", "skipped": f"no NAIP {args.train_year} scene in {data}"}))
        return 0
    import torch
    from osgeo import gdal

    from geoml_plugin.core.gan.train import GanTrainConfig, run_traingan
    from geoml_plugin.core.progress import PrintFeedback

    torch.set_num_threads(args.threads)
    tmp = args.out or tempfile.mkdtemp(prefix="geoml_naip_")
    os.makedirs(tmp, exist_ok=True)
    load0 = os.getloadavg()[0]
    src = scenes[args.train_year]
    width = gdal.Open(src).RasterXSize
    split = int(round(0.6 * width))
    west = _crop(src, os.path.join(tmp, "train_west.vrt"), 0, split)
    east = {y: _crop(p, os.path.join(tmp, f"test_east_{y}.vrt"), split, width - split) for y, p in scenes.items()}

    tr, tr_valid = _bands(west)
    lin = _linear(tr[:3], tr[3], tr_valid)
    tr_z, _ = _zscore(tr[:3], tr_valid)
    lin_z = _linear(tr_z, tr[3], tr_valid)
    years = [args.train_year] + [y for y in args.other_years.split(",") if y in scenes and y != args.train_year]
    full = {y: _bands(scenes[y]) for y in years}
    truth = {y: (a[:, :, split:], v[:, split:]) for y, (a, v) in full.items()}
    baseline = {}
    for y in years:
        arr, v = truth[y]
        scene_z = _zscore(full[y][0][:3], full[y][1])[0][:, :, split:]  # z-scored with the whole scene's statistics
        baseline[y] = {"linear_mae": round(_mae(lin(arr[:3]), arr[3], v), 3),
                       "linear_scene_norm_mae": round(_mae(lin_z(scene_z), arr[3], v), 3)}

    results = {}
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        model = os.path.join(tmp, f"naip_{arch}.safetensors")
        t0 = time.perf_counter()
        if args.reuse and os.path.exists(model):
            from geoml_plugin.core.modelfile import read_metadata

            res = type("Reused", (), {"metrics": {**read_metadata(model).metrics, "reused": model}})()
        else:
            with contextlib.redirect_stdout(sys.stderr):  # progress to stderr, JSON alone on stdout
                res = run_traingan(GanTrainConfig(west, model, target_path=west, bands=[1, 2, 3], target_bands=[4],
                                                  tile_size=args.tile, iterations=args.iterations,
                                                  batch_size=args.batch, architecture=arch, learning_rate=args.lr,
                                                  seed=args.seed, critic_widths=[int(w) for w in
                                                                                 args.critic_widths.split(",")]
                                                  if args.critic_widths else None, device=args.device,
                                                  report_path=os.path.join(tmp, f"naip_{arch}.png")),
                                   PrintFeedback(prefix=f"  [{arch}] ", every_s=60))
        train_s = time.perf_counter() - t0
        per_year = {}
        for y in years:
            arr, v = truth[y]
            row = {}
            for norm in (False, True):
                # per-scene normalisation: the whole scene's statistics, then the test columns
                src_y = scenes[y] if norm else east[y]
                pred = _predict(model, src_y, os.path.join(tmp, f"pred_{arch}_{y}_{int(norm)}.tif"), norm,
                                args.device)
                pred = pred[:, split:] if norm else pred
                key = "scene_norm" if norm else "train_norm"
                mae = _mae(pred, arr[3], v)
                base = baseline[y]["linear_scene_norm_mae" if norm else "linear_mae"]
                row[key] = {"mae": round(mae, 3), "ratio_to_linear": round(mae / base, 3),
                            "sharpness": round(_sharpness(pred, arr[3], v), 3)}
            per_year[y] = row
        spatial = per_year[args.train_year]["train_norm"]
        results[arch] = {"train_seconds": round(train_s, 1), "training_metrics": res.metrics,
                         "spatial_split": spatial, "meets_target": bool(spatial["ratio_to_linear"] <= 0.6),
                         "years": per_year}
    print(json.dumps({
        "benchmark": "pix2pix_naip", "train_scene": os.path.basename(src), "train_columns": [0, split],
        "test_columns": [split, width], "iterations": args.iterations, "batch": args.batch, "tile": args.tile,
        "torch_threads": args.threads, "device": args.device, "linear_baseline": baseline, "models": results,
        "target_ratio": 0.6, "cpu_count": os.cpu_count(),
        "load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Pixel regression on real NAIP imagery: RGB → NIR with ``geoml:finetune TASK=regression`` defaults.

One year's scene (``--year``, default 2012; ``../shared/data/naip``) is split with ``gdal_translate -srcwin``
into temporary files (never into the repository): the western ``--train-fraction`` (default 60 %, as
``pix2pix_naip.py``) and the eastern rest, each as an RGB raster (bands 1–3) and a NIR target raster (band 4).
It trains through the real ``run_finetune`` (INPUT = western RGB, LABELS = western NIR; the automatic
training budget unless ``--epochs``), maps the eastern RGB with the real ``run_predict`` and scores the *map*:
NIR mean absolute error in digital numbers over valid pixels, against a per-pixel linear fit
NIR ~ R + G + B + 1 (least squares on the western pixels) applied to the eastern ones; also training and
prediction seconds. Prints one JSON object. For the U-Net trained with L1 alone by ``geoml:traingan`` on the
same split see ``pix2pix_naip.py`` (README, Benchmarks).

``--threads`` sets torch's threads (and OMP_NUM_THREADS for this process).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def split(src: str, folder: str, fraction: float) -> dict:
    """{west_rgb, west_nir, east_rgb, east_nir}: GeoTIFFs cut from ``src`` (``gdal_translate -srcwin``)."""
    from osgeo import gdal

    ds = gdal.Open(src)
    w, h = ds.RasterXSize, ds.RasterYSize
    cut = int(round(w * fraction))
    out = {}
    for side, x0, width in (("west", 0, cut), ("east", cut, w - cut)):
        for what, bands in (("rgb", [1, 2, 3]), ("nir", [4])):
            path = os.path.join(folder, f"{side}_{what}.tif")
            gdal.Translate(path, ds, srcWin=[x0, 0, width, h], bandList=bands, noData=0)
            out[f"{side}_{what}"] = path
    return out


def read(path: str):
    import numpy as np
    from osgeo import gdal

    ds = gdal.Open(path)
    arr = ds.ReadAsArray().astype(np.float64)
    return arr if arr.ndim == 3 else arr[None]


def linear_fit_mae(parts: dict) -> tuple:
    """MAE on the east of the per-pixel least-squares fit on the west, and the valid-pixel mask of the east."""
    import numpy as np

    def valid_of(rgb, nir):
        return (rgb > 0).all(axis=0) & (nir[0] > 0)

    wr, wn = read(parts["west_rgb"]), read(parts["west_nir"])
    er, en = read(parts["east_rgb"]), read(parts["east_nir"])
    vw, ve = valid_of(wr, wn), valid_of(er, en)
    a = np.c_[wr[:, vw].T, np.ones(vw.sum())]
    coef = np.linalg.lstsq(a, wn[0][vw], rcond=None)[0]
    pred = np.tensordot(coef[:3], er, axes=1) + coef[3]
    return float(np.abs(pred - en[0])[ve].mean()), ve, en[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "naip"))
    ap.add_argument("--year", default="2012")
    ap.add_argument("--train-fraction", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=0, help="0 = GeoML's default (the training budget)")
    ap.add_argument("--verbose", action="store_true", help="the training log on stderr")
    ap.add_argument("--backbone", default="", help="the U-Net's encoder (default: GeoML's)")
    ap.add_argument("--weights", default="none", help="starting weights: none (GeoML's default), a cached catalogue "
                    "entry, or a GeoML model file with the same backbone and 3 bands (e.g. from bench/imagenet_start.py)")
    args = ap.parse_args()
    scenes = sorted(Path(args.data).glob(f"naip_{args.year}*.tif")) if os.path.isdir(args.data) else []
    if not scenes:
        print(json.dumps({"benchmark": "regression_naip", "skipped": f"no NAIP {args.year} scene in {args.data}"}))
        return 0
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch

    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.predict import PredictConfig, run_predict
    from geoml_plugin.core.progress import Feedback

    torch.set_num_threads(args.threads)
    log: list = []
    with tempfile.TemporaryDirectory(prefix="geoml_naip_reg_") as folder:
        parts = split(str(scenes[0]), folder, args.train_fraction)
        linear_mae, valid, truth = linear_fit_mae(parts)
        model = os.path.join(folder, "rgb2nir.safetensors")
        cfg = FinetuneConfig(input_path=parts["west_rgb"], labels=parts["west_nir"], output_model=model,
                             task="regression", seed=args.seed, device="cpu", epochs=args.epochs)
        if args.backbone:
            cfg.backbone = args.backbone
        if args.weights != "none":
            cfg.weights = args.weights
        res = run_finetune(cfg, Feedback(on_log=log.append))
        out = os.path.join(folder, "nir.tif")
        t0 = time.perf_counter()
        run_predict(PredictConfig(input_path=parts["east_rgb"], model_path=model, output_path=out, device="cpu"))
        predict_s = time.perf_counter() - t0
        pred = read(out)[0]
        ok = valid & np.isfinite(pred)
        mae = float(np.abs(pred - truth)[ok].mean())
    if args.verbose:
        print("\n".join(log), file=sys.stderr)
    print(json.dumps({
        "benchmark": "regression_naip", "scene": scenes[0].name, "train_fraction": args.train_fraction,
        "threads": args.threads, "torch": torch.__version__, "load_average": list(os.getloadavg()),
        "backbone": args.backbone or "default", "weights": os.path.basename(args.weights),
        "nir_mae_dn": round(mae, 2), "linear_fit_mae_dn": round(linear_mae, 2),
        "ratio_to_linear": round(mae / linear_mae, 3), "pixels_scored": int(ok.sum()),
        "train_seconds": res.train_seconds, "finetune_seconds": res.seconds, "predict_seconds": round(predict_s, 2),
        "epochs": res.epochs, "train_patches": res.n_train, "samples_per_second": res.samples_per_second,
        "budget": [m for m in log if m.startswith("Training budget")],
        "validation": {k: res.metrics.get(k) for k in ("rmse", "mae", "r2")},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

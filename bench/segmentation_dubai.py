#!/usr/bin/env python3
"""Segmentation on real aerial imagery: train on one Dubai part, map another, score the *map*.

Data: ``../shared/data/segmentation/dubai`` (``tileT_partNNN.tif`` RGB and ``tileT_partNNN_labels.tif``,
classes 1 building, 2 land, 3 road, 4 vegetation, 5 water, 0 = unlabelled; see shared/README.md).

For each pair (train part → map part), same tile and across tiles, it trains with GeoML's defaults through
the real ``run_finetune`` (TASK=segmentation, the label raster as LABELS; only the input, labels and output
given, plus ``--epochs`` / ``--patch-size`` when asked), then maps the other part with the real
``run_predict`` (default settings, ``--views`` test-time views) and scores the class raster it wrote against
that part's labels: pixel accuracy, per-class IoU and mean IoU (over the classes present in the truth or the
map), training seconds (``FinetuneResult.train_seconds``: the steps; ``seconds``: the whole job) and
prediction seconds. Prints one JSON object with every pair and the means.

Goal (issue 22): mean IoU ≥ 0.55 and pixel accuracy ≥ 0.80 on average over the pairs, no class at IoU 0,
with training inside the CPU budget (a fully labelled 4 MP image in ≤ 10 min on 2 cores).

``--threads`` sets torch's threads (and OMP_NUM_THREADS for this process): the figures in the README say
which count and machine load they were measured with.

Levers measured at the budget (loss weights, Dice, more epochs, test-time views, learning rate), with the
figures: docs/segmentation-budget.md. ``--views 1,4`` maps each pair with 1 and with 4 views from one training.
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

CLASSES = ["building", "land", "road", "vegetation", "water"]  # label values 1..5
# (train part, map part): three within a tile, two across tiles; every part holds all five classes
DEFAULT_PAIRS = ("tile1_part008:tile1_part009,tile2_part007:tile2_part006,tile3_part008:tile3_part002,"
                 "tile1_part006:tile3_part006,tile3_part003:tile2_part008")


def read_band(path: str):
    from osgeo import gdal

    ds = gdal.Open(path)
    return ds.GetRasterBand(1).ReadAsArray()


def score_map(map_path: str, labels_path: str, model_classes: list) -> dict:
    """Pixel accuracy, per-class IoU and mean IoU of a class map against a label raster (values 1..5).

    ``model_classes``: (map value, class name) of the model; names are matched to the label raster's codes.
    IoU is None for a class absent from both truth and map; the mean is over the others."""
    import numpy as np

    truth = read_band(labels_path).astype(np.int64)
    pred_raw = read_band(map_path).astype(np.int64)
    lut = np.zeros(max([v for v, _ in model_classes] + [0]) + 1, np.int64)
    for value, name in model_classes:
        n = str(name).lower()
        lut[value] = CLASSES.index(n) + 1 if n in CLASSES else int(name)
    pred = lut[np.clip(pred_raw, 0, len(lut) - 1)]
    ok = truth > 0
    t, p = truth[ok], pred[ok]
    out = {"pixels": int(ok.sum()), "pixel_accuracy": round(float((t == p).mean()), 4), "iou": {}}
    ious = []
    for code, name in enumerate(CLASSES, start=1):
        inter = int(((t == code) & (p == code)).sum())
        union = int(((t == code) | (p == code)).sum())
        iou = None if union == 0 else inter / union
        out["iou"][name] = None if iou is None else round(iou, 4)
        if iou is not None:
            ious.append(iou)
    out["mean_iou"] = round(float(np.mean(ious)), 4)
    return out


def run_pair(data: str, train: str, test: str, folder: str, args) -> dict:
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.predict import PredictConfig, run_predict
    from geoml_plugin.core.progress import Feedback

    log = []
    fb = Feedback(on_log=log.append)
    model = os.path.join(folder, f"{train}_seed{args.seed}.safetensors")
    cfg = FinetuneConfig(input_path=os.path.join(data, f"{train}.tif"),
                         labels=os.path.join(data, f"{train}_labels.tif"), output_model=model,
                         task="segmentation", seed=args.seed, device="cpu")
    if args.epochs:
        cfg.epochs = args.epochs
    if args.patch_size:
        cfg.patch_size = args.patch_size
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if args.max_samples:
        cfg.max_raster_samples = args.max_samples
    if args.backbone:
        cfg.backbone = args.backbone
    if args.learning_rate:
        cfg.learning_rate = args.learning_rate
    if args.freeze_backbone:
        cfg.freeze_backbone = True
    if args.weights != "none":
        cfg.weights = args.weights
    res = run_finetune(cfg, fb)
    if args.verbose:
        print("\n".join(log), file=sys.stderr)
    out = {"train": train, "map": test}
    for i, views in enumerate(args.views):
        out_map = os.path.join(folder, f"{train}_seed{args.seed}_on_{test}_{views}.tif")
        t0 = time.perf_counter()
        run_predict(PredictConfig(input_path=os.path.join(data, f"{test}.tif"), model_path=model,
                                  output_path=out_map, device="cpu", views=views))
        predict_s = time.perf_counter() - t0
        scores = score_map(out_map, os.path.join(data, f"{test}_labels.tif"),
                           [(c.value, c.name) for c in res.meta.classes])
        scores["predict_seconds"] = round(predict_s, 2)
        if i == 0:
            out.update(scores)
        else:
            out[f"views_{views}"] = scores
    return {**out, "train_seconds": res.train_seconds, "finetune_seconds": res.seconds, "epochs": res.epochs,
            "train_patches": res.n_train, "samples_per_second": res.samples_per_second,
            "budget": next((m for m in log if m.startswith("Training budget")), "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "segmentation" / "dubai"))
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated train:map part names")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=0, help="0 = GeoML's default (the training budget)")
    ap.add_argument("--patch-size", type=int, default=0, help="0 = GeoML's default")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = GeoML's default")
    ap.add_argument("--max-samples", type=int, default=0, help="patches sampled from the label raster at most "
                    "(MAX_SAMPLES); 0 = GeoML's default")
    ap.add_argument("--views", default="1", help="test-time views of the prediction (1, 2, 4, 8); a comma "
                    "list maps each pair once per count (the first is the headline, the others 'views_N')")
    ap.add_argument("--verbose", action="store_true", help="the training log on stderr")
    ap.add_argument("--backbone", default="", help="the U-Net's encoder (default: GeoML's)")
    ap.add_argument("--learning-rate", type=float, default=0.0, help="0 = GeoML's default (automatic)")
    ap.add_argument("--freeze-backbone", action="store_true", help="train the decoder only (pretrained encoder)")
    ap.add_argument("--keep-models", default="", help="a folder to keep the trained model files and maps in "
                    "(default: a temporary folder, removed at the end)")
    ap.add_argument("--weights", default="none", help="starting weights: none (GeoML's default), a catalogue entry "
                    "that is cached, or a GeoML model file with the same backbone (e.g. from bench/imagenet_start.py)")
    args = ap.parse_args()
    args.views = [int(v) for v in str(args.views).split(",") if v]
    if not os.path.isdir(args.data):
        print(json.dumps({"benchmark": "segmentation_dubai", "skipped": f"Dubai data not found in {args.data}"}))
        return 0
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    pairs = [p.split(":") for p in args.pairs.split(",") if p]
    results = []
    with tempfile.TemporaryDirectory(prefix="geoml_dubai_") as tmp:
        folder = args.keep_models or tmp
        os.makedirs(folder, exist_ok=True)
        for train, test in pairs:
            results.append(run_pair(args.data, train, test, folder, args))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    per_class = {n: [r["iou"][n] for r in results if r["iou"][n] is not None] for n in CLASSES}
    summary = {
        "pixel_accuracy": round(float(np.mean([r["pixel_accuracy"] for r in results])), 4),
        "mean_iou": round(float(np.mean([r["mean_iou"] for r in results])), 4),
        "iou_per_class": {n: round(float(np.mean(v)), 4) if v else None for n, v in per_class.items()},
        "min_class_iou": min(v for r in results for v in r["iou"].values() if v is not None),
        "train_seconds": round(sum(r["train_seconds"] for r in results), 1),
        "predict_seconds": round(sum(r["predict_seconds"] for r in results), 1),
    }
    for views in args.views[1:]:
        rs = [r[f"views_{views}"] for r in results]
        summary[f"views_{views}"] = {"pixel_accuracy": round(float(np.mean([r["pixel_accuracy"] for r in rs])), 4),
                                     "mean_iou": round(float(np.mean([r["mean_iou"] for r in rs])), 4)}
    summary["goal_met"] = bool(summary["mean_iou"] >= 0.55 and summary["pixel_accuracy"] >= 0.80
                               and summary["min_class_iou"] > 0)
    print(json.dumps({"benchmark": "segmentation_dubai", "threads": args.threads, "torch": torch.__version__,
                      "load_average": list(os.getloadavg()), "epochs": args.epochs or "default",
                      "patch_size": args.patch_size or "default",
                      "batch_size": args.batch_size or "default", "max_samples": args.max_samples or "default", "views": args.views,
                      "backbone": args.backbone or "default", "weights": os.path.basename(args.weights),
                      "freeze_backbone": args.freeze_backbone, "learning_rate": args.learning_rate or "automatic",
                      "pairs": results,
                      "mean": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

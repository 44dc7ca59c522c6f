#!/usr/bin/env python3
"""Prediction-time levers for the Dubai maps, scored on models already trained by ``segmentation_dubai.py``.

Run ``bench/segmentation_dubai.py --keep-models DIR`` first (once per seed): DIR then holds each pair's model
(``<train>_seed<S>.safetensors``) and the map the real ``run_predict`` wrote (``<train>_seed<S>_on_<map>_1.tif``).
This script scores, per pair and seed, against the mapped part's labels (pixel accuracy, mean IoU, lowest class):

* ``sieve<N>``: GDAL's sieve (8-connected; what ``PredictConfig.min_region`` = N does) applied to the real map;
* on one pass of the network over the whole part (the real job maps it tile by tile; ``whole_image`` is that pass
  unchanged, to show how close the two are): class probabilities smoothed over a box or Gaussian before the
  argmax (``box<r>``, ``gauss<s>``), 8 test-time views, the part at other scales alone and averaged with scale 1
  (``scale<f>``, ``multiscale_...``), and the class prior corrected from the training patches' mix to the
  training raster's (``prior<tau>``: log-probabilities + tau × log(raster prior / patch prior); the patch prior
  is re-estimated from 400 random patch centres per class, as the label raster is sampled).

Prints one JSON object: every variant's mean over the pairs per seed, and the mean of the seeds.
Figures: docs/segmentation-budget.md (session 24).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from segmentation_dubai import CLASSES, DEFAULT_PAIRS  # noqa: E402


def score(pred, truth) -> tuple:
    import numpy as np

    ok = truth > 0
    t, p = truth[ok], pred[ok]
    ious = []
    for code in range(1, len(CLASSES) + 1):
        union = ((t == code) | (p == code)).sum()
        if union:
            ious.append(((t == code) & (p == code)).sum() / union)
    return float((t == p).mean()), float(np.mean(ious)), float(min(ious))


def read(path: str):
    from osgeo import gdal

    return gdal.Open(path).ReadAsArray()


def sieved(path: str, threshold: int):
    from osgeo import gdal

    ds = gdal.GetDriverByName("MEM").CreateCopy("", gdal.Open(path))
    band = ds.GetRasterBand(1)
    gdal.SieveFilter(band, band.GetMaskBand(), band, threshold, 8)
    return band.ReadAsArray()


def probabilities(model, meta, img, views: int = 1, scale: float = 1.0):
    """Class probabilities (K, H, W) of one pass over the whole image (reflect-padded to the network's 32 px)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from geoml_plugin.core.predict import predict_views

    mean = np.asarray(meta.norm_mean, np.float32)[:, None, None]
    std = np.asarray(meta.norm_std, np.float32)[:, None, None]
    x = torch.from_numpy(((img - mean) / std)[None].astype(np.float32))
    H, W = x.shape[-2:]
    if scale != 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode="reflect")
    with torch.inference_mode():
        p = torch.softmax(predict_views(model, x, views, True)[..., :h, :w], 1)
        if scale != 1.0:
            p = F.interpolate(p, size=(H, W), mode="bilinear", align_corners=False)
    return p[0]


def smooth(p, radius: int = 0, sigma: float = 0.0):
    import torch
    import torch.nn.functional as F

    if radius:
        return F.avg_pool2d(F.pad(p[None], (radius,) * 4, mode="replicate"), 2 * radius + 1, 1)[0]
    r = int(3 * sigma)
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma * sigma))
    g = g / g.sum()
    k = p.shape[0]
    q = F.pad(p[None], (r,) * 4, mode="replicate")
    q = F.conv2d(q, g.view(1, 1, 1, -1).repeat(k, 1, 1, 1), groups=k)
    return F.conv2d(q, g.view(1, 1, -1, 1).repeat(k, 1, 1, 1), groups=k)[0]


def priors(labels, patch: int = 96, per_class: int = 400):
    """(the raster's class shares, the shares in patches centred on random pixels of each class)."""
    import numpy as np

    k = len(CLASSES)
    raster = np.array([(labels == c).sum() for c in range(1, k + 1)], float)
    hist = np.zeros(k)
    rng = np.random.default_rng(0)
    for c in range(1, k + 1):
        ys, xs = np.nonzero(labels == c)
        for i in rng.choice(len(ys), min(per_class, len(ys)), replace=False):
            y0, x0 = max(0, ys[i] - patch // 2), max(0, xs[i] - patch // 2)
            hist += np.bincount(labels[y0:y0 + patch, x0:x0 + patch].ravel(), minlength=k + 1)[1:]
    return raster / raster.sum(), hist / hist.sum()


def variants(model, meta, img, train_labels) -> dict:
    import numpy as np
    import torch

    p1 = probabilities(model, meta, img)
    out = {"whole_image": p1, "views_8": probabilities(model, meta, img, views=8)}
    for r in (2, 4, 8, 16):
        out[f"box{r}"] = smooth(p1, radius=r)
    for s in (2, 4, 8):
        out[f"gauss{s}"] = smooth(p1, sigma=s)
    for f in (0.5, 0.75, 1.5):
        out[f"scale{f}"] = probabilities(model, meta, img, scale=f)
    out["multiscale_0.5_1"] = (p1 + out["scale0.5"]) / 2
    out["multiscale_0.75_1"] = (p1 + out["scale0.75"]) / 2
    out["multiscale_0.5_0.75_1"] = (p1 + out["scale0.5"] + out["scale0.75"]) / 3
    raster, patches = priors(train_labels)
    order = [CLASSES.index(c.name.lower()) for c in meta.classes]
    shift = torch.tensor(np.log(raster[order] + 1e-6) - np.log(patches[order] + 1e-6), dtype=torch.float32)
    logp = torch.log(p1.clamp_min(1e-12))
    for tau in (0.5, 1.0):
        out[f"prior{tau}"] = logp + tau * shift[:, None, None]  # argmax only: need not be normalised
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="the --keep-models folder of segmentation_dubai.py")
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "segmentation" / "dubai"))
    ap.add_argument("--pairs", default=DEFAULT_PAIRS)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sieve-only", action="store_true", help="only the sieve of the real maps (no network pass)")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        print(json.dumps({"benchmark": "segmentation_postprocess", "skipped": f"Dubai data not found in {args.data}"}))
        return 0
    import numpy as np
    import torch

    from geoml_plugin.core.modelfile import load_model

    torch.set_num_threads(args.threads)
    scores: dict = {}
    for pair in [p.split(":") for p in args.pairs.split(",") if p]:
        train, test = pair
        truth = read(os.path.join(args.data, f"{test}_labels.tif")).astype(np.int64)
        img = None
        for seed in args.seeds.split(","):
            real = os.path.join(args.models, f"{train}_seed{seed}_on_{test}_1.tif")
            found = {"real_map": read(real).astype(np.int64)}
            for n in (16, 64, 256, 1024):
                found[f"sieve{n}"] = sieved(real, n).astype(np.int64)
            if not args.sieve_only:
                if img is None:
                    img = read(os.path.join(args.data, f"{test}.tif")).astype(np.float32)
                model, meta = load_model(os.path.join(args.models, f"{train}_seed{seed}.safetensors"), "cpu")
                lut = np.array([CLASSES.index(c.name.lower()) + 1 for c in meta.classes])
                train_labels = read(os.path.join(args.data, f"{train}_labels.tif")).astype(np.int64)
                for name, p in variants(model.eval(), meta, img, train_labels).items():
                    found[name] = lut[p.argmax(0).numpy()]
            for name, cls in found.items():
                scores.setdefault(name, {}).setdefault(seed, []).append(score(cls, truth))
            print(json.dumps({"train": train, "map": test, "seed": seed,
                              **{k: [round(v, 4) for v in s[seed][-1]] for k, s in scores.items()}}),
                  file=sys.stderr, flush=True)
    summary = {}
    for name, per_seed in scores.items():
        means = {s: [float(np.mean([r[i] for r in rs])) for i in (0, 1)] for s, rs in per_seed.items()}
        summary[name] = {"per_seed": {s: [round(v, 4) for v in m] for s, m in means.items()},
                         "pixel_accuracy": round(float(np.mean([m[0] for m in means.values()])), 4),
                         "mean_iou": round(float(np.mean([m[1] for m in means.values()])), 4),
                         "min_class_iou": round(min(r[2] for rs in per_seed.values() for r in rs), 4)}
    print(json.dumps({"benchmark": "segmentation_postprocess", "models": args.models, "seeds": args.seeds,
                      "variants": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

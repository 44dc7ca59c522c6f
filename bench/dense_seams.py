#!/usr/bin/env python3
"""How close tiled dense prediction is to one pass over the whole raster.

A seeded synthetic scene (``sampledata.make_sample_scene``) and two small
U-Nets (``unet`` on ``small_resnet``, 32-px patches) fine-tuned on it for a few
seeded epochs: a segmentation model (land cover) and a pixel-regression model
(canopy height). Each stitching option tiles the scene in memory (tiles read
past the raster edge as nodata, normalised to 0; ``geoml:predict`` cuts its
last tiles at the edge instead), with tiles
of 4 patches (the former default) or 8 (today's), and is compared with one
forward pass over the whole raster:

* ``changed_pct``: percent of valid pixels whose class differs, overall,
  ``inside`` tiles and ``near_seams`` (within 4 px of a line where one tile's
  output hands over to the next);
* ``prob_mad``: mean absolute difference of the class probabilities;
  ``value_mad``: of the regression values (target units, metres);
* ``compute``: model pixels computed per output pixel on this scene, and
  ``compute_asymptotic`` (tile² ÷ step², a large raster).

Options: ``crop`` keeps each tile's centre (the overlap is cropped), ``blend``
weights overlapping tiles by a linear or cosine ramp across the overlap and
normalises; ``aligned`` places tile origins on multiples of the network's
total downsampling (16 px here), as one pass over the raster sees them.
``--engine predict`` runs the real ``predict_raster`` (its defaults and
options) instead of the in-memory simulation.

    python bench/dense_seams.py [--size 256] [--epochs 3] [--engine sim|predict]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

PATCH = 32
EDGE = 16  # px from the raster edge: reported apart (one pass and tiles pad the edge differently)


def train(scene, folder: str, task: str, epochs: int):
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune

    labels = scene.landcover if task == "segmentation" else scene.canopy_height
    cfg = FinetuneConfig(scene.image, labels, "", os.path.join(folder, f"{task}.safetensors"), task=task,
                         patch_size=PATCH, epochs=epochs, batch_size=16, max_raster_samples=300, device="cpu",
                         seed=0)
    res = run_finetune(cfg)
    return res.model.eval(), res.meta, res.model_path


def full_input(scene, meta):
    from geoml_plugin.core.raster.io import RasterReader

    with RasterReader(scene.image) as r:
        data, valid = r.read(0, 0, r.info.width, r.info.height)
    mean = np.asarray(meta.norm_mean, np.float32)[:, None, None]
    std = np.asarray(meta.norm_std, np.float32)[:, None, None]
    x = (data.astype(np.float32) - mean) / std
    x[:, ~valid] = 0.0
    return x, valid


def outputs(model, meta, x):
    """Probabilities (classifier) or values in target units, (K, h, w) per input (B, C, h, w)."""
    import torch

    with torch.inference_mode():
        y = model(torch.from_numpy(np.ascontiguousarray(x))).float()
    if meta.is_classifier:
        return torch.softmax(y, dim=1).numpy()
    t = meta.target
    return y.numpy() * float(np.ravel(t.get("std", 1.0))[0]) + float(np.ravel(t.get("mean", 0.0))[0])


def ramp(tile: int, overlap: int, kind: str) -> np.ndarray:
    """1-D weights across a tile: rise over the first 2·overlap px, fall over the last (partition of unity)."""
    i = np.arange(tile, dtype=np.float64)
    d = np.minimum(i, tile - 1 - i)
    if kind == "crop":
        return (d >= overlap).astype(np.float64)
    u = np.clip((d + 0.5) / (2 * overlap), 0.0, 1.0)
    return u if kind == "linear" else np.sin(0.5 * np.pi * u) ** 2


def simulate(model, meta, x, tile: int, overlap: int, kind: str, phase: int = 0):
    """Tiled prediction in memory: tiles every ``tile - 2·overlap`` px starting at ``phase - overlap``."""
    c, h, w = x.shape
    step = tile - 2 * overlap
    starts = [[s for s in range(phase - overlap, n, step) if s + tile > 0 and s + overlap < n] for n in (h, w)]
    pad = tile + step
    xp = np.zeros((c, h + 2 * pad, w + 2 * pad), np.float32)
    xp[:, pad : pad + h, pad : pad + w] = x
    w1 = ramp(tile, overlap, kind)
    acc, wsum = None, np.zeros((h + 2 * pad, w + 2 * pad))
    reads = []
    for ry in starts[0]:
        for rx in starts[1]:
            reads.append((ry, rx))
    for i in range(0, len(reads), 8):
        chunk = reads[i : i + 8]
        batch = np.stack([xp[:, pad + ry : pad + ry + tile, pad + rx : pad + rx + tile] for ry, rx in chunk])
        out = outputs(model, meta, batch)
        if acc is None:
            acc = np.zeros((out.shape[1],) + wsum.shape)
        for (ry, rx), o in zip(chunk, out):
            wy, wx = w1.copy(), w1.copy()
            if ry + overlap <= 0:  # a side that faces outside the raster keeps its full weight
                wy[: tile // 2] = 1.0
            if ry + tile - overlap >= h:
                wy[tile // 2 :] = 1.0
            if rx + overlap <= 0:
                wx[: tile // 2] = 1.0
            if rx + tile - overlap >= w:
                wx[tile // 2 :] = 1.0
            wt = wy[:, None] * wx[None]
            sl = (slice(pad + ry, pad + ry + tile), slice(pad + rx, pad + rx + tile))
            acc[(slice(None),) + sl] += o * wt
            wsum[sl] += wt
    inner = (slice(pad, pad + h), slice(pad, pad + w))
    res = acc[(slice(None),) + inner] / wsum[inner]
    seam = np.zeros((h, w), bool)
    for ax, st in enumerate(starts):
        for s in st[1:]:
            b = s + overlap  # where the previous tile's core ends
            lo, hi = max(0, b - 4), min((h, w)[ax], b + 4)
            if lo < hi:
                if ax == 0:
                    seam[lo:hi] = True
                else:
                    seam[:, lo:hi] = True
    compute = len(reads) * tile * tile / (h * w)
    return res, seam, compute


def compare(meta, ref, res, valid, seam) -> dict:
    out = {}
    edge = np.ones(valid.shape, bool)
    edge[EDGE:-EDGE, EDGE:-EDGE] = False
    seam = seam & ~edge
    if meta.is_classifier:
        diff = ref.argmax(0) != res.argmax(0)
        out["changed_pct"] = {
            "all": round(100 * diff[valid].mean(), 3),
            "inside": round(100 * diff[valid & ~seam].mean(), 3),
            "near_seams": round(100 * diff[valid & seam].mean(), 3),
            "raster_edge": round(100 * diff[valid & edge].mean(), 3),
        }
        out["changed_pct"]["inside"] = round(100 * diff[valid & ~seam & ~edge].mean(), 3)
        out["prob_mad"] = float(f"{np.abs(ref - res)[:, valid].mean():.2e}")
        out["conf_mad"] = float(f"{np.abs(ref.max(0) - res.max(0))[valid].mean():.2e}")
    else:
        d = np.abs(ref - res)[:, valid]
        out["value_mad"] = float(f"{d.mean():.2e}")
        out["value_mad_inside"] = float(f"{np.abs(ref - res)[:, valid & ~seam & ~edge].mean():.2e}")
        out["value_mad_near_seams"] = float(f"{np.abs(ref - res)[:, valid & seam].mean():.2e}")
        out["value_mad_raster_edge"] = float(f"{np.abs(ref - res)[:, valid & edge].mean():.2e}")
        out["value_max_abs"] = round(float(d.max()), 4)
    return out


def sim_options(multiple: int):
    P = PATCH
    opts = [
        ("a_crop_4p_tile_p/4_overlap", dict(tile=4 * P, overlap=P // 4, kind="crop")),
        ("a_crop_4p_tile_p/4_overlap_aligned", dict(tile=4 * P, overlap=P // 4, kind="crop", align=multiple)),
        ("b_crop_4p_tile_p/2_overlap", dict(tile=4 * P, overlap=P // 2, kind="crop")),
        ("b_crop_4p_tile_p_overlap", dict(tile=4 * P, overlap=P, kind="crop")),
        ("c_blend_linear_4p_tile_p/4_overlap", dict(tile=4 * P, overlap=P // 4, kind="linear")),
        ("c_blend_cosine_4p_tile_p/4_overlap", dict(tile=4 * P, overlap=P // 4, kind="cosine")),
        ("c_blend_cosine_4p_tile_p/4_overlap_aligned", dict(tile=4 * P, overlap=P // 4, kind="cosine",
                                                            align=multiple)),
        ("c_blend_linear_4p_tile_p/2_overlap", dict(tile=4 * P, overlap=P // 2, kind="linear")),
        ("d_crop_8p_tile_p/2_overlap_aligned", dict(tile=8 * P, overlap=P // 2, kind="crop", align=multiple)),
        ("d_blend_cosine_8p_tile_p/2_overlap_aligned", dict(tile=8 * P, overlap=P // 2, kind="cosine",
                                                            align=multiple)),
        ("d_crop_8p_tile_p_overlap_aligned", dict(tile=8 * P, overlap=P, kind="crop", align=multiple)),
    ]
    return opts


def run_sim(models, scene, size) -> dict:
    report = {}
    for task, (model, meta, _) in models.items():
        x, valid = full_input(scene, meta)
        ref = outputs(model, meta, x[None])[0]
        m = int(getattr(model, "multiple", 1))
        rows = {}
        for name, o in sim_options(m):
            t0 = time.perf_counter()
            al = o.get("align", 1)
            phase = -(-o["overlap"] // al) * al - o["overlap"]  # first read at -ceil(overlap / align) · align
            res, seam, comp = simulate(model, meta, x, o["tile"], o["overlap"], o["kind"], -phase)
            step = o["tile"] - 2 * o["overlap"]
            rows[name] = {"tile": o["tile"], "overlap": o["overlap"], "step": step, "align": o.get("align", 1), **compare(meta, ref, res, valid, seam),
                          "compute": round(comp, 3), "compute_asymptotic": round(o["tile"] ** 2 / step**2, 3),
                          "seconds": round(time.perf_counter() - t0, 2)}
        report[task] = rows
    return report


def run_predict(models, scene, folder, options) -> dict:
    from osgeo import gdal

    from geoml_plugin.core.predict import PredictConfig, predict_raster

    report = {}
    for task, (model, meta, path) in models.items():
        x, valid = full_input(scene, meta)
        ref = outputs(model, meta, x[None])[0]
        rows = {}
        for name, kw in options:
            out = os.path.join(folder, f"{task}-{name}.tif")
            conf = os.path.join(folder, f"{task}-{name}-conf.tif") if meta.is_classifier else None
            t0 = time.perf_counter()
            res = predict_raster(model, meta, PredictConfig(scene.image, path, out, conf, device="cpu", batch_size=8,
                                                            **kw))
            secs = time.perf_counter() - t0
            arr = gdal.Open(out).ReadAsArray().astype(np.float64)
            row = {"tiles": res.tiles, "seconds": round(secs, 2), **kw}
            if meta.is_classifier:
                lut = np.asarray([c.value for c in meta.classes])
                diff = lut[ref.argmax(0)] != arr
                row["changed_pct"] = round(100 * diff[valid].mean(), 3)
                c = gdal.Open(conf).ReadAsArray()
                row["conf_mad"] = float(f"{np.abs(ref.max(0) - c)[valid].mean():.2e}")
            else:
                row["value_mad"] = float(f"{np.abs(ref[0] - arr)[valid].mean():.2e}")
            rows[name] = row
        report[task] = rows
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engine", choices=("sim", "predict"), default="sim")
    ap.add_argument("--predict-options", default="", help="JSON list of [name, PredictConfig kwargs]")
    args = ap.parse_args()
    import torch

    from geoml_plugin.core.sampledata import make_sample_scene

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        scene = make_sample_scene(os.path.join(d, "scene"), size=args.size, seed=0)
        t0 = time.perf_counter()
        models = {task: train(scene, d, task, args.epochs) for task in ("segmentation", "regression")}
        report = {"scene_px": args.size, "patch": PATCH, "model": "unet/small_resnet", "epochs": args.epochs,
                  "train_s": round(time.perf_counter() - t0, 1), "threads": args.threads}
        if args.engine == "sim":
            report["options"] = run_sim(models, scene, args.size)
        else:
            opts = json.loads(args.predict_options) if args.predict_options else [["default", {}]]
            report["options"] = run_predict(models, scene, d, opts)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fine-tuning benchmark on real EuroSAT RGB chips (``../shared/data/eurosat``).

Splits the chip-centre points 80/20 per class, trains with GeoML's *defaults*
(only INPUT, LABELS, LABEL_FIELD and OUTPUT_MODEL given) on the 80 %, loads
the saved model file and measures overall accuracy on the held-out 20 %.
A bare PyTorch loop (same network, batch size, optimiser and channels-last
memory layout, on preloaded tensors, no augmentation, no validation, no progress) is timed just before
and just after training — on a shared machine the load drifts — and its mean
is compared with GeoML's training-step throughput. Prints one JSON object.

It then makes the map a user gets — ``run_predict`` on the whole 2560² mosaic with the model file, default
settings — and scores that map (``map_scores.py``): at the held-out chip centres, and pixel by pixel over
the held-out chips against ``eurosat_rgb_train_labels.tif``; the same with the raster cropped by k px in x
and y (k = 0, stride/4, stride/2), which moves the window lattice relative to the chips. Note that the
held-out chips lie in the raster the model was trained on (their neighbours were training chips); they
themselves were never trained on.

Targets (CPU): ≥ 90 % overall accuracy from scratch, training ≤ 15 min,
loop overhead ≤ 1.15× the bare loop; the map at held-out chip centres within 2 points of the chip
accuracy at every shift.

``--weights NAME`` starts from any entry of GeoML's weights catalogue
(``geoml_plugin/core/finetune/weights_catalog.py``, e.g. ``resnet50_imagenet``,
``resnet18_sentinel2_rgb_seco``) on that entry's backbone; ``--download``
allows fetching it when it is not in the torch cache. ``--weights FILE`` starts
from a GeoML model file on its backbone: the ImageNet MobileNetV2 measured in the
README (Pretrained weights) was such a file, made by ``bench/imagenet_start.py``
(the development machines cannot reach the catalogue's weight hosts).
``--model FILE`` scores an existing model instead of training one; ``--map-views``
and ``--map-stride`` change the maps' prediction settings.
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
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other
# jobs spinning threads make torch many times slower (see README, Benchmarks).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def split_points(src: str, folder: str, seed: int, fraction: float = 0.2) -> tuple[str, str]:
    """Write train/test GeoPackages with ``fraction`` of each class's points in test."""
    import numpy as np
    from map_scores import write_points
    from osgeo import ogr

    ds = ogr.Open(src)
    lay = ds.GetLayer("labels") or ds.GetLayer(0)
    feats = [(f.GetFID(), f.GetField("class_name")) for f in lay]
    ds = None
    rng = np.random.default_rng(seed)
    test = set()
    for cls in sorted({c for _, c in feats}):
        fids = [fid for fid, c in feats if c == cls]
        test.update(rng.choice(fids, int(round(len(fids) * fraction)), replace=False).tolist())
    return (write_points(src, os.path.join(folder, "train.gpkg"), lambda fid, *_: fid not in test),
            write_points(src, os.path.join(folder, "test.gpkg"), lambda fid, *_: fid in test))


def load_patches(raster: str, points: str, meta, context: int = 0):
    """Normalised patches (with ``context`` px around them) and class indices (in the model's class order)
    at ``points``."""
    import numpy as np

    from geoml_plugin.core.finetune.trainset import normalise_patches
    from geoml_plugin.core.raster.io import RasterReader
    from geoml_plugin.core.raster.labels import extract_patches, read_vector_labels

    with RasterReader(raster, meta.band_indices) as r:
        labels = read_vector_labels(points, "class_name", r.info, classes=[c.name for c in meta.classes], reader=r)
        x, valid = extract_patches(r, labels.cols, labels.rows, meta.patch_size + 2 * context)
    normalise_patches(x, valid, meta.norm_mean, meta.norm_std)
    return x, labels.values.astype(np.int64)


def evaluate(model_path: str, raster: str, points: str, views: int = 1, isolated: bool = False) -> dict:
    """Metrics of the saved model on the 64 px window centred on each of ``points`` (a model trained with
    context around its window sees that context too, as it does on the map and in training; ``isolated``
    gives it the window alone); ``views`` > 1 averages the class probabilities over that many
    flips/rotations of each chip (test-time augmentation, as ``geoml:predict``'s VIEWS)."""
    import torch

    from geoml_plugin.core.finetune.metrics import classification_metrics
    from geoml_plugin.core.modelfile import load_model
    from geoml_plugin.core.predict import predict_views
    from geoml_plugin.core.window_scores import window_output

    model, meta = load_model(model_path, "cpu")
    context = 0 if isolated else int(meta.extra.get("window_context", 0))
    x, y = load_patches(raster, points, meta, context)
    fn = (lambda t: window_output(model, t, context)) if context else model  # noqa: E731
    with torch.inference_mode():
        pred = torch.cat([predict_views(fn, torch.from_numpy(x[i:i + 128]), views).argmax(1)
                          for i in range(0, len(x), 128)]).numpy()
    return classification_metrics(y, pred, [c.name for c in meta.classes])


def bare_loop(model_path: str, raster: str, points: str, batch: int, lr: float, seconds: float) -> float:
    """Chips/s of a plain PyTorch loop: same network, batch, optimiser and input size (a window with the
    context it is trained with); nothing else."""
    import torch

    from geoml_plugin.core.modelfile import read_metadata
    from geoml_plugin.core.models import build_model
    from geoml_plugin.core.window_scores import window_output

    meta = read_metadata(model_path)
    context = int(meta.extra.get("window_context", 0))
    x, y = load_patches(raster, points, meta, context)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = build_model(meta.architecture, **meta.arch_args).train()
    model = model.to(memory_format=torch.channels_last)  # the memory layout GeoML trains in
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(len(x))
    seen, step, t0 = 0, 0, None
    while True:
        i = (step * batch) % (len(x) - batch)
        idx = perm[i:i + batch]
        opt.zero_grad()
        loss_fn(window_output(model, x[idx].contiguous(memory_format=torch.channels_last), context), y[idx]).backward()
        opt.step()
        step += 1
        if step == 3:  # warm-up steps excluded
            t0 = time.perf_counter()
        elif t0 is not None:
            seen += batch
            if time.perf_counter() - t0 > seconds:
                return seen / (time.perf_counter() - t0)


def map_figures(model_path: str, raster: str, labels: str, test_pts: str, shifts: list, folder: str,
                chip_accuracy: float, views: int = 1, stride: int = 0) -> dict:
    """The real map (``run_predict``, defaults; ``views`` test-time views, ``stride`` px between windows, 0 for
    GeoML's automatic) of the raster cropped by each k in ``shifts``, scored."""
    from map_scores import score_map, shifted_input

    from geoml_plugin.core.predict import PredictConfig, run_predict

    out = {}
    for k in shifts:
        src = shifted_input(raster, k, folder)
        t0 = time.perf_counter()
        res = run_predict(PredictConfig(src, model_path, os.path.join(folder, f"map_{k}.tif"), views=views,
                                        stride=stride or None))
        secs = time.perf_counter() - t0
        s = score_map(res.output_path, test_pts, labels)
        s.update(seconds=round(secs, 1), window_step=res.window_step, fully_convolutional=res.fully_convolutional)
        out[f"shift_{k}px"] = s
    accs = [v["map_accuracy_at_chip_centres"] for v in out.values()]
    out["worst_gap_to_chips_points"] = round(100 * (chip_accuracy - min(accs)), 2)
    out["within_2_points_of_chips"] = bool(chip_accuracy - min(accs) <= 0.02)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "eurosat"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bare-seconds", type=float, default=90.0)
    ap.add_argument("--epochs", type=int, default=0, help="0 = GeoML's default (automatic)")
    ap.add_argument("--keep", default="", help="copy the trained model file here")
    ap.add_argument("--model", default="", help="score this model file instead of training one (maps and chips only)")
    ap.add_argument("--map-views", type=int, default=1, choices=(1, 2, 4, 8),
                    help="test-time views of the maps (PredictConfig.views; 1 = GeoML's default)")
    ap.add_argument("--map-stride", type=int, default=0, help="px between the maps' windows (0 = GeoML's automatic)")
    ap.add_argument("--shifts", default="0,2,4", help="crops of the input (px in x and y) for the map scores")
    from geoml_plugin.core.finetune.weights_catalog import entry_names, find_entry

    ap.add_argument("--weights", default="none",
                    help="starting weights: none (GeoML's default), a catalogue entry (its backbone is used: "
                         + ", ".join(entry_names()) + ") or a GeoML model file (its backbone is used; e.g. one "
                         "made by bench/imagenet_start.py)")
    ap.add_argument("--download", action="store_true", help="download the weights if they are not cached")
    ap.add_argument("--weight-bands", default="", help="the weights' band of each raster band, e.g. B04,B03,B02")
    args = ap.parse_args()
    entry = find_entry(args.weights)
    if entry is not None:
        backbone = entry.arch
    elif args.weights != "none":
        from geoml_plugin.core.finetune.weights import backbone_of
        from geoml_plugin.core.modelfile import read_metadata

        backbone = backbone_of(read_metadata(args.weights))
    else:
        backbone = "small_resnet"
    start = dict(backbone=backbone, weights=args.weights, download_weights=args.download,
                 weight_bands=args.weight_bands or None)
    raster = os.path.join(args.data, "eurosat_rgb_train.tif")
    points = os.path.join(args.data, "eurosat_rgb_train_points.gpkg")
    if not (os.path.exists(raster) and os.path.exists(points)):
        print(json.dumps({"benchmark": "finetune_eurosat", "map_views": args.map_views, "skipped": f"EuroSAT data not found in {args.data}"}))
        return 0
    import torch

    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.progress import PrintFeedback

    torch.set_num_threads(args.threads)
    shifts = [int(k) for k in args.shifts.split(",") if k.strip()]
    labels_tif = os.path.join(args.data, "eurosat_rgb_train_labels.tif")
    if args.model:  # score an existing model: chips and maps only
        with tempfile.TemporaryDirectory(prefix="geoml_bench_") as tmp:
            _, test_pts = split_points(points, tmp, args.seed)
            test = evaluate(args.model, raster, test_pts)
            alone = evaluate(args.model, raster, test_pts, isolated=True)["overall_accuracy"]
            maps = map_figures(args.model, raster, labels_tif, test_pts, shifts, tmp, test["overall_accuracy"],
                               args.map_views, args.map_stride)
        print(json.dumps({"benchmark": "finetune_eurosat", "map_views": args.map_views, "map_stride": args.map_stride, "model": args.model, "seed": args.seed,
                          "test_overall_accuracy": test["overall_accuracy"],
                          "test_overall_accuracy_window_alone": alone, "map": maps}, indent=2))
        return 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="geoml_bench_") as tmp:
        train_pts, test_pts = split_points(points, tmp, args.seed)
        model_path = os.path.join(tmp, "eurosat.safetensors")
        # the bare loop needs the model's architecture and normalisation: a 1-epoch probe model gives them
        probe = run_finetune(FinetuneConfig(raster, train_pts, "class_name", os.path.join(tmp, "probe.safetensors"),
                                            epochs=1, seed=args.seed, **start))
        bare_before = bare_loop(probe.model_path, raster, train_pts, probe.batch_size, probe.learning_rate,
                                args.bare_seconds / 2)
        t0 = time.perf_counter()
        res = run_finetune(FinetuneConfig(raster, train_pts, "class_name", model_path, epochs=args.epochs,
                                          seed=args.seed, **start), PrintFeedback(prefix="  ", every_s=30))
        total = time.perf_counter() - t0
        load_train = os.getloadavg()
        test = evaluate(model_path, raster, test_pts)
        test8 = evaluate(model_path, raster, test_pts, views=8)
        test_isolated = evaluate(model_path, raster, test_pts, isolated=True)
        if args.keep:
            import shutil

            shutil.copy(model_path, args.keep)
        maps = map_figures(model_path, raster, labels_tif, test_pts, shifts, tmp, test["overall_accuracy"], args.map_views,
                           args.map_stride)
        bare_after = bare_loop(model_path, raster, train_pts, res.batch_size, res.learning_rate, args.bare_seconds / 2)
        bare = (bare_before + bare_after) / 2
        load_after = os.getloadavg()
    val_seconds = sum(h["seconds"] - h["train_seconds"] for h in res.history)
    out = {
        "benchmark": "finetune_eurosat", "map_views": args.map_views, "map_stride": args.map_stride,
        "defaults": {"backbone": backbone, "weights": args.weights, "patch_size": 64, "epochs": res.epochs,
                     "batch_size": res.batch_size, "learning_rate": res.learning_rate,
                     "validation_fraction": 0.2, "augment": True},
        "train_points": res.n_train + res.n_val, "test_points": test["samples"],
        "fitted_on": res.n_train, "validated_on": res.n_val,
        "test_overall_accuracy": test["overall_accuracy"], "test_kappa": test["kappa"],
        "test_macro_f1": test["macro_f1"], "validation_overall_accuracy": res.metrics.get("overall_accuracy"),
        "test_overall_accuracy_8_views": test8["overall_accuracy"], "test_kappa_8_views": test8["kappa"],
        "test_overall_accuracy_window_alone": test_isolated["overall_accuracy"],
        "map": maps,
        "seconds_total": round(total, 1), "seconds_training_steps": round(res.train_seconds, 1),
        "seconds_validation": round(val_seconds, 1),
        "chips_per_s_geoml_loop": round(res.samples_per_second, 1),
        "chips_per_s_geoml_incl_validation": round(res.n_train * res.epochs / max(res.train_seconds + val_seconds, 1e-9), 1),
        "chips_per_s_bare_loop": round(bare, 1),
        "chips_per_s_bare_loop_before_after": [round(bare_before, 1), round(bare_after, 1)],
        "loop_overhead": round(bare / max(res.samples_per_second, 1e-9), 3),
        "torch_threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "device": res.device, "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": round(load_before[0], 2), "after_training": round(load_train[0], 2),
                              "end": round(load_after[0], 2)},
        "note": "load average above the core count means other jobs shared the CPU during the run",
        "targets": {"test_overall_accuracy": ">= 0.90", "seconds_total": "<= 900", "loop_overhead": "<= 1.15",
                    "map_accuracy_at_chip_centres": "within 2 points of test_overall_accuracy at every shift"},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

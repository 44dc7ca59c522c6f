#!/usr/bin/env python3
"""Starting from an earlier model: fine-tuning from a pretrained start, measured on a map of another raster.

GeoML's development machines cannot download ImageNet or remote-sensing weights, so the automatic learning
rate and epochs for pretrained starts are measured here with the pretrained start that can be made offline: an
earlier GeoML model (``WEIGHTS`` = its file: its backbone, a new head), the analyst's "model from last
season / the next county" case. The protocol, on the shared EuroSAT RGB mosaic:

1. the mosaic is split into two separate GeoTIFFs, west and east (``map_scores.split_raster``);
2. the *source* model: ``geoml:finetune`` defaults on the west raster, with the 6 classes the few-shot
   benchmark meta-trains on (``--source-classes all``: all 10);
3. on the east raster, all 10 classes: the chip-centre points split 80/20 per class (``--seed``), the 80 %
   thinned to ``--per-class`` points per class when given (few labels, where a start matters most);
4. each variant (``--variants``: ``name=weights:learning_rate:epochs[:frozen]``, ``weights``
   ``none`` or ``source``, 0 = automatic; ``frozen``: only the head is trained) is fine-tuned on those points, then the east raster is mapped with
   ``geoml:predict`` defaults and the map is read at the held-out chip centres (and pixel by pixel over those
   chips against ``eurosat_rgb_train_labels.tif``; every chip edge is a class boundary, so that figure is
   bounded).

The held-out chips of the east raster were never trained on, by the source or by the variant; the source never
saw the east raster. Prints one JSON object. Figures are of a GeoML-made start, not of ImageNet or TorchGeo
weights.
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
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see finetune_eurosat.py

RASTER = "eurosat_rgb_train.tif"
POINTS = "eurosat_rgb_train_points.gpkg"
SOURCE_CLASSES = [0, 1, 2, 3, 4, 5]  # the few-shot benchmark's meta-training classes (by class id)
DEFAULT_VARIANTS = "scratch=none:0:0,start=source:0:0,start_lr3e-3=source:3e-3:0,start_lr3e-4=source:3e-4:0"


def east_split(points: str, east: str, folder: str, seed: int, per_class: int) -> tuple[str, str, dict]:
    """Train/test GeoPackages of the points inside ``east``: 20 % of each class held out, the rest (thinned
    to ``per_class`` per class when > 0) for training."""
    import numpy as np
    from map_scores import write_points
    from osgeo import ogr

    from geoml_plugin.core.raster.io import raster_info

    info = raster_info(east)
    x0, x1 = info.geotransform[0], info.geotransform[0] + info.geotransform[1] * info.width
    ds = ogr.Open(points)  # the layer is only valid while its dataset lives
    lay = ds.GetLayer(0)
    rows = [(f.GetFID(), int(f.GetField("class_id"))) for f in lay if x0 <= f.GetGeometryRef().GetX() < x1]
    rng = np.random.default_rng(seed)
    test, train = set(), set()
    for c in sorted({c for _, c in rows}):
        fids = rng.permutation([fid for fid, k in rows if k == c]).tolist()
        n_test = int(round(len(fids) * 0.2))
        test.update(fids[:n_test])
        train.update(fids[n_test:n_test + per_class] if per_class > 0 else fids[n_test:])
    tr = write_points(points, os.path.join(folder, "east_train.gpkg"), lambda fid, x, y, c: fid in train)
    te = write_points(points, os.path.join(folder, "east_test.gpkg"), lambda fid, x, y, c: fid in test)
    return tr, te, {"east_train_points": len(train), "east_test_points": len(test)}


def parse_variants(text: str) -> list:
    out = []
    for item in text.split(","):
        name, spec = item.split("=")
        weights, lr, epochs, *rest = spec.split(":")
        if weights not in ("none", "source") or rest not in ([], ["frozen"]):
            raise SystemExit(f"variant {name}: weights must be none or source, then learning rate, epochs[, frozen]")
        out.append((name, weights, float(lr), int(epochs), rest == ["frozen"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "eurosat"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the east split's and the training seed")
    ap.add_argument("--per-class", type=int, default=0, help="training points per class on the east raster (0: all)")
    ap.add_argument("--source-classes", choices=["base", "all"], default="base")
    ap.add_argument("--source", default="", help="a source model made by this protocol (step 2 skipped)")
    ap.add_argument("--source-epochs", type=int, default=0, help="the source's epochs (0: automatic)")
    ap.add_argument("--keep", default="", help="folder to keep the source model in")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / RASTER).exists() or not (data / POINTS).exists():
        print(json.dumps({"benchmark": "transfer_eurosat", "skipped": f"EuroSAT data not found in {data}"}))
        return 0
    import torch
    from finetune_eurosat import evaluate
    from map_scores import score_map, split_raster, write_points

    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.predict import PredictConfig, run_predict
    from geoml_plugin.core.progress import Feedback

    torch.set_num_threads(args.threads)
    variants = parse_variants(args.variants)
    progress = Feedback(on_log=lambda m: print(m, file=sys.stderr, flush=True))
    labels_tif = str(data / "eurosat_rgb_train_labels.tif")
    load_before = os.getloadavg()
    out: dict = {"benchmark": "transfer_eurosat", "seed": args.seed, "per_class": args.per_class,
                 "source_classes": args.source_classes, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="geoml_transfer_bench_") as tmp:
        west, east = split_raster(str(data / RASTER), tmp)
        # 2. the source model on the west raster
        source = args.source
        if not source:
            from geoml_plugin.core.raster.io import raster_info

            gi = raster_info(west)
            x_end = gi.geotransform[0] + gi.geotransform[1] * gi.width
            wanted = set(SOURCE_CLASSES) if args.source_classes == "base" else set(range(100))
            src_pts = write_points(str(data / POINTS), os.path.join(tmp, "west.gpkg"),
                                   lambda fid, x, y, c: x < x_end and c in wanted)
            source = os.path.join(args.keep or tmp, f"source_{args.source_classes}.safetensors")
            t0 = time.perf_counter()
            res = run_finetune(FinetuneConfig(west, src_pts, "class_name", source, seed=args.seed,
                                              epochs=args.source_epochs), progress)
            out["source"] = {"path": source, "classes": res.class_names,
                             "fitted_on": res.n_train, "validation_accuracy": res.metrics.get("overall_accuracy"),
                             "epochs": res.epochs, "seconds": round(time.perf_counter() - t0, 1)}
        else:
            out["source"] = {"path": source, "given": True}
        # 3. the east raster's points
        train_pts, test_pts, counts = east_split(str(data / POINTS), east, tmp, args.seed, args.per_class)
        out.update(counts)
        # 4. the variants
        for name, weights, lr, epochs, frozen in variants:
            path = os.path.join(tmp, f"{name}.safetensors")
            t0 = time.perf_counter()
            res = run_finetune(FinetuneConfig(east, train_pts, "class_name", path, seed=args.seed,
                                              weights=source if weights == "source" else "none",
                                              learning_rate=lr, epochs=epochs, freeze_backbone=frozen), progress)
            train_s = time.perf_counter() - t0
            chips = evaluate(path, east, test_pts)
            t1 = time.perf_counter()
            pred = run_predict(PredictConfig(east, path, os.path.join(tmp, f"{name}_map.tif")))
            map_s = time.perf_counter() - t1
            score = score_map(pred.output_path, test_pts, labels_tif)
            out["variants"][name] = {
                "weights": weights, "frozen_backbone": frozen, "learning_rate": res.learning_rate, "epochs": res.epochs,
                "fitted_on": res.n_train, "seconds_training": round(train_s, 1),
                "chips_overall_accuracy": chips["overall_accuracy"],
                "map_accuracy_at_chip_centres": score["map_accuracy_at_chip_centres"],
                "map_pixel_accuracy_on_chips": score["map_pixel_accuracy_on_chips"],
                "map_seconds": round(map_s, 1)}
            print(json.dumps({name: out["variants"][name]}), file=sys.stderr, flush=True)
    out.update(torch_threads=args.threads, load_average_1min={"start": round(load_before[0], 2),
                                                              "end": round(os.getloadavg()[0], 2)},
               note="a GeoML-made start (an earlier model of the west raster), not ImageNet or TorchGeo weights")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

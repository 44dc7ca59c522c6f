#!/usr/bin/env python3
"""Benchmark geoml:predict: pipeline overhead and memory against raster size.

Prints JSON with, for a dense model (tiles) and a patch classifier (windows
on a lattice, scored fully convolutionally):

* ``ratio``: throughput of the tiled prediction (read → normalise → forward
  → decode → write GeoTIFF) divided by the throughput of a bare
  ``model(x)`` over the same number of tiles/windows with the same batch size
  on tensors already in memory. 1.0 means the pipeline costs nothing beyond
  the model. Target ≥ 0.85 on CPU.
* ``overlap_compute_factor``: model pixels computed per output pixel on a
  large raster (dense tiles read past their core, which makes seams rare; the ratio
  above already counts those as the same work for both sides);
  ``model_px_per_output_px``: the same on this raster, edges included.
* ``patch.ratio_to_one_fcn_pass``: seconds of the patch classifier's map
  (small_resnet, 64-px windows every 8 px, the defaults) divided by the
  seconds of one plain fully convolutional pass of the same network (backbone
  and linear head, no window pooling, no dilation) over the same tiles on
  tensors in memory. Target ≤ 2. ``patch.windows_per_s`` and the cost of
  scoring as many windows one by one (``window_by_window_s_estimate``, from a
  timed sample of batches) show what the fully convolutional scoring saves.
  Peak RSS of the patch map on a raster and one 16× larger (``--patch-rss-size``).
* peak RSS of a dense prediction over a raster of ``--rss-size`` px and over
  one 16× larger (each in a fresh process); target: growth ≤ 10 %. The
  smaller raster must hold full batches of full-size tiles (default 512 px
  tiles, 4 per forward pass), or its peak is lower for a reason that has
  nothing to do with raster size (its tiles at the far edges are cut at the
  edge, and a 1024 px raster holds no full batch): hence 2048 px by default,
  while the ratios above are measured on the ``--size`` raster (1024 px).
* ``onnxruntime`` (unless ``--no-onnx``): both models exported with ``geoml:export`` and applied to the
  ``--size`` raster through ``geoml:predict`` with onnxruntime (CPU execution provider, ``--threads``
  intra-op threads, in a fresh process that never imports torch): ``throughput_vs_torch`` = PyTorch's
  predict seconds ÷ onnxruntime's on the same model and raster, and the peak RSS of each process. The patch
  model runs as the exported dense graph (windows every 8 px inside the graph, onnxruntime's default
  512 px tiles with the exported overlap). CPU only: no GPU column where none is lent.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def make_inputs(folder: Path, size: int) -> dict:
    import torch

    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model
    from geoml_plugin.core.raster.classes import make_classes
    from geoml_plugin.core.raster.io import RasterReader, RasterWriter
    from geoml_plugin.core.sampledata import make_sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    scene = make_sample_scene(str(folder / "scene"), size=size, seed=0)
    big = folder / "big.tif"
    with RasterReader(scene.image) as r:
        arr, _ = r.read(0, 0, size, size)
        info = r.info
    with RasterWriter(str(big), size * 4, size * 4, 4, np.uint16, info.geotransform, info.crs_wkt, nodata=0) as w:
        for i in range(4):
            for j in range(4):
                w.write(arr.astype(np.uint16), j * size, i * size)
    torch.manual_seed(0)
    classes = make_classes(["a", "b", "c", "d"])
    seg_meta = ModelMetadata(architecture="small_fcn", arch_args={"in_bands": 4, "num_classes": 4, "width": 32},
                         task="segmentation", output="dense", in_bands=4, patch_size=64, classes=classes,
                         norm_mean=[1000] * 4, norm_std=[500] * 4)
    from geoml_plugin.core.finetune.job import CENTRE_POOL, CLASSIFIER_WIDTHS

    patch_args = {"in_bands": 4, "num_outputs": 4, "centre_pool": CENTRE_POOL, "widths": list(CLASSIFIER_WIDTHS)}
    patch_meta = ModelMetadata(architecture="small_resnet", arch_args=patch_args,  # as Fine-tune builds it
                           task="classification", output="patch", in_bands=4, patch_size=64, classes=classes,
                           norm_mean=[1000] * 4, norm_std=[500] * 4)
    out = {"small": scene.image, "big": str(big)}
    for name, meta in (("dense", seg_meta), ("patch", patch_meta)):
        model = build_model(meta.architecture, **meta.arch_args)
        out[name] = save_model(str(folder / f"{name}.safetensors"), model, meta)
    return out


def bare_forward(model_path: str, n_items: int, batch: int, tile: int) -> float:
    """Seconds for model(x) over n_items preloaded inputs of the same shape/batch."""
    import torch

    from geoml_plugin.core.modelfile import load_model

    model, meta = load_model(model_path)
    x = torch.randn(batch, meta.in_bands, tile, tile)
    with torch.inference_mode():
        model(x)  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < n_items:
            b = min(batch, n_items - done)
            model(x[:b])
            done += b
    return time.perf_counter() - t0


def fcn_pass(model_path: str, tiles: list) -> float:
    """Seconds of one plain fully convolutional pass (backbone + linear head as a 1×1 convolution) of a
    patch classifier over inputs of the tiles' read sizes, in memory."""
    import torch

    from geoml_plugin.core.modelfile import load_model

    model, meta = load_model(model_path)
    model.eval()
    w, b = model.head[-1].weight[:, :, None, None], model.head[-1].bias
    with torch.inference_mode():
        torch.nn.functional.conv2d(model.backbone(torch.randn(1, meta.in_bands, 128, 128)), w, b)  # warm-up
        t0 = time.perf_counter()
        for t in tiles:
            torch.nn.functional.conv2d(model.backbone(torch.randn(1, meta.in_bands, t.read.h, t.read.w)), w, b)
    return time.perf_counter() - t0


def run_one(args) -> dict:
    """Child process: one prediction, report seconds, items and peak RSS."""
    from geoml_plugin.core.modelfile import load_model
    from geoml_plugin.core.predict import PredictConfig, predict_raster

    with tempfile.TemporaryDirectory() as d:
        cfg = PredictConfig(args.raster, args.model, os.path.join(d, "o.tif"), device="cpu",
                            batch_size=args.batch, stride=args.stride or None)
        if args.model.endswith(".onnx"):  # onnxruntime, no torch in this process
            from geoml_plugin.core.predict import run_predict

            t0 = time.perf_counter()
            res = run_predict(cfg)
        else:
            model, meta = load_model(args.model)
            t0 = time.perf_counter()
            res = predict_raster(model, meta, cfg)
        secs = time.perf_counter() - t0
    return {"seconds": secs, "tiles": res.tiles, "pixels": res.width * res.height, "tile": res.tile_size,
            "overlap": res.overlap, "tile_batch": res.tile_batch, "model_pixels": res.model_pixels,
            "window_step": res.window_step, "fully_convolutional": res.fully_convolutional,
            "peak_rss_mb": peak_rss_mb(),
            "torch_imported": "torch" in sys.modules}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec; ``ru_maxrss`` is preserved across
    exec, so a child started by a large parent would report at least the parent's peak at the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model, raster, batch, stride=0, threads=None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--raster", raster, "--batch", str(batch),
           "--stride", str(stride)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None  # onnxruntime's intra-op threads
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def onnx_column(paths: dict, folder: str, args, torch_runs: dict) -> dict:
    """onnxruntime against PyTorch on the same models and the ``--size`` raster (see the module docstring)."""
    import onnxruntime

    from geoml_plugin.core.onnx_export import export_onnx

    out = {"onnxruntime": onnxruntime.__version__, "provider": "CPUExecutionProvider", "threads": args.threads}
    for name in ("dense", "patch"):
        onnx_path = os.path.join(folder, f"{name}.onnx")
        exp = export_onnx(paths[name], onnx_path)
        run = child(onnx_path, paths["small"], args.batch, threads=args.threads)
        ref = torch_runs[name]
        out[name] = {"predict_s": round(run["seconds"], 3), "torch_predict_s": round(ref["seconds"], 3),
                     "throughput_vs_torch": round(ref["seconds"] / run["seconds"], 3),
                     "peak_rss_mb": round(run["peak_rss_mb"], 1), "torch_peak_rss_mb": round(ref["peak_rss_mb"], 1),
                     "torch_imported": run["torch_imported"], "tile": run["tile"], "overlap": run["overlap"],
                     "export_max_difference": exp.max_difference, "file_mb": round(os.path.getsize(onnx_path) / 2**20, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024, help="small raster edge (px); the big one is 4x4 copies")
    ap.add_argument("--rss-size", type=int, default=2048,
                    help="edge (px) of the smaller raster of the memory comparison; the big one is 4x4 copies")
    ap.add_argument("--patch-rss-size", type=int, default=1024,
                    help="edge (px) of the smaller raster of the patch map's memory comparison (the big one: 4x4)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--raster")
    ap.add_argument("--stride", type=int, default=0)
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime column")
    args = ap.parse_args()
    if args.child and args.model.endswith(".onnx"):
        print(json.dumps(run_one(args)))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_one(args)))
        return 0
    with tempfile.TemporaryDirectory() as d:
        paths = make_inputs(Path(d), args.size)
        report = {"device": "cpu", "threads": args.threads, "batch": args.batch, "raster_px": args.size}

        # dense model: the predict defaults (tile, overlap and tiles per forward pass as predict reports them)
        small = small_torch = child(paths["dense"], paths["small"], args.batch)
        tile, overlap = small["tile"], small["overlap"]
        # the same model work as full tiles (tiles at the far edges are cut at the raster's edge)
        n_full = int(np.ceil(small["model_pixels"] / tile**2))
        bare = bare_forward(paths["dense"], n_full, small["tile_batch"], tile)
        report["dense"] = {
            "model": "small_fcn (segmentation)", "tile": tile, "overlap": overlap, "tile_batch": small["tile_batch"],
            "predict_s": round(small["seconds"], 3), "bare_forward_s": round(bare, 3),
            "ratio": round(bare / small["seconds"], 3),
            "overlap_compute_factor": round(tile**2 / (tile - 2 * overlap) ** 2, 3),
            "model_px_per_output_px": round(small["model_pixels"] / small["pixels"], 3),
            "mpix_per_s": round(small["pixels"] / small["seconds"] / 1e6, 3),
        }
        if args.rss_size != args.size:
            rss = make_inputs(Path(d) / "rss", args.rss_size)
            small = child(paths["dense"], rss["small"], args.batch)
            big = child(paths["dense"], rss["big"], args.batch)
        else:
            big = child(paths["dense"], paths["big"], args.batch)
        report["memory"] = {"raster_px": args.rss_size, "big_raster_px": args.rss_size * 4,
                            "peak_rss_mb_small": round(small["peak_rss_mb"], 1),
                            "peak_rss_mb_16x": round(big["peak_rss_mb"], 1),
                            "rss_growth": round(big["peak_rss_mb"] / small["peak_rss_mb"] - 1, 3),
                            "big_predict_s": round(big["seconds"], 2)}
        # patch classifier: the predict defaults (64-px windows every 8 px, fully convolutional)
        from geoml_plugin.core.modelfile import load_model
        from geoml_plugin.core.raster.tiling import window_tiles
        from geoml_plugin.core.window_scores import fully_convolutional

        p = child(paths["patch"], paths["small"], args.batch)
        model, pmeta = load_model(paths["patch"])
        scorer = fully_convolutional(model, pmeta.patch_size, p["window_step"])
        tiles = window_tiles(args.size, args.size, pmeta.patch_size, p["window_step"], shift=scorer.shift)
        one_pass = fcn_pass(paths["patch"], tiles)
        n_windows = sum(t.nx * t.ny for t in tiles)
        sample = 256  # windows scored one by one, timed on a sample and scaled up
        one_by_one = bare_forward(paths["patch"], sample, 64, pmeta.patch_size) * n_windows / sample
        if args.patch_rss_size != args.size:
            prss = make_inputs(Path(d) / "patch_rss", args.patch_rss_size)
            p_small, p_big = child(paths["patch"], prss["small"], args.batch), child(paths["patch"], prss["big"],
                                                                                     args.batch)
        else:
            p_small, p_big = p, child(paths["patch"], paths["big"], args.batch)
        report["patch"] = {"model": "small_resnet (classification)", "patch": pmeta.patch_size,
                           "window_step": p["window_step"], "fully_convolutional": p["fully_convolutional"],
                           "windows": n_windows, "predict_s": round(p["seconds"], 3),
                           "one_fcn_pass_s": round(one_pass, 3),
                           "ratio_to_one_fcn_pass": round(p["seconds"] / one_pass, 3),
                           "windows_per_s": round(n_windows / p["seconds"], 1),
                           "window_by_window_s_estimate": round(one_by_one, 1),
                           "mpix_per_s": round(p["pixels"] / p["seconds"] / 1e6, 3),
                           "memory": {"raster_px": args.patch_rss_size, "big_raster_px": args.patch_rss_size * 4,
                                      "peak_rss_mb_small": round(p_small["peak_rss_mb"], 1),
                                      "peak_rss_mb_16x": round(p_big["peak_rss_mb"], 1),
                                      "rss_growth": round(p_big["peak_rss_mb"] / p_small["peak_rss_mb"] - 1, 3),
                                      "big_predict_s": round(p_big["seconds"], 2)}}
        if not args.no_onnx:
            report["onnxruntime"] = onnx_column(paths, d, args, {"dense": small_torch, "patch": p})
        report["targets"] = {"ratio": ">= 0.85", "rss_growth": "<= 0.10", "patch.ratio_to_one_fcn_pass": "<= 2"}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

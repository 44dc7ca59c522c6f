#!/usr/bin/env python3
"""Scale-out on this machine: 1 process × N threads against N processes × 1 thread (torchrun, gloo).

On a seeded synthetic scene (``sampledata.make_sample_scene``):

* ``predict``: an (untrained) U-Net on ``small_resnet``, 32-px patches, over the scene with
  ``geoml:predict``'s defaults: megapixels per second, whole job (start-up of the processes excluded:
  the time is measured inside the job by every rank, the slowest counts);
* ``train``: ``geoml:finetune`` of the small residual CNN on the scene's points (2 epochs, batch 32):
  training samples per second (``FinetuneResult.samples_per_second``, all processes together);

with their ratio (N processes ÷ 1 process). GPU scaling is reported only when CUDA is present (it is
not measured by this script yet). Prints JSON.

    python bench/scaleout.py [--size 512] [--procs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(spec_path: str) -> None:
    """One process of a measurement (run directly, or by torchrun)."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(int(os.environ.get("GEOML_BENCH_THREADS", "1")))
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.predict import PredictConfig, run_predict

    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", 0))
    t0 = time.perf_counter()
    if spec["job"] == "predict":
        run_predict(PredictConfig(**spec["config"]))
        out = {"seconds": time.perf_counter() - t0}
    else:
        res = run_finetune(FinetuneConfig(**spec["config"]))
        out = {"seconds": time.perf_counter() - t0, "samples_per_second": res.samples_per_second}
    Path(spec["results"], f"r{rank}.json").write_text(json.dumps(out))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(tmp: Path, job: str, config: dict, procs: int, threads: int) -> list:
    res = tmp / f"res-{job}-{procs}x{threads}"
    res.mkdir()
    spec = tmp / f"{res.name}.json"
    spec.write_text(json.dumps({"job": job, "config": config, "results": str(res)}))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GEOML_BENCH_THREADS=str(threads), PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    cmd = [sys.executable, __file__, "--worker", str(spec)]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}", "--master-addr=127.0.0.1",
               f"--master-port={_port()}"] + cmd[1:]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return [json.loads((res / f"r{r}.json").read_text()) for r in range(procs)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, str(ROOT))
    import torch

    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model
    from geoml_plugin.core.sampledata import make_sample_scene

    n = args.procs
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scene = make_sample_scene(str(tmp / "scene"), size=args.size, seed=0)
        torch.manual_seed(0)
        arch = {"backbone": "small_resnet", "in_bands": 4, "num_outputs": 4}
        meta = ModelMetadata(architecture="unet", arch_args=arch, task="segmentation", output="dense", in_bands=4,
                         patch_size=32, classes=[], norm_mean=[1000] * 4, norm_std=[500] * 4)
        from geoml_plugin.core.raster.classes import make_classes

        meta.classes = make_classes(("a", "b", "c", "d"))
        model = save_model(str(tmp / "unet.safetensors"), build_model("unet", **arch), meta)
        mpx = args.size * args.size / 1e6
        pred = {"input_path": scene.image, "model_path": model, "device": "cpu"}
        train = {"input_path": scene.image, "labels": scene.points, "label_field": "class_name", "epochs": 2,
                 "batch_size": 32, "patch_size": 32, "device": "cpu", "validation_fraction": 0.2}
        out = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__}, "size_px": args.size}
        for job, cfg in (("predict", pred), ("train", train)):
            rows = {}
            for procs, threads in ((1, n), (n, 1)):
                cfg_run = dict(cfg, output_path=str(tmp / f"p{procs}.tif")) if job == "predict" else \
                    dict(cfg, output_model=str(tmp / f"m{procs}.safetensors"))
                ranks = measure(tmp, job, cfg_run, procs, threads)
                if job == "predict":
                    rows[f"{procs}x{threads}"] = round(mpx / max(r["seconds"] for r in ranks), 4)
                else:
                    rows[f"{procs}x{threads}"] = ranks[0]["samples_per_second"]
            key = "megapixels_per_s" if job == "predict" else "train_samples_per_s"
            rows["ratio"] = round(rows[f"{n}x1"] / rows[f"1x{n}"], 3)
            out[job] = {key: rows}
        out["gpu"] = ("CUDA present: GPU scaling is not measured by this script yet" if torch.cuda.is_available()
                      else "no GPU on this machine: GPU scaling not measured")
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

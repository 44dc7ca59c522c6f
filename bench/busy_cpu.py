#!/usr/bin/env python3
"""A GeoML job alone and beside a second PyTorch job, with the old and the new thread policy.

The job is the demo's fine-tuning (``make demo``'s ``geoml:finetune`` step, through ``run_finetune``:
the seeded sample scene, its label points, 32-px patches, a fixed number of epochs), run in a fresh
process so that OpenMP starts with the policy's environment:

* ``old``: OpenMP's default waiting (idle threads spin before they sleep) and torch's default thread
  count — what GeoML did before ``core/threads.py``;
* ``new``: GeoML's policy as the ``geoml`` command applies it (``threads.configure``:
  ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose, threads = physical cores unless
  ``GEOML_THREADS`` / ``OMP_NUM_THREADS`` say otherwise);
* ``new:N``: the same with ``GEOML_THREADS=N`` (e.g. ``new:1``: one core left free).

For each policy the job is timed alone, then beside a *neighbour*: another process training a small
CNN in a loop with torch's defaults (spinning OpenMP, all cores), as another analyst's or program's
PyTorch job would. ``slowdown`` = beside / alone; sharing the CPU fairly with one busy neighbour
gives about 2 on a machine whose cores the job used alone. The neighbour's own iterations per
second (alone and during the job) show what the job took from it. Prints one JSON object.

``--ui`` also runs the job of each policy in a worker thread, as a QgsTask runs it, while the main
thread ticks every 16 ms like QGIS's event loop, and reports how late the ticks come (the UI's
responsiveness). ``--neighbour-policy new`` makes the neighbour a GeoML-like job too.

About 4 minutes on 2 idle cores with the defaults (8 epochs: about 25 s alone); ``--epochs`` scales it.
On a machine shared with other work the figures are noisy: the JSON includes the load average.

    .venv/bin/python bench/busy_cpu.py --policies old,new,new:1 --ui
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THREAD_VARS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT", "KMP_LIBRARY", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "GEOML_THREADS")


def policy_env(policy: str) -> dict:
    """The environment a job process starts with under ``policy`` (``old``, ``new`` or ``new:N``, N threads)."""
    name, _, n = policy.partition(":")
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS or name == "new"}
    if n:
        env["GEOML_THREADS"] = n
    env["PYTHONPATH"] = str(ROOT)
    env["BUSY_CPU_POLICY"] = name
    return env


# ------------------------------------------------------------------ the job (child process)
def job_config(args):
    """Apply the process's policy (before torch loads), then the demo's fine-tuning configuration."""
    if os.environ["BUSY_CPU_POLICY"] == "new":
        from geoml_plugin.core import threads

        threads.configure()  # what `geoml` and the plugin do first
    from geoml_plugin.core.finetune.job import FinetuneConfig
    from geoml_plugin.core.sampledata import make_sample_scene

    scene = make_sample_scene(os.path.join(args.dir, f"scene{os.getpid()}"), size=args.size, seed=0)
    return FinetuneConfig(scene.image, scene.points, "class_name", os.path.join(args.dir, f"{os.getpid()}.safetensors"),
                          patch_size=32, epochs=args.epochs, device="cpu", seed=0)


def job_main(args) -> None:
    from geoml_plugin.core.finetune.job import run_finetune

    cfg = job_config(args)
    import torch

    t0 = time.perf_counter()
    res = run_finetune(cfg)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": round(seconds, 2), "torch_threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
                      "accuracy": round(res.metrics.get("overall_accuracy", float("nan")), 3)}))


def ui_main(args) -> None:
    """The job in a worker thread (as a QgsTask runs it) while the main thread ticks like a UI event loop
    (a 16 ms timer and a little Python work per tick); reports how late the ticks come."""
    import threading

    from geoml_plugin.core.finetune.job import run_finetune

    cfg = job_config(args)
    import torch  # noqa: F401 - imported on the main thread first, as preload_torch does

    done, seconds, used = threading.Event(), [], []

    def work():
        t0 = time.perf_counter()
        run_finetune(cfg)
        seconds.append(time.perf_counter() - t0)
        used.append(torch.get_num_threads())
        done.set()

    threading.Thread(target=work, daemon=True).start()
    late = []
    nxt = time.perf_counter()
    while not done.is_set():
        nxt += 0.016
        time.sleep(max(0.0, nxt - time.perf_counter()))
        late.append(time.perf_counter() - nxt)
        sum(i * i for i in range(2000))  # a little UI work under the GIL
        nxt = max(nxt, time.perf_counter())
    late.sort()
    q = lambda p: round(1000 * late[min(len(late) - 1, int(p * len(late)))], 1)  # noqa: E731
    print(json.dumps({"seconds": round(seconds[0], 2), "torch_threads": used[0], "ticks": len(late), "late_ms_p50": q(0.5),
                      "late_ms_p95": q(0.95), "late_ms_max": round(1000 * late[-1], 1)}))


# ------------------------------------------------------------------ the neighbour (child process)
def neighbour_main(args) -> None:
    """Train a small CNN until terminated; append the time of every iteration to ``args.log``."""
    if os.environ["BUSY_CPU_POLICY"] == "new":
        from geoml_plugin.core import threads

        threads.configure()
        threads.apply_job_threads()
    import torch
    from torch import nn

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(64, 5))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(32, 4, 32, 32), torch.randint(0, 5, (32,))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with open(args.log, "w", buffering=1) as log:
        while not stop:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            log.write(f"{time.time():.3f}\n")


def neighbour_rate(log: str, t0: float, t1: float) -> float:
    """Neighbour iterations per second between wall-clock times t0 and t1."""
    with open(log) as f:
        ts = [float(s) for s in f.read().split()]
    n = sum(1 for t in ts if t0 <= t <= t1)
    return round(n / max(t1 - t0, 1e-9), 2)


# ------------------------------------------------------------------ the driver
def run_job(args, policy: str, folder: str, mode: str = "--_job") -> dict:
    out = subprocess.run([sys.executable, __file__, mode, "--dir", folder, "--epochs", str(args.epochs),
                          "--size", str(args.size)], env=policy_env(policy), capture_output=True, text=True,
                         check=False)
    if out.returncode:
        raise SystemExit(f"job failed ({policy}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_neighbour(args, policy: str, log: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, __file__, "--_neighbour", "--log", log], env=policy_env(policy))
    deadline = time.time() + 60
    while time.time() < deadline and (not os.path.exists(log) or os.path.getsize(log) < 45):
        time.sleep(0.2)  # let it import torch and warm up
    return p


def trial(args, policy: str, tmp: str, log: str) -> dict:
    """The job alone, then beside the neighbour; the neighbour's pace before and during the job."""
    alone = run_job(args, policy, tmp)
    neighbour = start_neighbour(args, args.neighbour_policy, log)
    try:
        t0 = time.time()
        time.sleep(6)
        t1 = time.time()
        busy = run_job(args, policy, tmp)
        t2 = time.time()
    finally:
        neighbour.terminate()
        neighbour.wait(30)
    out = {"alone_s": alone["seconds"], "beside_s": busy["seconds"],
           "slowdown": round(busy["seconds"] / alone["seconds"], 2), "torch_threads": alone["torch_threads"],
           "omp_wait_policy": alone["omp_wait_policy"], "neighbour_it_per_s_alone": neighbour_rate(log, t0, t1),
           "neighbour_it_per_s_beside_job": neighbour_rate(log, t1, t2),
           "load": [round(x, 2) for x in os.getloadavg()]}
    os.remove(log)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (about 3 s each on 2 idle cores)")
    ap.add_argument("--size", type=int, default=256, help="sample scene size in pixels")
    ap.add_argument("--policies", default="old,new",
                    help="comma-separated: old, new, new:N (the new policy with GEOML_THREADS=N)")
    ap.add_argument("--repeat", type=int, default=1, help="trials per policy, alternating (medians reported)")
    ap.add_argument("--ui", action="store_true",
                    help="also: the job in a worker thread (as in QGIS) on each policy's threads, while the main "
                         "thread ticks every 16 ms; how late the ticks come (alone, no neighbour)")
    ap.add_argument("--neighbour-policy", default="old",
                    help="the neighbour's threads and waiting (default: torch's and OpenMP's defaults)")
    ap.add_argument("--_job", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_neighbour", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_ui", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._job:
        job_main(args)
        return 0
    if args._neighbour:
        neighbour_main(args)
        return 0
    if args._ui:
        ui_main(args)
        return 0

    t_start = time.time()
    result = {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in os.getloadavg()], "epochs": args.epochs,
              "size": args.size, "neighbour_policy": args.neighbour_policy, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "neighbour.log")
        policies = args.policies.split(",")
        trials: dict = {p: [] for p in policies}
        for _ in range(args.repeat):  # policies alternate, so that a drifting load touches each alike
            for policy in policies:
                trials[policy].append(trial(args, policy, tmp, log))
        for policy, runs in trials.items():
            med = {k: statistics.median(r[k] for r in runs) for k in ("alone_s", "beside_s", "slowdown")}
            result["runs"][policy] = {**{k: round(v, 2) for k, v in med.items()}, "trials": runs}
        if args.ui:
            result["ui"] = {p: run_job(args, p, tmp, "--_ui") for p in args.policies.split(",")}
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["total_seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

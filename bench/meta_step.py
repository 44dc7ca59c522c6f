#!/usr/bin/env python3
"""Benchmark one MAML meta-step: our functional, task-batched MAML against the
straightforward per-task clone-and-adapt loop (the learn2learn approach).

Both compute the same meta-gradient of the same model on the same tasks:

* ours (``core/fewshot/maml.py``): parameters as a dict, ``functional_call`` +
  ``torch.func.grad`` for the inner loop, all tasks at once under ``vmap``;
* reference (written here, as learn2learn does it): for every task, clone the
  module with its parameters still attached to the graph, take inner steps
  with ``torch.autograd.grad(create_graph=not first_order)`` and
  ``p - lr * g`` written back into the clone, then backpropagate the task's
  query loss into the original parameters.

Prints JSON: median seconds per meta-step of each, the speed-up, and the
largest difference between the two meta-losses and meta-gradients (they must
agree). Interleaved repeats, so CPU contention from other processes affects
both sides alike. Target: speed-up ≥ 2.

On a CPU the ratio depends on the thread settings more than on the code: the
loop's many small operations lose most when OpenMP threads sleep between
operations (``OMP_WAIT_POLICY=PASSIVE``, this script's default, which a shared
CPU needs), and gain little from a second thread. Compare runs with
``--threads 1`` and with ``OMP_WAIT_POLICY=`` (empty: OpenMP's own default,
what QGIS runs with; libgomp warns that the empty value is invalid and uses
its default); the JSON records both settings.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# On a shared CPU, OpenMP threads that spin while waiting for each other slow torch
# down by an order of magnitude; let them sleep instead (must be set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def clone_module(module):
    """learn2learn-style clone: same structure, parameters are differentiable copies."""
    clone = copy.deepcopy(module)
    originals = dict(module.named_parameters())
    for name, _ in list(clone.named_parameters()):
        set_tensor(clone, name, originals[name].clone())
    return clone


def set_tensor(module, name: str, value) -> None:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    module._parameters[leaf] = value  # a non-leaf tensor in place of the Parameter, as learn2learn does


def loop_meta_step(model, xs, ys, xq, yq, ways, lr, steps, first_order):
    """Meta-loss and meta-gradient by a Python loop over tasks (learn2learn approach)."""
    import torch
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    total = 0.0
    for t in range(xs.shape[0]):
        learner = clone_module(model)
        # shared head row expanded to one row per class, as in core/fewshot/maml.py
        for k in ("head.weight", "head.bias"):
            p = dict(learner.named_parameters())[k]
            set_tensor(learner, k, p.expand(ways, *p.shape[1:]))
        for _ in range(steps):
            names, params = zip(*learner.named_parameters())
            loss = F.cross_entropy(learner(xs[t]), ys[t])
            grads = torch.autograd.grad(loss, params, create_graph=not first_order)
            for n, p, g in zip(names, params, grads):
                set_tensor(learner, n, p - lr * (g.detach() if first_order else g))
        q = F.cross_entropy(learner(xq[t]), yq[t]) / xs.shape[0]
        q.backward()
        total += float(q.detach())
    return total, {k: p.grad.clone() for k, p in model.named_parameters()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=8, help="tasks per meta-batch")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--query", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="inner steps")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--bands", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()

    import torch

    from geoml_plugin.core.device import describe_device, resolve_device
    from geoml_plugin.core.fewshot.maml import MAML
    from geoml_plugin.core.models import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    device = resolve_device(args.device)

    def sync():  # CUDA runs asynchronously: wait for the work before reading the clock
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model = build_model("meta_classifier", in_bands=args.bands, num_classes=1).to(device)
    g = torch.Generator().manual_seed(1)
    T, W = args.tasks, args.ways
    xs = torch.randn(T, W * args.shots, args.bands, args.patch, args.patch, generator=g)
    xq = torch.randn(T, W * args.query, args.bands, args.patch, args.patch, generator=g)
    ys = torch.arange(W).repeat_interleave(args.shots).expand(T, -1).contiguous()
    yq = torch.arange(W).repeat_interleave(args.query).expand(T, -1).contiguous()
    xs, xq, ys, yq = (t.to(device) for t in (xs, xq, ys, yq))

    out = {"config": vars(args), "model": "meta_classifier (small CNN, GroupNorm)",
           "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
           "device": describe_device(device),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "(OpenMP default)",
           "load_average_before": os.getloadavg()[0]}
    for order in ("second_order", "first_order"):
        fo = order == "first_order"
        maml = MAML(model, 0.1, args.steps, first_order=fo)
        ours_t, loop_t = [], []
        for r in range(args.repeats + 1):  # first round warms up both
            sync()
            t0 = time.perf_counter()
            grads, loss_ours, _ = maml.meta_gradient(xs, ys, xq, yq, W)
            sync()
            t1 = time.perf_counter()
            loss_loop, grads_loop = loop_meta_step(model, xs, ys, xq, yq, W, 0.1, args.steps, fo)
            sync()
            t2 = time.perf_counter()
            if r:
                ours_t.append(t1 - t0)
                loop_t.append(t2 - t1)
        grad_diff = max(float((grads[k] - grads_loop[k]).abs().max()) for k in grads)
        grad_scale = max(float(grads_loop[k].abs().max()) for k in grads)
        out[order] = {
            "ours_s": round(statistics.median(ours_t), 4), "loop_s": round(statistics.median(loop_t), 4),
            "speedup": round(statistics.median(loop_t) / statistics.median(ours_t), 2),
            "meta_loss_ours": round(loss_ours, 6), "meta_loss_loop": round(loss_loop, 6),
            "meta_loss_abs_diff": abs(loss_ours - loss_loop),
            "max_grad_abs_diff": grad_diff, "max_grad_abs": grad_scale,
            "equal_within_tolerance": abs(loss_ours - loss_loop) < 1e-4 and grad_diff < 1e-4 * max(1.0, grad_scale),
        }
    out["load_average_after"] = os.getloadavg()[0]
    out["target"] = "speedup >= 2 (second order)"
    out["meets_target"] = out["second_order"]["speedup"] >= 2 and out["second_order"]["equal_within_tolerance"]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

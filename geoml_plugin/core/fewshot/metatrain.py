"""Meta-training: the ``geoml:metatrain`` job.

Learns, from many small few-shot tasks (episodes) drawn from labelled
rasters, a network that adapts to new classes and regions from a handful of
points (see ``core/meta``):

* ``protonet`` — prototypical networks: an embedding in which each class is
  well described by the mean of a few examples (fast, the default);
* ``maml`` / ``fomaml`` — an initialisation from which a few gradient steps
  on the support points fit the task (second- or first-order MAML).

The best weights by meta-validation accuracy (episodes from held-out patches)
are saved as a GeoML model. A prototypical meta-model is also a classifier of
its training classes (prototypes from all training patches); a MAML
meta-model is an initialisation and must be adapted with ``geoml:fewshot``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..device import describe_device, resolve_device, seed_everything, torch_for_training, torch_module
from ..errors import InputError
from ..modelfile import ModelMetadata, new_provenance, save_model
from ..outputs import check_outputs
from ..progress import Feedback, ensure_feedback
from ..raster.classes import make_classes
from ..raster.io import raster_info
from ..schedule import warmup_cosine
from ..spec import param, validate
from ..train_state import check_folder
from ..window_scores import default_step
from .choices import ALGORITHM_CHOICES, BACKBONE_CHOICES
from .data import load_patch_bank
from .episodes import EpisodeSampler, PatchBank, holdout_split

ALGORITHMS = ("protonet", "maml", "fomaml")
ALGORITHM_NAMES = {"protonet": "prototypical networks", "maml": "MAML (second order)",
                   "fomaml": "first-order MAML"}
DEFAULT_WIDTHS = (64, 64, 128, 256)
# automatic WAYS: all the usable classes up to this many (6 measured on EuroSAT; an episode costs WAYS ×
# (SHOTS + QUERY) windows)
AUTO_WAYS_MAX = 6
# small_cnn only: pooled features of every block; per-pixel normalisation (maps in one pass per tile)
EMBEDDING_OPTIONS = {"stem_stride": 2, "pool_blocks": 4, "norm": "pixel", "centre_pool": 0.25}


@dataclass
class MetaTrainConfig:
    rasters: list  # one or more training rasters (regions)
    labels: str  # point/polygon layer covering the rasters
    label_field: str
    output_model: str
    algorithm: str = param("protonet", choices=ALGORITHM_CHOICES, label="Algorithm", help=(
        "<b>Algorithm</b>: prototypical networks (each class = the mean of its examples; fastest and most accurate: "
        "on EuroSAT, with 5 points per class of classes never seen in training, 87 % against 69 % for first-order "
        "MAML trained with the same seed), MAML or first-order MAML (learns an initialisation that a few gradient "
        "steps adapt; INNER_STEPS and INNER_LR apply to MAML only)."))
    # None: automatic (auto_ways): every labelled class up to AUTO_WAYS_MAX
    ways: Optional[int] = param(None, kind="int", auto=0, minimum=2, label="Classes per episode (WAYS, 0 = automatic)",
                                help=(
        "<b>WAYS / SHOTS / QUERY</b>: classes per episode, support and query patches per class. Every class used "
        "needs at least SHOTS + QUERY labelled patches. WAYS 0 (automatic) uses all the labelled classes that "
        f"have that many, up to {AUTO_WAYS_MAX}: on EuroSAT, meta-trained on 6 classes and mapping 4 new ones on "
        "another raster from 5 points each, 6-way episodes gave 84.5–86.0 % (four seeds, 2400 updates) against "
        "83.1–84.1 % for 4-way (two seeds)."))
    shots: int = param(5, label="Support patches per class (SHOTS)", minimum=1, help_of="ways")
    query: int = param(5, label="Query patches per class (QUERY)", minimum=1, help_of="ways")
    inner_steps: int = param(5, label="MAML inner steps", minimum=1, help_of="algorithm")  # MAML only
    # MAML only; above 0: the core's range (Processing stopped at 1e-6 before the specification)
    inner_lr: float = param(0.1, label="MAML inner learning rate", minimum=0.0, minimum_exclusive=True,
                            help_of="algorithm")
    # episodes per meta-update (on EuroSAT more updates of one episode beat fewer of four)
    meta_batch: int = param(1, label="Episodes per update (META_BATCH)", minimum=1, help=(
        "<b>META_BATCH</b>: episodes per update. <b>ITERATIONS</b>: updates. The defaults (1600 updates of one "
        "5-shot episode of up to 6 classes with 5 queries per class) train a prototypical model in about 5 "
        "minutes on a 2-core CPU for 64 px patches; MAML takes several times longer. Measured on EuroSAT maps of "
        "classes never seen in training (four seeds), 1600 updates gave 85.7 % at 5 points per class and 73.9 % "
        "at 1 point, 2400 updates 85.1 % and 72.4 %: more updates fit the training classes better, not new ones."))
    iterations: int = param(1600, label="Iterations", minimum=1, help_of="meta_batch")
    backbone: str = param("small_cnn", choices=BACKBONE_CHOICES, label="Network")
    patch_size: int = param(64, label="Patch size (pixels)", minimum=8, maximum=512, help=(
        "<b>Patch size</b>: pixels around each label the model sees."))
    learning_rate: float = param(1e-3, label="Meta learning rate", minimum=1e-6, advanced=True)
    device: str = "auto"
    seed: int = param(0, label="Random seed", minimum=0, advanced=True)
    bands: Optional[list] = None
    val_fraction: float = 0.2
    val_episodes: int = 100
    val_every: int = 0  # iterations between meta-validations (0: about 10 per run)
    max_per_class: int = 1000
    augment: bool = True
    # an existing folder: a checkpoint at every meta-validation, or every ``checkpoint_every`` iterations
    checkpoint_dir: Optional[str] = None
    checkpoint_every: int = 0
    resume: bool = False  # continue from the checkpoint in checkpoint_dir when there is one


@dataclass
class MetaTrainResult:
    output_model: str
    algorithm: str
    val_accuracy: float  # mean query accuracy on held-out episodes (best checkpoint)
    val_accuracy_ci95: float
    val_loss: float
    best_iteration: int
    iterations: int
    classes: list
    patches: int
    seconds: float
    device: str
    history: list = field(default_factory=list)  # (iteration, train loss, train acc, val acc)


def validate_config(cfg: MetaTrainConfig) -> None:
    if cfg.algorithm not in ALGORITHMS:
        raise InputError(f"Unknown algorithm '{cfg.algorithm}'.", f"Choose one of {', '.join(ALGORITHMS)}.")
    for name in ("shots", "query", "meta_batch", "iterations"):
        if getattr(cfg, name) < 1:
            raise InputError(f"{name.upper()} must be at least 1.")
    if cfg.ways is not None and cfg.ways < 2:
        raise InputError("WAYS must be at least 2: an episode is a choice between classes.")
    if cfg.algorithm != "protonet" and (cfg.inner_steps < 1 or cfg.inner_lr <= 0):
        raise InputError("MAML needs INNER_STEPS ≥ 1 and a positive INNER_LR.")
    if cfg.patch_size < 8:
        raise InputError("PATCH_SIZE must be at least 8 pixels.")
    if not isinstance(cfg.rasters, (list, tuple)) or not cfg.rasters:
        raise InputError("No training raster was given.")
    validate(cfg, skip=("inner_steps", "inner_lr") if cfg.algorithm == "protonet" else ())
    inputs = {f"training raster {i + 1}" if len(cfg.rasters) > 1 else "training raster": r
              for i, r in enumerate(cfg.rasters)}
    check_outputs([cfg.output_model], {**inputs, "labels": cfg.labels})
    check_folder(cfg.checkpoint_dir, cfg.resume, cfg.checkpoint_every)


class _Learner:
    """One meta-update and one evaluation per algorithm, on torch tensors."""

    def __init__(self, cfg: MetaTrainConfig, model, device, context: int = 0, session=None):
        from .maml import MAML

        self.torch = torch_for_training()
        self.cfg, self.model, self.device = cfg, model, device
        self.context = context  # px of neighbourhood the bank holds around each window (dropped here)
        self.session = session
        rank = session.rank if session is not None else 0
        self.gen = self.torch.Generator().manual_seed(cfg.seed + 7919 * rank)  # each process its own augmentation
        self.opt = self.torch.optim.Adam(model.parameters(), cfg.learning_rate)
        self.maml = None
        if cfg.algorithm in ("maml", "fomaml"):
            self.maml = MAML(model, cfg.inner_lr, cfg.inner_steps, first_order=cfg.algorithm == "fomaml")

    def tensors(self, batch, augment: bool):
        """Episode tensors: the windows alone, shifted at random within the margin they were read with when
        ``augment`` (the bank's context is for the prototypes of the training classes, see
        :func:`run_metatrain`)."""
        from ..augment import augment as aug
        from ..augment import crop

        torch = self.torch
        xs, ys, xq, yq = (torch.from_numpy(np.ascontiguousarray(a)) for a in batch)
        c = self.context
        P = self.cfg.patch_size
        if c:
            xs, xq = crop(xs, xs.shape[-1] - 2 * c), crop(xq, xq.shape[-1] - 2 * c)
        if augment:
            xs, xq = aug(xs, self.gen, patch=P), aug(xq, self.gen, patch=P)
        else:
            xs, xq = crop(xs, P), crop(xq, P)
        return [t.to(self.device) for t in (xs, ys, xq, yq)]

    def _proto(self, xs, ys, xq, yq, ways):
        from .protonet import proto_loss

        t, ns = xs.shape[:2]
        z = self.model.embed(self.torch.cat([xs.flatten(0, 1), xq.flatten(0, 1)]))
        zs, zq = z[: t * ns].unflatten(0, (t, ns)), z[t * ns:].unflatten(0, (t, -1))
        losses, accs = zip(*(proto_loss(zs[i], ys[i], zq[i], yq[i], ways) for i in range(t)))
        return self.torch.stack(losses).mean(), self.torch.stack(accs).mean()

    def step(self, batch, lr: float, ways: int, share: float = 1.0) -> tuple[float, float]:
        """One meta-update from ``batch`` (this process's episodes, ``share`` of the global meta-batch: their
        gradient is weighted by it and summed over the processes, i.e. averaged over all episodes)."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.model.train()
        xs, ys, xq, yq = self.tensors(batch, self.cfg.augment)
        sync = None
        if self.session is not None:
            def sync():
                self.session.average_gradients(self.model.parameters(), share)
        if self.maml is not None:
            return self.maml.meta_step(self.opt, xs, ys, xq, yq, ways, sync)
        loss, acc = self._proto(xs, ys, xq, yq, ways)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if sync is not None:
            sync()
        self.opt.step()
        return float(loss.detach()), float(acc)

    def evaluate(self, batches, ways: int) -> tuple[float, float, float]:
        """Mean query loss, accuracy and its 95 % interval over validation episodes (under torchrun each
        process scores its share of the batches and the sums are all-reduced: every process gets the figures
        of all episodes)."""
        if self.session is None:
            return self._summarise(*self._scores(batches, ways))
        first, count = self.session.share(len(batches))
        losses, accs = self._scores(batches[first:first + count], ways)
        accs_a = np.asarray(accs, dtype=np.float64)
        n, lo, ac, ac2 = self.session.all_reduce_sum([len(accs_a), float(np.sum(losses)), accs_a.sum(),
                                                       (accs_a ** 2).sum()])
        mean = ac / max(n, 1.0)
        std = math.sqrt(max(ac2 / max(n, 1.0) - mean ** 2, 0.0))
        return float(lo / max(n, 1.0)), float(mean), float(1.96 * std / math.sqrt(n) if n > 1 else 0.0)

    @staticmethod
    def _summarise(losses, accs) -> tuple[float, float, float]:
        accs_a = np.asarray(accs)
        ci = 1.96 * accs_a.std() / math.sqrt(len(accs_a)) if len(accs_a) > 1 else 0.0
        return float(np.mean(losses)), float(accs_a.mean()), float(ci)

    def _scores(self, batches, ways: int) -> tuple[list, list]:
        """Query loss and accuracy of every episode of ``batches``."""
        self.model.eval()
        losses, accs = [], []
        for batch in batches:
            xs, ys, xq, yq = self.tensors(batch, False)
            if self.maml is not None:
                for i in range(xs.shape[0]):  # one task at a time keeps memory flat
                    lo, ac = self.maml.evaluate(xs[i:i + 1], ys[i:i + 1], xq[i:i + 1], yq[i:i + 1], ways)
                    losses.append(lo)
                    accs.append(ac)
            else:
                with self.torch.no_grad():
                    for i in range(xs.shape[0]):
                        lo, ac = self._proto(xs[i:i + 1], ys[i:i + 1], xq[i:i + 1], yq[i:i + 1], ways)
                        losses.append(float(lo))
                        accs.append(float(ac))
        return losses, accs


def auto_ways(bank: PatchBank, shots: int, query: int) -> int:
    """The automatic WAYS: the classes with at least SHOTS + QUERY labelled patches in the raster that has
    the most of them, up to :data:`AUTO_WAYS_MAX` (at least 2: fewer is refused with the episode sampler's
    message, which lists the counts)."""
    need = shots + query
    usable = max((sum(len(i) >= need for i in classes.values()) for classes in bank.groups().values()), default=0)
    return max(2, min(AUTO_WAYS_MAX, usable))


def _validation_batches(val: PatchBank, cfg: MetaTrainConfig, log) -> tuple[list, int]:
    """Fixed held-out episodes (same for every evaluation), or none when too few patches."""
    if len(val) == 0:
        log("Too few labelled patches to hold any out: meta-validation uses training patches.")
        return [], cfg.ways
    counts = [len(i) for classes in val.groups().values() for i in classes.values()]
    n_classes = max(len(classes) for classes in val.groups().values())
    ways = min(cfg.ways, n_classes)
    query = max(1, min(cfg.query, min(counts) - cfg.shots))
    if ways < 2:
        log("Held-out patches cover fewer than 2 classes: meta-validation uses training patches.")
        return [], cfg.ways
    sampler = EpisodeSampler(val, ways, cfg.shots, query, seed=cfg.seed + 1)
    n = max(1, cfg.val_episodes)
    return [sampler.batch(min(8, n - i)) for i in range(0, n, 8)], ways


def build_meta_network(cfg: MetaTrainConfig, in_bands: int, num_classes: int):
    from ..models import build_model

    args = dict(in_bands=in_bands, num_classes=num_classes, backbone=cfg.backbone, widths=list(DEFAULT_WIDTHS))
    if cfg.backbone == "small_cnn":
        args.update(EMBEDDING_OPTIONS)
    return build_model("meta_classifier", **args), args


def run_metatrain(cfg: MetaTrainConfig, feedback: Optional[Feedback] = None) -> MetaTrainResult:
    """Meta-train and save the best model (see the module docstring).

    Under ``torchrun`` with several processes this is one data-parallel run: every process draws the same
    global meta-batch of ``cfg.meta_batch`` episodes and trains on its share of them, the gradients are
    averaged over all episodes before each update (so N processes take the updates one process would take,
    each in about 1/N of the time), meta-validation is shared and all-reduced, only rank 0 writes the model,
    and a failure on any rank stops them all (``distributed``)."""
    from .. import distributed

    validate_config(cfg)
    torch_module()  # a clear message when torch is missing, before any work
    with distributed.session(cfg.device) as session:
        return _metatrain(cfg, feedback, session)


def _metatrain(cfg: MetaTrainConfig, feedback: Optional[Feedback], session) -> MetaTrainResult:
    fb = ensure_feedback(feedback) if session is None else session.feedback(feedback)
    t0 = time.perf_counter()
    world = session.world_size if session is not None else 1
    if cfg.meta_batch < world:
        raise InputError(f"META_BATCH is {cfg.meta_batch}: too few episodes for {world} processes.",
                         f"META_BATCH is the episodes of all processes together: use at least {world} "
                         f"(a multiple of {world} shares them evenly).")
    seed_everything(cfg.seed)
    device = session.device if session is not None else resolve_device(cfg.device)
    fb.log(f"Device: {describe_device(device)}"
           + (f" × {world} processes (rank 0 shown)" if world > 1 else "")
           + f"; {ALGORITHM_NAMES[cfg.algorithm]}, {cfg.shots}-shot, {cfg.query} queries per class"
           + (f", {cfg.meta_batch} episodes per update shared by the processes" if world > 1 else ""))

    # Episodes show the windows alone. Trained for the last 30 % of 2400 iterations on windows with the 32 px
    # of context their map shows them (4× the compute per patch), a meta-model mapped new EuroSAT classes no
    # better (5 shots 82.4 % against 83.2 %, 1 shot 69.7 % against 71.2 %, prototypes taken with the context
    # in both, scored as the map embeds the chips). The context is read for the prototypes of the training
    # classes, which the map of the meta-model itself compares with its windows.
    context = meta_context(cfg)
    bank, stats = load_patch_bank(list(cfg.rasters), cfg.labels, cfg.label_field, cfg.patch_size, cfg.bands,
                                  cfg.max_per_class, cfg.seed, fb.sub(0.0, 0.05),
                                  margin=context + (default_step(cfg.patch_size) if cfg.augment else 0))
    if cfg.ways is not None and len(bank.class_names) < cfg.ways:
        raise InputError(
            f"WAYS is {cfg.ways} but the labels have only {len(bank.class_names)} class(es): "
            f"{', '.join(bank.class_names)}.", "Lower WAYS (0 = automatic) or label more classes.")
    train, val = holdout_split(bank, cfg.shots, cfg.query, cfg.val_fraction, cfg.seed)
    automatic = cfg.ways is None
    if automatic:
        cfg = dataclasses.replace(cfg, ways=auto_ways(train, cfg.shots, cfg.query))
    fb.log(f"WAYS automatic: {cfg.ways}-way episodes (the classes with at least SHOTS + QUERY training patches, "
           f"up to {AUTO_WAYS_MAX})" if automatic else f"{cfg.ways}-way episodes (WAYS)")
    sampler = EpisodeSampler(train, cfg.ways, cfg.shots, cfg.query, seed=cfg.seed)
    val_batches, val_ways = _validation_batches(val, cfg, fb.log)
    if not val_batches:
        vs = EpisodeSampler(train, cfg.ways, cfg.shots, cfg.query, seed=cfg.seed + 1)
        val_batches = [vs.batch(min(8, cfg.val_episodes - i)) for i in range(0, max(1, cfg.val_episodes), 8)]
    fb.log(f"{len(bank)} labelled patches of {len(bank.class_names)} classes in {len(stats)} raster(s); "
           f"{len(train)} for training, {len(val)} held out for meta-validation ({val_ways}-way episodes)")
    if session is not None and any(v != [len(bank), len(train), len(val)]
                                   for v in session.exchange("metatrain/data", [len(bank), len(train), len(val)])):
        raise InputError("The processes of this distributed run read different training data.",
                         "Give every process the same rasters and labels (the same files on every node).")

    in_bands = bank.x.shape[1]
    n_head = 1 if cfg.algorithm != "protonet" else len(bank.class_names)
    model, arch_args = build_meta_network(cfg, in_bands, n_head)
    model = model.to(device)
    if session is not None:
        session.broadcast_parameters(model)
    learner = _Learner(cfg, model, device, context, session)
    best, history, it = _meta_loop(cfg, learner, sampler, val_batches, val_ways, session, fb,
                                   (len(bank), len(train), len(val)))

    if cfg.algorithm == "protonet":
        fb.progress(0.96, "prototypes of the training classes")
        set_class_prototypes(model, bank, device, context)
    meta = _model_metadata(cfg, arch_args, bank, stats, best, it)
    meta.extra["fewshot"]["world_size"] = world
    fb.progress(0.99, "saving")
    if session is None or session.is_main:  # only rank 0 writes; the others wait until it has (or has failed)
        save_model(cfg.output_model, model, meta)
    if session is not None:
        session.barrier("metatrain/saved")
    secs = time.perf_counter() - t0
    fb.log(f"Best meta-validation accuracy {best[0]:.1%} ± {best[1]:.1%} at iteration {best[3]}; "
           f"saved {cfg.output_model} ({secs:.0f} s)")
    fb.done()
    return MetaTrainResult(os.path.abspath(cfg.output_model), cfg.algorithm, best[0], best[1], best[2], best[3],
                           cfg.iterations, list(bank.class_names), len(bank), secs, str(device), history)


class _MetaCheckpoints:
    """Meta-training checkpoints (``core/train_state.py``): the weights, Adam's state, the best weights so far
    and their figures, the history and running sums, and the random states (the episode sampler's, every
    process's augmentation generator, torch's) — so a resumed run draws the same episodes and ends with the
    weights of an uninterrupted one. Rank 0 writes; every rank reads."""

    def __init__(self, cfg: MetaTrainConfig, session, n_bank: int, n_train: int, n_val: int):
        self.cfg, self.session = cfg, session
        self.fp = {"kind": "metatrain", "rasters": [os.path.abspath(r) for r in cfg.rasters], "labels": str(cfg.labels),
                   "label_field": cfg.label_field, "algorithm": cfg.algorithm, "ways": cfg.ways, "shots": cfg.shots,
                   "query": cfg.query, "meta_batch": cfg.meta_batch, "iterations": cfg.iterations,
                   "backbone": cfg.backbone, "patch_size": cfg.patch_size, "seed": cfg.seed,
                   "world_size": session.world_size if session is not None else 1,
                   "patches": [n_bank, n_train, n_val]}

    def save(self, learner, sampler, it, best, best_state, history, run_loss, run_acc) -> None:
        from .. import train_state as ts

        torch = learner.torch
        gen = ts.b64(learner.gen.get_state())
        gens = [gen] if self.session is None else self.session.exchange(f"metatrain/checkpoint/{it}", gen)
        if self.session is not None and not self.session.is_main:
            return
        tensors = ts.module_tensors("model", learner.model)
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
        opt, groups = ts.optimizer_tensors("opt", learner.opt)
        tensors.update(opt)
        tensors["rng.torch"] = torch.get_rng_state()
        for r, g in enumerate(gens):
            tensors[f"rng.gen.{r}"] = ts.unb64(g)
        state = {"iteration": it, "fingerprint": self.fp, "param_groups": groups, "best": list(best),
                 "history": [list(h) for h in history], "run_loss": run_loss, "run_acc": run_acc,
                 "sampler_rng": sampler.rng.bit_generator.state}
        ts.write(self.cfg.checkpoint_dir, f"iteration-{it:07d}", tensors, state)

    def restore(self, learner, sampler):
        """(iterations done, best, best weights, history, running losses, running accuracies), with the
        learner's and sampler's states restored; None when there is no checkpoint."""
        from .. import train_state as ts

        found = ts.read(self.cfg.checkpoint_dir, self.fp)
        if found is None:
            return None
        state, tensors = found
        torch = learner.torch
        ts.load_module("model", learner.model, tensors)
        ts.load_optimizer("opt", learner.opt, tensors, state["param_groups"], learner.device)
        rank = self.session.rank if self.session is not None else 0
        learner.gen.set_state(tensors[f"rng.gen.{rank}"])
        torch.set_rng_state(tensors["rng.torch"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        best_state = {k[5:]: v.to(learner.device) for k, v in tensors.items() if k.startswith("best.")}
        return (int(state["iteration"]), tuple(state["best"]), best_state, [tuple(h) for h in state["history"]],
                list(state["run_loss"]), list(state["run_acc"]))


def _meta_loop(cfg: MetaTrainConfig, learner: "_Learner", sampler, val_batches, val_ways: int, session, fb,
               sizes: tuple) -> tuple:
    """The meta-updates, meta-validation and checkpoints; leaves the best weights in the model and returns
    (best (acc, ci, loss, iteration), history, the last iteration)."""
    part = session.share(cfg.meta_batch) if session is not None else None
    share = part[1] / cfg.meta_batch if part is not None else 1.0
    val_every = cfg.val_every or max(1, cfg.iterations // 10)
    best = (-1.0, 0.0, 0.0, 0)  # acc, ci, loss, iteration
    best_state = copy.deepcopy(learner.model.state_dict())
    history, run_loss, run_acc = [], [], []
    ck = _MetaCheckpoints(cfg, session, *sizes) if cfg.checkpoint_dir else None
    done = 0
    if ck is not None and cfg.resume:
        restored = ck.restore(learner, sampler)
        if restored is not None:
            done, best, best_state, history, run_loss, run_acc = restored
            fb.log(f"Resumed from the checkpoint after iteration {done} in {cfg.checkpoint_dir}.")
    every = cfg.checkpoint_every or val_every
    it = done
    train_fb = fb.sub(0.05, 0.95)
    for it in range(done + 1, cfg.iterations + 1):
        lr = warmup_cosine(cfg.learning_rate, it - 1, cfg.iterations)  # cosine decay towards 0, no warm-up
        loss, acc = learner.step(sampler.batch(cfg.meta_batch, part), lr, cfg.ways, share)
        if not math.isfinite(loss):
            raise InputError("Meta-training diverged (the loss is not a number).",
                             "Lower the learning rate or INNER_LR.")
        run_loss.append(loss * share)
        run_acc.append(acc * share)
        if it % val_every == 0 or it == cfg.iterations:
            v_loss, v_acc, v_ci = learner.evaluate(val_batches, val_ways)
            t_loss, t_acc = np.sum(run_loss) / len(run_loss), np.sum(run_acc) / len(run_acc)
            if session is not None:  # the processes' shares of each update's episodes, summed
                t_loss, t_acc = session.all_reduce_sum([t_loss, t_acc])
            history.append((it, float(t_loss), float(t_acc), v_acc))
            fb.log(f"iteration {it}/{cfg.iterations}: train loss {t_loss:.3f}, "
                   f"train acc {t_acc:.1%}, meta-validation acc {v_acc:.1%} ± {v_ci:.1%}")
            run_loss, run_acc = [], []
            if v_acc > best[0]:
                best = (v_acc, v_ci, v_loss, it)
                best_state = copy.deepcopy(learner.model.state_dict())
        train_fb.progress(it / cfg.iterations, f"iteration {it}/{cfg.iterations}")
        if ck is not None and (it % every == 0 or it == cfg.iterations):
            ck.save(learner, sampler, it, best, best_state, history, run_loss, run_acc)
    learner.model.load_state_dict(best_state)
    return best, history, it


def meta_context(cfg: MetaTrainConfig) -> int:
    """Pixels of neighbourhood around each window that maps of this meta-model's network see
    (``window_scores.map_context``; 0 for MAML, which meta-trains on windows alone)."""
    from ..window_scores import map_context

    if cfg.algorithm != "protonet":
        return 0
    return map_context(build_meta_network(cfg, 1, 2)[0], cfg.patch_size)


def set_class_prototypes(model, bank: PatchBank, device, context: int = 0, batch: int = 256) -> None:
    """Turn the head into the nearest-prototype classifier of the bank's classes (windows embedded with
    ``context`` px of their neighbourhood, which the bank holds)."""
    from ..augment import crop
    from .protonet import prototype_head, prototypes

    torch = torch_module()
    model.eval()
    P = bank.x.shape[-1] - 2 * bank.margin + 2 * context
    embed = (lambda x: model.embed(x, context)) if context else model.embed
    with torch.no_grad():
        z = torch.cat([embed(crop(torch.from_numpy(bank.x[i:i + batch]), P).to(device))
                       for i in range(0, len(bank), batch)])
        w, b = prototype_head(prototypes(z, torch.from_numpy(bank.y).to(device), len(bank.class_names)))
        model.head.weight.copy_(w)
        model.head.bias.copy_(b)


def _model_metadata(cfg: MetaTrainConfig, arch_args: dict, bank: PatchBank, stats, best, iterations) -> ModelMetadata:
    info = raster_info(cfg.rasters[0])
    bands = stats[0].bands or cfg.bands or list(range(1, bank.x.shape[1] + 1))
    return ModelMetadata(
        architecture="meta_classifier", arch_args=arch_args, task="classification", output="patch",
        in_bands=bank.x.shape[1], patch_size=cfg.patch_size, band_indices=list(bands),
        band_names=[info.band_names[b - 1] for b in bands] if len(info.band_names) >= max(bands) else [],
        norm_mean=[float(v) for v in stats[0].mean], norm_std=[float(v) for v in stats[0].std],
        classes=make_classes(bank.class_names), pixel_size=list(info.pixel_size), crs_wkt=info.crs_wkt,
        provenance=new_provenance(method=f"meta-training ({ALGORITHM_NAMES[cfg.algorithm]})",
                                  sources=[os.path.basename(p) for p in cfg.rasters],
                                  labels=os.path.basename(cfg.labels.split("|")[0]), label_field=cfg.label_field),
        metrics={"meta_validation_accuracy": round(best[0], 4), "meta_validation_ci95": round(best[1], 4),
                 "meta_validation_loss": round(best[2], 4), "best_iteration": best[3]},
        extra={"fewshot": {
            "algorithm": cfg.algorithm, "ways": cfg.ways, "shots": cfg.shots, "query": cfg.query,
            "inner_steps": cfg.inner_steps, "inner_lr": cfg.inner_lr, "meta_batch": cfg.meta_batch,
            "iterations": iterations, "seed": cfg.seed, "per_raster_normalisation": True,
            # a MAML head is one shared row: the file is an initialisation, not a classifier
            "initialisation_only": cfg.algorithm != "protonet",
        }},
    )

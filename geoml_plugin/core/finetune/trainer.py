"""The training loop of fine-tuning: epochs over in-memory patches, with validation.

Kept lean on purpose, because on a CPU every millisecond outside the network
counts (the benchmark compares it with a bare PyTorch loop):

* batches are slices of preloaded tensors (``TrainingData``); on a GPU the
  whole set is kept on the device when it takes under a quarter of the free
  memory, else each batch is copied from pinned memory asynchronously; network and batches are channels-last (NHWC), which
  oneDNN on CPUs and tensor cores on GPUs run fastest (≈1.5× here on a CPU);
* augmentation is a random shift of each patch by up to ``margin`` pixels
  (patches are read with real context around them; patch models also keep
  ``context`` pixels around their window, which the network sees but does not
  pool, as on the map: ``window_scores.window_output``) and the eight
  flips/rotations of the square (the dihedral group), drawn per sample; masks
  and target rasters move with their patch; classifiers also get a mild
  per-patch contrast and per-band level jitter (all from ``augment``);
* AdamW (no decay on norms and biases) with a one-cycle schedule (warm-up,
  then cosine decay: ``schedule.warmup_cosine``), label smoothing for classes;
* class balance: class-balanced sampling for patch classes, loss weights for
  pixel classes of polygons / points, when the largest class has over 1.5× the
  smallest (a label raster's patches are drawn per class already: no weights);
* pixel regression: L1 loss (the map's absolute error is what an analyst reads);
* the time left (``remaining.RemainingTime``) in the progress text and epoch log;
* CUDA: autocast in bf16 where supported, else fp16 with gradient scaling;
  a CUDA out-of-memory error halves the batch, says so, and redoes the epoch
  (one process only: under torchrun it stops the job with a clear message).

Under torchrun (``session``, see ``distributed``) the network is wrapped in
DistributedDataParallel: every rank draws the same shuffled order each epoch
and takes every N-th sample of each global batch of ``batch_size`` (the global
batch, and so the learning rate, are those of one process); BatchNorm becomes
SyncBatchNorm on CUDA (on gloo/CPU each rank normalises with its own part of
the batch); augmentation draws differ per rank; validation is split among the
ranks and its sums (loss, confusion matrix or error sums) are all-reduced.

``feedback.progress`` is called after every batch, so Cancel stops the run
within one batch.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..augment import crop_with, jitter_intensity, random_dihedral
from ..errors import GeoMLError
from ..remaining import RemainingTime
from ..schedule import warmup_cosine
from .metrics import (
    classification_metrics,
    confusion_matrix,
    metrics_from_confusion,
    regression_from_sums,
    regression_metrics,
    regression_sums,
)
from .trainset import TrainingData

IMBALANCE_RATIO = 1.5
# Pixel classes (segmentation): the loss is cross-entropy with class weights (median frequency / frequency,
# clipped to 0.1–10) plus DENSE_DICE × a soft Dice loss over the classes in the batch (measured neutral on the
# Dubai parts, so off). Label rasters are sampled per class already (``read_raster_labels``), so their weights
# are raised to RASTER_WEIGHT_POWER (0: none): the full weights on top of that sampling counted the imbalance
# twice and painted rare classes over common ones (docs/segmentation-budget.md).
DENSE_DICE = 0.0
RASTER_WEIGHT_POWER = 0.0
DENSE_LABEL_SMOOTHING = 0.1
DENSE_VALUE_LOSS = "l1"  # pixel regression: "l1" (absolute error: NAIP RGB → NIR map MAE 15.3 DN against 16.2 DN with "mse")
# Validation passes of a run, at most about this many, evenly spread and always after the last epoch: a long
# run (EuroSAT's 127 automatic epochs) validated after every epoch spent 13 % of its time there, for a
# learning curve that needs far fewer points. Validation changes nothing in training, so the model is the same.
VALIDATION_PASSES = 25


def validation_every(epochs: int) -> int:
    """Validate after every this many epochs (and after the last): 1 up to VALIDATION_PASSES epochs."""
    return max(1, -(-int(epochs) // VALIDATION_PASSES))


def validates(epoch: int, epochs: int) -> bool:
    """Whether the run validates after epoch ``epoch`` (0-based) of ``epochs``."""
    return (epoch + 1) % validation_every(epochs) == 0 or epoch + 1 >= epochs


@dataclass
class TrainSpec:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    mixup: float = 0.0  # patch classes: Beta(α, α) mixing of pairs of patches (0 = off)
    augment: bool = True
    intensity_jitter: float = 0.1  # classes, with augment: patch contrast ×(1 ± j), band offsets N(0, j/2)
    freeze_backbone: bool = False
    warmup: float = 0.15  # fraction of the run spent warming the learning rate up
    context_from: float = 0.0  # patch models with context: fraction of the epochs trained on the window alone first


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: Optional[float]
    val_score: Optional[float]  # accuracy (classes) or RMSE in target units (values)
    learning_rate: float
    seconds: float
    train_seconds: float


@dataclass
class TrainOutcome:
    history: list = field(default_factory=list)  # EpochRecord
    metrics: dict = field(default_factory=dict)
    batch_size: int = 0
    train_seconds: float = 0.0  # time in training steps only
    samples_seen: int = 0
    balance: str = ""
    remaining: list = field(default_factory=list)  # the remaining-time estimates shown (seconds), in order

    def history_dicts(self) -> list:
        return [asdict(h) for h in self.history]


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def param_groups(model, weight_decay: float) -> list:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, model, data: TrainingData, train_idx: np.ndarray, val_idx: np.ndarray, spec: TrainSpec,
                 device, seed: int = 0, log=print, session=None):
        from ..device import torch_for_training

        self.torch = torch = torch_for_training()  # before the optimizer: a triton import crashes the QGIS desktop
        self.session = session
        self.rank, self.world = (session.rank, session.world_size) if session is not None else (0, 1)
        if session is not None and device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # channels-last: oneDNN (CPU) and tensor cores (CUDA) run convolutions faster in NHWC
        self.model = model.to(device, memory_format=torch.channels_last)
        self.data, self.spec, self.device, self.log = data, spec, device, log
        self.train_idx, self.val_idx = np.asarray(train_idx), np.asarray(val_idx)
        self.gen = torch.Generator().manual_seed(seed + 7919 * self.rank)  # augmentation: its own draws per rank
        self.net = None if session is None else _ddp(self.model, data.context, device)
        self.checkpoints = None  # a checkpoint.Checkpoints: saved after every epoch, restored before the first
        self.checkpoint_every = 0  # also every this many steps within an epoch (0: at the end of epochs only)
        self.rng = np.random.default_rng(seed)
        cuda = device.type == "cuda"
        self.amp_dtype = None
        if cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.x = torch.from_numpy(data.x)
        self.y = torch.from_numpy(data.y)
        self.on_device = False
        if cuda and self.x.nbytes + self.y.nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]:
            # small enough: keep the whole set on the GPU, batches are then device-side slices
            self.x, self.y, self.on_device = self.x.to(device), self.y.to(device), True
        if spec.freeze_backbone:
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        self.opt = torch.optim.AdamW(param_groups(model, spec.weight_decay), lr=spec.learning_rate)
        self.class_weights, self.sample_p, self.balance = self._balance()

    # -- data ----------------------------------------------------------------
    def _balance(self):
        d = self.data
        if not d.is_classifier:
            return None, None, ""
        k = len(d.class_names)
        ytr = d.y[self.train_idx]
        counts = np.bincount(ytr[ytr >= 0].ravel(), minlength=k).astype(float)
        present = counts[counts > 0]
        if present.max() <= IMBALANCE_RATIO * present.min():
            return None, None, "classes balanced enough: plain shuffling"
        if d.dense:
            power = RASTER_WEIGHT_POWER if d.labels is not None and d.labels.geometry == "raster" else 1.0
            if power == 0:
                return None, None, "unbalanced classes: patches drawn per class from the label raster, no loss weights"
            freq = counts / counts.sum()
            w = np.where(counts > 0, np.median(freq[counts > 0]) / np.maximum(freq, 1e-12), 0.0)
            w = np.clip(w, 0.1, 10.0) ** power
            return self.torch.tensor(w, dtype=self.torch.float32, device=self.device), None, \
                "unbalanced classes: loss weights " + ", ".join(f"{n} {v:.2f}" for n, v in zip(d.class_names, w))
        p = 1.0 / counts[ytr]
        return None, p / p.sum(), "unbalanced classes: class-balanced sampling"

    def _order(self) -> np.ndarray:
        if self.sample_p is not None:
            return self.rng.choice(self.train_idx, len(self.train_idx), replace=True, p=self.sample_p)
        return self.rng.permutation(self.train_idx)

    def _epoch_costs(self) -> list:
        """Relative cost of a training step in each epoch, for the time left: the pixels the network sees
        (a context model's window alone, or window + context)."""
        d = self.data
        with_context = ((d.patch + 2 * d.context) / d.patch) ** 2 if d.context and d.patch else 1.0
        return [1.0 if self._window_alone(e) else with_context for e in range(self.spec.epochs)]

    def _window_alone(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` trains a context model on its window alone (``TrainSpec.context_from``): a
        64-px window costs 2.25× less than window + context, and the last epochs, with the context, teach the
        network what the map shows it."""
        return bool(self.data.context) and epoch < round(self.spec.context_from * self.spec.epochs)

    def _batch(self, idx: np.ndarray, shift: bool = False):
        """Inputs and targets of samples ``idx``: the centre patch, or randomly shifted ones (with their
        ``context`` pixels around them, for patch models trained as they map)."""
        torch = self.torch
        it = torch.from_numpy(idx).to(self.x.device)
        xb, yb = self.x.index_select(0, it), self.y.index_select(0, it)
        if self.data.margin > self.data.context:
            dense = self.data.dense
            xb, yc = crop_with(xb, yb if dense else None, self.data.patch + 2 * self.data.context,
                               self.gen if shift else None)
            yb = yc if dense else yb
        if self.device.type == "cuda" and not self.on_device:  # through pinned memory, asynchronously
            xb, yb = xb.pin_memory().to(self.device, non_blocking=True), yb.pin_memory().to(self.device, non_blocking=True)
        return xb.float(), yb

    def forward(self, xb):
        """The model's output; a patch model trained with ``context`` pools only its window's cells of the
        features computed over window + context, exactly what ``window_scores.DenseWindows`` computes for
        each window of a map (the features near the window's edge see the real neighbouring pixels)."""
        from ..window_scores import window_output

        return window_output(self.model, xb, self.data.context)

    def _train_forward(self, xb, alone: bool = False):
        """:meth:`forward` in a training step (``alone``: a window without its context, a plain call):
        through DistributedDataParallel under torchrun."""
        if self.net is not None:
            return self.net(xb, alone=alone)
        return self.model(xb) if alone else self.forward(xb)

    # -- loss ----------------------------------------------------------------
    def loss(self, out, yb, mix=None):
        """The batch's loss; ``mix`` = (λ, perm) for a mixup batch (patch classes): the same blend of the losses
        of the two patches' labels as of the patches (one call per training step)."""
        torch = self.torch
        F = torch.nn.functional
        out = out.float()
        kind = self.data.kind
        if kind == "patch_class":
            ce = F.cross_entropy(out, yb, weight=self.class_weights, label_smoothing=self.spec.label_smoothing)
            if mix is None:
                return ce
            lam, perm = mix
            return lam * ce + (1 - lam) * F.cross_entropy(out, yb[perm], weight=self.class_weights,
                                                          label_smoothing=self.spec.label_smoothing)
        if kind == "dense_class":
            ce = F.cross_entropy(out, yb, weight=self.class_weights, ignore_index=-1,
                                 label_smoothing=DENSE_LABEL_SMOOTHING)
            return ce + DENSE_DICE * dice_loss(out, yb) if DENSE_DICE else ce
        if kind == "patch_value":
            return F.mse_loss(out[:, 0], yb)
        ok = torch.isfinite(yb)
        err = out[:, 0] - torch.nan_to_num(yb)
        err = err.abs() if DENSE_VALUE_LOSS == "l1" else err**2
        return (err * ok).sum() / ok.sum().clamp(min=1)

    def _autocast(self):
        torch = self.torch
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    # -- training --------------------------------------------------------------
    def _set_train_mode(self):
        self.model.train()
        if self.spec.freeze_backbone:
            self.model.backbone.eval()  # keep pretrained normalisation statistics

    def _epoch(self, epoch: int, bs: int, feedback, last_val: str, start: Optional[dict] = None
               ) -> tuple[float, int]:
        """One epoch; ``start`` (from a checkpoint taken within it): its first steps are done, the shuffling
        state before its order was drawn is already restored, and ``run_loss``/``seen`` are their sums."""
        import copy

        torch = self.torch
        spec = self.spec
        self.epoch_rng = copy.deepcopy(self.rng.bit_generator.state)  # the order can be drawn again on resume
        order = self._order()
        n = len(order)
        steps = max(1, n // bs) if n >= bs else 1
        total = spec.epochs * steps
        run_loss = torch.full((), float(start["run_loss"]) if start else 0.0, device=self.device)
        seen = int(start["seen"]) if start else 0
        first = int(start["step"]) if start else 0
        self.remaining.start_epoch(epoch, steps)
        self._set_train_mode()
        for s in range(first, steps):
            idx = order[s * bs : (s + 1) * bs] if n >= bs else order
            if len(idx) < 2 * self.world:  # the same on every rank: the global batch
                continue
            idx = idx[self.rank :: self.world]
            xb, yb = self._batch(idx, shift=spec.augment)
            alone = self._window_alone(epoch)
            if alone:  # the window cut out of its context: the network sees it alone (zero padding)
                c = self.data.context
                xb = xb[:, :, c:xb.shape[-2] - c, c:xb.shape[-1] - c]
            if spec.augment:
                xb, yb2 = random_dihedral(xb, self.gen, yb if self.data.dense else None)
                yb = yb2 if self.data.dense else yb
                if spec.intensity_jitter > 0 and self.data.is_classifier:
                    xb = jitter_intensity(xb, spec.intensity_jitter, self.gen)
            lr = warmup_cosine(spec.learning_rate, epoch * steps + s, total, spec.warmup, 25, 1e4)
            for g in self.opt.param_groups:
                g["lr"] = lr
            lam, perm = 1.0, None
            if spec.mixup > 0 and self.data.kind == "patch_class":
                lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=self.gen))).beta(
                    spec.mixup, spec.mixup))
                perm = torch.randperm(len(idx), generator=self.gen).to(xb.device)
                xb = lam * xb + (1 - lam) * xb[perm]
            with self._autocast():
                xb = xb.contiguous(memory_format=torch.channels_last)
                out = self._train_forward(xb, alone)
            loss = self.loss(out, yb, None if perm is None else (lam, perm))
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            run_loss += loss.detach() * len(idx)
            seen += len(idx)
            self.remaining.step()
            if s % 8 == 7 or s == steps - 1:
                left = self.remaining.text()
                msg = (f"epoch {epoch + 1}/{spec.epochs} · loss {run_loss.item() / max(seen, 1):.3f}{last_val}"
                       + (f" · {left}" if left else ""))
            else:
                msg = feedback.last_message
            feedback.progress((epoch + (s + 1) / steps) / spec.epochs, msg)
            if (self.checkpoints is not None and self.checkpoint_every and (s + 1) % self.checkpoint_every == 0
                    and s + 1 < steps):
                self.checkpoints.save(self, epoch, self.outcome, bs, step=s + 1, partial=(run_loss.item(), seen))
        if self.session is not None:
            total_loss, seen = self.session.all_reduce_sum([run_loss.item(), seen])
            return float(total_loss) / max(seen, 1), int(seen)
        return run_loss.item() / max(seen, 1), seen

    def predict(self, idx: np.ndarray, bs: int):
        """Raw network outputs (float32, CPU) for samples ``idx``, in eval mode."""
        torch = self.torch
        self.model.eval()
        outs = []
        with torch.inference_mode():
            for s in range(0, len(idx), max(1, bs)):
                xb, _ = self._batch(idx[s : s + bs])
                with self._autocast():
                    outs.append(self.forward(xb.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(outs) if outs else torch.zeros(0)

    def evaluate(self, idx: np.ndarray, bs: int) -> tuple[float, float, dict]:
        """(loss, score, metrics) on samples ``idx``; score = accuracy or RMSE (target units)."""
        if self.session is not None:
            return self._evaluate_shared(idx, bs)
        torch = self.torch
        out = self.predict(idx, bs)
        yb = torch.cat([self._batch(idx[s : s + bs])[1].cpu() for s in range(0, len(idx), max(1, bs))])
        cw, self.class_weights = self.class_weights, None
        try:
            loss = float(self.loss(out, yb.cpu()))
        finally:
            self.class_weights = cw
        d = self.data
        if d.is_classifier:
            pred = out.argmax(1).numpy()
            truth = yb.numpy()
            m = classification_metrics(truth, pred, d.class_names, iou=d.dense)
            return loss, m.get("overall_accuracy", 0.0), m
        mean, std = d.target["mean"], d.target["std"]
        pred = out[:, 0].numpy() * std + mean
        truth = yb.numpy() * std + mean
        m = regression_metrics(truth, pred)
        return loss, m.get("rmse", float("nan")), m

    def _outputs_and_targets(self, idx: np.ndarray, bs: int):
        torch = self.torch
        out = self.predict(idx, bs)
        yb = torch.cat([self._batch(idx[s : s + bs])[1].cpu() for s in range(0, len(idx), max(1, bs))])
        return out, yb

    def _evaluate_shared(self, idx: np.ndarray, bs: int) -> tuple[float, float, dict]:
        """:meth:`evaluate` under torchrun: each rank takes every N-th sample; the loss sum and the confusion
        matrix (classes) or error sums (values) are all-reduced, so every rank gets the metrics of all."""
        d = self.data
        mine = idx[self.rank :: self.world]
        k = len(d.class_names)
        loss_sum, count = 0.0, 0
        stats = np.zeros(k * k if d.is_classifier else 6)
        if len(mine):
            out, yb = self._outputs_and_targets(mine, bs)
            cw, self.class_weights = self.class_weights, None
            try:
                loss_sum, count = float(self.loss(out, yb)) * len(mine), len(mine)
            finally:
                self.class_weights = cw
            if d.is_classifier:
                stats = confusion_matrix(yb.numpy(), out.argmax(1).numpy(), k).ravel()
            else:
                mean, std = d.target["mean"], d.target["std"]
                stats = regression_sums(yb.numpy() * std + mean, out[:, 0].numpy() * std + mean)
        total = self.session.all_reduce_sum(np.concatenate([[loss_sum, count], stats]))
        loss = float(total[0]) / max(float(total[1]), 1.0)
        if d.is_classifier:
            m = metrics_from_confusion(np.rint(total[2:]).reshape(k, k), d.class_names, iou=d.dense)
            return loss, m.get("overall_accuracy", 0.0), m
        m = regression_from_sums(total[2:])
        return loss, m.get("rmse", float("nan")), m

    def _sync_buffers(self) -> None:
        """Rank 0's BatchNorm statistics on every rank (each rank updated its own in its last step)."""
        if self.session is not None:
            for b in self.model.buffers():
                self.session.dist.broadcast(b, 0)

    def fit(self, feedback) -> TrainOutcome:
        torch = self.torch
        spec = self.spec
        bs = min(spec.batch_size, max(2, len(self.train_idx)))
        outcome = TrainOutcome(balance=self.balance)
        if self.balance:
            self.log(self.balance)
        last_val = ""
        epoch, start = 0, None
        final = None  # the metrics of the last epoch's validation
        self.outcome = outcome
        restored = self.checkpoints.restore(self, outcome) if self.checkpoints is not None else None
        if restored is not None:
            epoch, bs, start = restored
            if start is not None:  # a checkpoint within an epoch: draw that epoch's order again
                self.rng.bit_generator.state = start["epoch_rng"]
        n = len(self.train_idx)
        self.remaining = RemainingTime(spec.epochs, max(1, n // bs) if n >= bs else 1,
                                       -(-len(self.val_idx) // (2 * bs)) if len(self.val_idx) else 0,
                                       self._epoch_costs(), [e for e in range(spec.epochs) if validates(e, spec.epochs)])
        while epoch < spec.epochs:
            t0 = time.perf_counter()
            try:
                train_loss, seen = self._epoch(epoch, bs, feedback, last_val, start)
                start = None
            except GeoMLError:
                raise
            except Exception as exc:
                if not _is_oom(exc) or self.device.type != "cuda":
                    raise
                if self.session is not None:
                    raise GeoMLError(f"The GPU of rank {self.rank} ran out of memory with {bs // self.world} patches.",
                                     "Use a smaller BATCH_SIZE (the batch of all processes together).") from exc
                self.opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                start = None  # the epoch starts again with the smaller batch
                if bs <= 2:
                    raise GeoMLError("The GPU ran out of memory even with a batch of 2 patches.",
                                     "Use a smaller patch size or a smaller backbone, or run on the CPU.") from exc
                bs //= 2
                self.log(f"CUDA ran out of memory; retrying epoch {epoch + 1} with a batch size of {bs}.")
                continue
            t_train = time.perf_counter() - t0
            self._sync_buffers()
            val_loss = val_score = None
            if len(self.val_idx) and validates(epoch, spec.epochs):
                self.remaining.validation_started()
                val_loss, val_score, metrics = self.evaluate(self.val_idx, 2 * bs)
                if epoch + 1 >= spec.epochs:
                    final = metrics  # the final evaluation: nothing changes after the last epoch
                self.remaining.validation_done()
                last_val = (f" · val accuracy {val_score:.1%}" if self.data.is_classifier
                            else f" · val RMSE {val_score:.4g}")
            rec = EpochRecord(epoch + 1, round(train_loss, 5), None if val_loss is None else round(val_loss, 5),
                              None if val_score is None else round(val_score, 5),
                              warmup_cosine(spec.learning_rate, epoch + 1, spec.epochs, spec.warmup, 25, 1e4),
                              round(time.perf_counter() - t0, 3), round(t_train, 3))
            outcome.history.append(rec)
            outcome.train_seconds += t_train
            outcome.samples_seen += seen
            self.log(f"epoch {epoch + 1}/{spec.epochs}: train loss {train_loss:.4f}"
                     + (f", val loss {val_loss:.4f}{last_val.replace(' · ', ', ')}" if val_loss is not None else "")
                     + f" ({rec.seconds:.1f} s{self._left_after(epoch)})")
            epoch += 1
            if self.checkpoints is not None:
                self.checkpoints.save(self, epoch, outcome, bs)
        outcome.batch_size = bs
        outcome.remaining = list(self.remaining.reported)
        if len(self.val_idx):
            outcome.metrics = final if final is not None else self.evaluate(self.val_idx, 2 * bs)[2]
            outcome.metrics["evaluated_on"] = "validation"
        else:
            _, _, outcome.metrics = self.evaluate(self.train_idx, 2 * bs)
            outcome.metrics["evaluated_on"] = "training (no validation set: optimistic)"
        return outcome


    def _left_after(self, epoch: int) -> str:
        """'; about 6 min left' for the epoch log line (from the second-to-last epoch on: nothing)."""
        if epoch + 1 >= self.spec.epochs:
            return ""
        self.remaining.start_epoch(epoch + 1)
        left = self.remaining.text()
        return f"; {left}" if left else ""


def dice_loss(logits, y):
    """1 − the mean soft Dice coefficient of the classes present in ``y`` (pixels of -1 ignored).

    Dice scores each class by its overlap with itself, whatever its share of the pixels, so rare classes
    (roads, water) weigh as much as the dominant one; the cross-entropy beside it keeps the gradients
    well-behaved early on."""
    import torch

    k = logits.shape[1]
    valid = (y >= 0).unsqueeze(1)
    p = torch.softmax(logits, 1) * valid
    onehot = torch.nn.functional.one_hot(y.clamp(min=0), k).permute(0, 3, 1, 2).to(p.dtype) * valid
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean()


def _ddp(model, context: int, device):
    """``model`` as it trains (its window pooled out of window + context) in DistributedDataParallel."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from ..window_scores import window_output

    class _Windowed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, alone: bool = False):
            return self.model(x) if alone else window_output(self.model, x, context)

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(_Windowed(), device_ids=ids)

"""Fine-tuning checkpoints: resume a run after a crash, a kill or a restart by ``torchrun --max-restarts``.

After every epoch (and, with ``checkpoint_every`` N > 0, every N steps within an epoch) ``checkpoint_dir`` gets
``epoch-NNNN.safetensors`` (``epoch-NNNN-step-SSSSSS.safetensors`` within an epoch: network weights and buffers, the
optimiser's state tensors, each rank's augmentation generator and the global torch RNG) and then
``checkpoint.json`` (the epoch, the batch size, the history, the numpy shuffling state, the gradient
scaler, the optimiser's hyper-parameters, and a fingerprint of the run), each written to a temporary name
and renamed; the JSON is written last and names its tensors file, so a crash while saving leaves the
previous checkpoint whole (``core/train_state.py``, shared with meta-training and GAN training). No pickle anywhere. The learning-rate schedule is a function of the step, so
the epoch and step restore it; the shuffled order of an epoch is drawn from the restored numpy state, so a
resumed run sees the same samples in the same order: a checkpoint within an epoch keeps the numpy state from
before that epoch's order was drawn and the steps done (the sampler position), and the run goes on with the
next batch.

``resume``: continue from the checkpoint in ``checkpoint_dir`` when there is one (else start afresh) and
refuse one made by a different run (other data, network, batch, epochs or number of processes). Under
torchrun every rank reads the checkpoint (the folder must be shared) and rank 0 writes it.
"""
from __future__ import annotations

import os
from typing import Optional

from ..errors import InputError
from ..train_state import b64, load_module, load_optimizer, module_tensors, optimizer_tensors, read, unb64, write


def fingerprint(cfg, world_size: int, n_train: int, n_val: int, epochs: int) -> dict:
    """What a checkpoint must agree with to be resumed."""
    return {"input": os.path.abspath(cfg.input_path), "labels": str(cfg.labels), "label_field": cfg.label_field,
            "task": cfg.task, "backbone": cfg.backbone, "patch_size": int(cfg.patch_size),
            "batch_size": int(cfg.batch_size), "epochs": int(epochs), "seed": int(cfg.seed),
            "world_size": int(world_size), "n_train": int(n_train), "n_val": int(n_val)}


class Checkpoints:
    """Saves and restores a :class:`~.trainer.Trainer`'s state in ``folder``."""

    def __init__(self, folder: str, fp: dict, resume: bool = False):
        if not os.path.isdir(folder):
            raise InputError(f"The checkpoint folder '{folder}' does not exist.")
        self.folder, self.fp, self.resume = folder, fp, resume

    def save(self, trainer, epoch: int, outcome, bs: int, step: int = 0, partial: Optional[tuple] = None) -> None:
        """After ``epoch`` epochs (and, with ``step`` > 0, ``step`` steps of the next one, whose loss sum and
        sample count so far are ``partial``): every rank's generator state (and partial sums) is gathered,
        rank 0 writes."""
        import torch

        mine = [b64(trainer.gen.get_state()), list(partial or (0.0, 0))]
        ranks = [mine]
        if trainer.session is not None:
            ranks = trainer.session.exchange(f"checkpoint/{epoch}/{step}", mine)
        if trainer.rank != 0:
            return
        tensors = module_tensors("model", trainer.model)
        opt_tensors, param_groups = optimizer_tensors("opt", trainer.opt)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        for r, (g, _) in enumerate(ranks):
            tensors[f"rng.gen.{r}"] = unb64(g)
        state = {"epoch": epoch, "batch_size": bs, "fingerprint": self.fp,
                 "history": outcome.history_dicts(), "train_seconds": outcome.train_seconds,
                 "samples_seen": outcome.samples_seen, "numpy_rng": trainer.rng.bit_generator.state,
                 "scaler": trainer.scaler.state_dict(), "param_groups": param_groups}
        if step:  # within epoch ``epoch`` + 1: the sampler's position
            state.update(step=step, epoch_rng=trainer.epoch_rng, partial=[r[1] for r in ranks])
        write(self.folder, f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else ""), tensors, state)

    def restore(self, trainer, outcome) -> Optional[tuple]:
        """(epochs done, batch size, position within the next epoch or None) from the checkpoint, with the
        trainer's state restored; None when there is no checkpoint to resume. The position is a dict: the
        steps done (``step``), the shuffling state to draw that epoch's order again (``epoch_rng``) and this
        rank's loss sum and sample count so far (``run_loss``, ``seen``)."""
        found = read(self.folder, self.fp) if self.resume else None
        if found is None:
            return None
        import torch

        from .trainer import EpochRecord

        state, tensors = found
        load_module("model", trainer.model, tensors)
        load_optimizer("opt", trainer.opt, tensors, state["param_groups"], trainer.device)
        trainer.gen.set_state(tensors[f"rng.gen.{trainer.rank}"])
        torch.set_rng_state(tensors["rng.torch"])
        trainer.rng.bit_generator.state = state["numpy_rng"]
        trainer.scaler.load_state_dict(state["scaler"])
        outcome.history = [EpochRecord(**h) for h in state["history"]]
        outcome.train_seconds, outcome.samples_seen = state["train_seconds"], state["samples_seen"]
        start = None
        if state.get("step"):
            loss, seen = state["partial"][trainer.rank]
            start = {"step": int(state["step"]), "epoch_rng": state["epoch_rng"], "run_loss": float(loss),
                     "seen": int(seen)}
            where = f"step {state['step']} of epoch {state['epoch'] + 1}"
        else:
            where = f"epoch {state['epoch']}"
        trainer.log(f"Resumed from the checkpoint after {where} in {self.folder}.")
        return int(state["epoch"]), int(state["batch_size"]), start

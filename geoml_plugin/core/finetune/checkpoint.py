"""Fine-tuning checkpoints: resume a run after a crash, a kill or a restart by ``torchrun --max-restarts``.

After every epoch (and, with ``checkpoint_every`` N > 0, every N steps within an epoch) ``checkpoint_dir`` gets
``epoch-NNNN.safetensors`` (``epoch-NNNN-step-SSSSSS.safetensors`` within an epoch: network weights and buffers, the
optimiser's state tensors, each rank's augmentation generator and the global torch RNG) and then
``checkpoint.json`` (the epoch, the batch size, the history, the numpy shuffling state, the gradient
scaler, the optimiser's hyper-parameters, and a fingerprint of the run), each written to a temporary name
and renamed; the JSON is written last and names its tensors file, so a crash while saving leaves the
previous checkpoint whole. No pickle anywhere. The learning-rate schedule is a function of the step, so
the epoch and step restore it; the shuffled order of an epoch is drawn from the restored numpy state, so a
resumed run sees the same samples in the same order: a checkpoint within an epoch keeps the numpy state from
before that epoch's order was drawn and the steps done (the sampler position), and the run goes on with the
next batch.

``resume``: continue from the checkpoint in ``checkpoint_dir`` when there is one (else start afresh) and
refuse one made by a different run (other data, network, batch, epochs or number of processes). Under
torchrun every rank reads the checkpoint (the folder must be shared) and rank 0 writes it.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Optional

from ..errors import InputError
from ..outputs import write_text_atomic

STATE_FILE = "checkpoint.json"


def fingerprint(cfg, world_size: int, n_train: int, n_val: int, epochs: int) -> dict:
    """What a checkpoint must agree with to be resumed."""
    return {"input": os.path.abspath(cfg.input_path), "labels": str(cfg.labels), "label_field": cfg.label_field,
            "task": cfg.task, "backbone": cfg.backbone, "patch_size": int(cfg.patch_size),
            "batch_size": int(cfg.batch_size), "epochs": int(epochs), "seed": int(cfg.seed),
            "world_size": int(world_size), "n_train": int(n_train), "n_val": int(n_val)}


def _b64(t) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str):
    import torch

    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


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
        from safetensors.torch import save_file

        mine = [_b64(trainer.gen.get_state()), list(partial or (0.0, 0))]
        ranks = [mine]
        if trainer.session is not None:
            ranks = trainer.session.exchange(f"checkpoint/{epoch}/{step}", mine)
        if trainer.rank != 0:
            return
        gens = [r[0] for r in ranks]
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
        opt = trainer.opt.state_dict()
        for i, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        for r, g in enumerate(gens):
            tensors[f"rng.gen.{r}"] = _unb64(g)
        name = f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else "") + ".safetensors"
        path = os.path.join(self.folder, name)
        save_file(tensors, path + ".part")
        os.replace(path + ".part", path)
        state = {"epoch": epoch, "tensors": name, "batch_size": bs, "fingerprint": self.fp,
                 "history": outcome.history_dicts(), "train_seconds": outcome.train_seconds,
                 "samples_seen": outcome.samples_seen, "numpy_rng": trainer.rng.bit_generator.state,
                 "scaler": trainer.scaler.state_dict(),
                 "param_groups": [{k: v for k, v in g.items()} for g in opt["param_groups"]]}
        if step:  # within epoch ``epoch`` + 1: the sampler's position
            state.update(step=step, epoch_rng=trainer.epoch_rng, partial=[r[1] for r in ranks])
        write_text_atomic(os.path.join(self.folder, STATE_FILE), json.dumps(state))
        for f in os.listdir(self.folder):  # earlier epochs' tensors
            if f.startswith("epoch-") and f.endswith(".safetensors") and f != name:
                os.remove(os.path.join(self.folder, f))

    def restore(self, trainer, outcome) -> Optional[tuple]:
        """(epochs done, batch size, position within the next epoch or None) from the checkpoint, with the
        trainer's state restored; None when there is no checkpoint to resume. The position is a dict: the
        steps done (``step``), the shuffling state to draw that epoch's order again (``epoch_rng``) and this
        rank's loss sum and sample count so far (``run_loss``, ``seen``)."""
        path = os.path.join(self.folder, STATE_FILE)
        if not self.resume or not os.path.exists(path):
            return None
        from safetensors.torch import load_file

        from .trainer import EpochRecord

        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        if state.get("fingerprint") != self.fp:
            diff = sorted(k for k in self.fp if (state.get("fingerprint") or {}).get(k) != self.fp[k])
            raise InputError(f"The checkpoint in '{self.folder}' is from a different run ({', '.join(diff)} differ).",
                             "Resume with the same settings, or choose an empty checkpoint folder.")
        tensors = load_file(os.path.join(self.folder, state["tensors"]))
        trainer.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state: dict = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                opt_state.setdefault(int(i), {})[name] = v.to(trainer.device) if v.ndim else v
        trainer.opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
        trainer.gen.set_state(tensors[f"rng.gen.{trainer.rank}"])
        import torch

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


def has_checkpoint(folder: Optional[str]) -> bool:
    return bool(folder) and os.path.exists(os.path.join(folder, STATE_FILE))

"""Checkpoint files of iteration-based training jobs (meta-training, GAN training): write, read, check.

A checkpoint is two files in the job's ``checkpoint_dir``: ``<name>.safetensors`` (tensors: weights, optimiser
state, RNG states) written first, then ``checkpoint.json`` (everything else, and the name of its tensors file),
each to a temporary name then renamed, so a crash while saving leaves the previous checkpoint whole. No
pickle anywhere: optimiser states are split into their tensors and their JSON hyper-parameters, RNG states are
uint8 tensors. Fine-tuning's epoch checkpoints (``finetune/checkpoint.py``) are written the same way.

A checkpoint names the run it belongs to (``fingerprint``: the settings that change what is trained); resuming
from one of another run is refused with the settings that differ.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Optional

from .errors import InputError
from .outputs import write_text_atomic

STATE_FILE = "checkpoint.json"


def check_folder(folder: Optional[str], resume: bool, every: int = 0, what: str = "checkpoint_dir") -> None:
    """Refuse settings that cannot work, before any work: a missing folder, resume or an interval without one."""
    if folder and not os.path.isdir(folder):
        raise InputError(f"The checkpoint folder '{folder}' does not exist.", "Create it, or choose another.")
    if resume and not folder:
        raise InputError(f"Resuming needs the folder of the checkpoints ({what}).")
    if every < 0 or (every and not folder):
        raise InputError(f"Checkpoints every N iterations need N ≥ 0 and the folder of the checkpoints ({what}).")


def b64(t) -> str:
    """A byte tensor (e.g. a torch Generator's state) as text, to pass between processes as JSON."""
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def unb64(s: str):
    import torch

    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def module_tensors(prefix: str, module) -> dict:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_module(prefix: str, module, tensors: dict) -> None:
    n = len(prefix) + 1
    module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})


def optimizer_tensors(prefix: str, opt) -> tuple[dict, list]:
    """(tensors, param_groups): an optimiser's state without pickling (``load_optimizer`` puts it back)."""
    import torch

    sd = opt.state_dict()
    tensors = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    return tensors, [dict(g) for g in sd["param_groups"]]


def load_optimizer(prefix: str, opt, tensors: dict, param_groups: list, device) -> None:
    state: dict = {}
    n = len(prefix) + 1
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            i, name = k[n:].split(".", 1)
            state.setdefault(int(i), {})[name] = v.to(device) if v.ndim else v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def write(folder: str, name: str, tensors: dict, state: dict) -> None:
    """Write ``name``.safetensors then ``checkpoint.json`` (``state`` + the tensors' file name); remove the
    tensors of earlier checkpoints."""
    from safetensors.torch import save_file

    fname = f"{name}.safetensors"
    path = os.path.join(folder, fname)
    save_file(tensors, path + ".part")
    os.replace(path + ".part", path)
    write_text_atomic(os.path.join(folder, STATE_FILE), json.dumps(dict(state, tensors=fname)))
    for f in os.listdir(folder):
        if f.endswith(".safetensors") and f != fname and f.startswith(("iteration-", "epoch-")):
            os.remove(os.path.join(folder, f))


def read(folder: str, fingerprint: dict) -> Optional[tuple[dict, dict]]:
    """(state, tensors) of the checkpoint in ``folder``, or None when there is none; InputError when it is
    from another run."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(path):
        return None
    from safetensors.torch import load_file

    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    if state.get("fingerprint") != fingerprint:
        diff = sorted(k for k in fingerprint if (state.get("fingerprint") or {}).get(k) != fingerprint[k])
        raise InputError(f"The checkpoint in '{folder}' is from a different run ({', '.join(diff) or 'its kind'} "
                         "differ).", "Resume with the same settings, or choose an empty checkpoint folder.")
    return state, load_file(os.path.join(folder, state["tensors"]))


def has_checkpoint(folder: Optional[str]) -> bool:
    return bool(folder) and os.path.exists(os.path.join(folder, STATE_FILE))

"""Starting weights for fine-tuning: none, ImageNet, a catalogue entry, or an earlier GeoML model.

* ``none`` — random initialisation (training from scratch).
* ``imagenet`` or a name from the weights catalogue (``weights_catalog.py``;
  ``imagenet`` is the ImageNet entry of the chosen ResNet): read from the local
  torch hub cache (``$TORCH_HOME/hub/checkpoints``, by default
  ``~/.cache/torch/hub/checkpoints``) and downloaded only when the user allowed
  it (``download_weights``: a machine without internet must not hang and a job
  never downloads unasked); otherwise the message names the file, its URL, its
  checksum and the folder to copy it into. Loading, key mapping, the band-aware
  first layer and the input scaling are ``pretrained.py``'s. ``load_imagenet_state``
  and ``apply_imagenet`` below are the older direct ImageNet path (RGB kernels
  spread over the bands by ``resnets.adapt_first_conv``), kept for scripts;
  both read with ``torch.load(weights_only=True)``, torch's restricted unpickler
  that only rebuilds tensors and cannot run code.
* a path to a GeoML model file — transfer learning: its *backbone* (the
  ``backbone.*`` tensors) starts the new model, which gets a new head for the
  new classes. The file must have the same backbone and band count.
"""
from __future__ import annotations

import os

from ..errors import InputError, ModelFileError

WEIGHT_CHOICES = ("none", "imagenet")  # or a path to a GeoML model file


def catalogue_entry(weights: str, backbone: str):
    """The catalogue entry ``weights`` names (``imagenet``: that of ``backbone``), else None."""
    from .weights_catalog import find_entry

    return find_entry(weights, backbone)


def is_model_file(weights: str) -> bool:
    from .weights_catalog import find_entry

    w = (weights or "").strip()
    return bool(w) and w.lower() not in WEIGHT_CHOICES and find_entry(w) is None


def torchvision_weights_enum(backbone: str):
    from ..deps_check import require_torchvision

    tv = require_torchvision()
    names = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
             "mobilenet_v2": "MobileNet_V2_Weights"}
    if backbone not in names:
        raise InputError(
            f"ImageNet weights exist only for torchvision's ResNets and MobileNetV2, not for '{backbone}'.",
            "Choose resnet18, resnet34, resnet50 or mobilenet_v2, or WEIGHTS=none.",
        )
    return getattr(tv.models, names[backbone]).DEFAULT


def imagenet_checkpoint_path(backbone: str) -> tuple[str, str]:
    """(expected local file, download URL) of the ImageNet weights of ``backbone``."""
    import torch

    url = torchvision_weights_enum(backbone).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)), url


def load_imagenet_state(backbone: str) -> dict:
    import torch

    path, url = imagenet_checkpoint_path(backbone)
    if not os.path.isfile(path):
        raise InputError(
            f"The ImageNet weights for {backbone} are not on this computer (missing file {path}), and GeoML does "
            "not download during a job (this machine may be offline).",
            f"Download {url} on a computer with internet and copy it to {os.path.dirname(path)}, "
            "or choose WEIGHTS=none.",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"The ImageNet weights file {path} cannot be read ({exc}).",
                         "Delete it and copy a fresh download.") from exc


def apply_imagenet(model, backbone: str, in_bands: int) -> str:
    """Load ImageNet weights into ``model.backbone``; returns a log line."""
    from ..models.resnets import adapt_first_conv

    state = {k: v for k, v in load_imagenet_state(backbone).items() if not k.startswith(("fc.", "classifier."))}
    first = model.backbone.first_conv
    if first in state:
        state[first] = adapt_first_conv(state[first], in_bands)
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"The ImageNet weights file does not fit {backbone}: {exc}",
                         "Delete the file from the torch cache and copy a fresh download.") from exc
    how = "" if in_bands == 3 else f" (RGB kernels repeated over {in_bands} bands, scaled by 3/{in_bands})"
    return f"Started from torchvision's ImageNet weights for {backbone}{how}."


def backbone_of(meta) -> str:
    """Backbone name of a GeoML model (patch nets: the architecture; U-Nets: their encoder)."""
    return str(meta.arch_args.get("backbone", meta.architecture))


def check_transfer_source(path: str, backbone: str, in_bands: int):
    """Metadata of an earlier GeoML model if its backbone can start this run, else a clear error.

    The file is checked like any model that is loaded (:func:`modelfile.check_model_file`): its metadata
    must describe the tensors it holds, so a damaged or tampered file is refused before anything is built."""
    from ..modelfile import check_model_file, read_metadata

    if os.path.isdir(path):
        raise InputError(f"WEIGHTS '{path}' is a folder, not a model file.", "Choose the GeoML model file itself.")
    if not os.path.isfile(path):
        raise InputError(f"WEIGHTS must be 'none', 'imagenet', a catalogue name or an existing GeoML model file; "
                         f"'{path}' is none of these.", "Catalogue names: geoml_plugin.core.finetune.weights_catalog "
                         "(the Weights… dialog lists them).")
    from .backbones import BACKBONES

    meta = read_metadata(path)
    src = backbone_of(meta)
    if src not in BACKBONES:
        raise ModelFileError(
            f"The weights file '{os.path.basename(path)}' has no backbone Fine-tune can reuse ({meta.describe()}).",
            "Choose a model made by Fine-tune, or WEIGHTS=none / imagenet.",
        )
    if src != backbone:
        raise ModelFileError(
            f"The weights file '{os.path.basename(path)}' has backbone '{src}', but this run uses '{backbone}'.",
            f"Choose BACKBONE={src} to reuse it, or WEIGHTS=none / imagenet.",
        )
    if meta.in_bands != in_bands:
        raise ModelFileError(
            f"The weights file '{os.path.basename(path)}' was trained on {meta.in_bands} band(s); "
            f"this run uses {in_bands}.",
            "Select the same bands as for that model, or WEIGHTS=none / imagenet.",
        )
    check_model_file(path, meta)
    return meta


def apply_transfer(model, path: str) -> str:
    """Copy the backbone of an earlier GeoML model file into ``model.backbone``."""
    from ..modelfile import load_state

    state = {k[len("backbone."):]: v for k, v in load_state(path).items() if k.startswith("backbone.")}
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"The backbone in '{os.path.basename(path)}' does not fit: {exc}") from exc
    return f"Started from the backbone of {os.path.basename(path)} ({len(state)} tensors); new head."

"""Pretrained weights from the catalogue: cache, consent, safe loading, key mapping, band-aware first layer.

* **Cache**: torch's hub cache (``$TORCH_HOME/hub/checkpoints``), under the
  published file name, where torchvision and TorchGeo look too.
* **Consent**: a missing file is downloaded only when the caller allows it
  (``allow_download``: ``DOWNLOAD_WEIGHTS=yes`` in Processing, or the analyst
  said yes in the dialog); otherwise the message names the file, its URL, its
  checksum and the folder to copy it into.
* **Safe loading**: ``.safetensors`` with safetensors; ``.pth`` / ``.ckpt``
  with ``torch.load(weights_only=True)``, torch's restricted unpickler that only
  rebuilds tensors and plain containers. A file that needs full unpickling
  (it could run code) is refused with the reason, never loaded.
* **Key mapping**: checkpoints wrap their tensors differently (a bare state
  dict; ``{"state_dict": …}`` from Lightning; ``{"model": …}``) and prefix
  them (``module.``, ``encoder.``, ``backbone.``, ``model.``, MoCo's
  ``encoder_q.``). Those are unwrapped and stripped; torchvision's and timm's
  ResNet names are then GeoML's backbone names; the classifier (``fc.*``) is
  dropped. Anything left that the backbone does not have is an error.
* **Band-aware first layer**: each raster band named like one of the weights'
  bands (band description, or the analyst's mapping ``WEIGHT_BANDS``) takes
  that band's pretrained kernels; other bands take the mean kernel. When no
  band can be named, a raster with the weights' band count is read in the
  weights' order; otherwise the kernels are spread as before
  (``resnets.adapt_first_conv``). The scaling the weights expect (e.g. ÷ 10000)
  applies to the named bands and replaces GeoML's per-band statistics in the
  model file (``norm_mean`` / ``norm_std``), so prediction applies it too.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError, ModelFileError
from .weights_catalog import ALIASES, WeightsEntry

PREFIXES = ("module.", "encoder_q.", "encoder.", "backbone.", "model.", "net.")
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.")


def cache_dir() -> str:
    """torch's hub cache folder of checkpoints, found without importing torch (dialogs open torch-free):
    ``$TORCH_HOME/hub/checkpoints``, else ``$XDG_CACHE_HOME/torch/…``, else ``~/.cache/torch/…``
    (torch.hub.get_dir's rule); once torch is imported, ``torch.hub.get_dir()`` (honours ``set_dir``)."""
    import sys

    if "torch" in sys.modules:
        return os.path.join(sys.modules["torch"].hub.get_dir(), "checkpoints")
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME") or "~/.cache", "torch")
    return os.path.join(os.path.expanduser(home), "hub", "checkpoints")


def cached_path(entry: WeightsEntry) -> str:
    return os.path.join(cache_dir(), entry.filename)


def is_cached(entry: WeightsEntry) -> bool:
    return os.path.isfile(cached_path(entry))


def missing_message(entry: WeightsEntry) -> InputError:
    from .download import check_clause

    path = cached_path(entry)
    return InputError(
        f"The weights '{entry.name}' are not on this computer (missing file {path}), and this job may not "
        "download them (the computer may be offline, and a job downloads only when allowed).",
        f"Allow the download (DOWNLOAD_WEIGHTS=yes, or answer Yes in the Fine-tune dialog), or on a computer with "
        f"internet download {entry.url}{check_clause(entry.sha256, entry.hash_prefix)}, and add it here "
        f"with Weights… → Add file… (or geoml weights add FILE, or copy it to {os.path.dirname(path)}); or choose "
        "WEIGHTS=none.")


def ensure_weights(entry: WeightsEntry, allow_download: bool = False, feedback=None,
                   proxies: Optional[dict] = None) -> str:
    """The cached file of ``entry``, downloaded first when missing and ``allow_download``."""
    path = cached_path(entry)
    if os.path.isfile(path):
        return path
    if not allow_download:
        raise missing_message(entry)
    from .download import download_file

    return download_file(entry.url, path, sha256=entry.sha256, hash_prefix=entry.hash_prefix, feedback=feedback,
                         proxies=proxies)


def add_local_file(path: str, name: str = "") -> tuple[WeightsEntry, str]:
    """Cache a weights file fetched by hand (on a computer with internet, a USB stick, a shared drive) as the
    catalogue entry ``name``, or the entry whose file name or published checksum it has; returns (entry, cached
    path). The published SHA-256 is checked first: a wrong or damaged file is refused and nothing is cached.
    The copy is written to a temporary name and renamed when complete."""
    import shutil

    from .download import ChecksumError, checksum_ok, expected_text, sha256_of
    from .weights_catalog import CATALOGUE, find_entry

    if not os.path.isfile(path):
        raise InputError(f"No weights file at {path}.", "Choose the .pth file you downloaded.")
    digest = sha256_of(path)
    if name:
        entry = find_entry(name)
        if entry is None:
            raise InputError(f"Unknown weights '{name}'.", "Known: " + ", ".join(e.name for e in CATALOGUE) + ".")
    else:
        base = os.path.basename(path)
        entry = next((e for e in CATALOGUE if e.filename == base), None) or next(
            (e for e in CATALOGUE if (e.sha256 or e.hash_prefix) and checksum_ok(digest, e.sha256, e.hash_prefix)),
            None)
        if entry is None:
            raise InputError(
                f"{base} is not a file of GeoML's weights catalogue: neither its name nor its SHA-256 ({digest[:12]}…) "
                "is one the catalogue publishes.",
                "Download the file named in the catalogue (Weights… lists them with their addresses), or give "
                "an earlier GeoML model file as WEIGHTS.")
    if not checksum_ok(digest, entry.sha256, entry.hash_prefix):
        raise ChecksumError(
            f"{os.path.basename(path)} has SHA-256 {digest}, not the published {expected_text(entry.sha256, entry.hash_prefix)} "
            f"of '{entry.name}'; nothing was cached.",
            f"The file may be incomplete or another one: download {entry.url} again.")
    dest = cached_path(entry)
    if os.path.abspath(path) != os.path.abspath(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = dest + ".adding"
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise InputError(f"Could not copy {os.path.basename(path)} into {os.path.dirname(dest)}: {exc}.",
                             "Check the free space and that the folder is writable.") from exc
    return entry, dest


def verify_cached(entry: WeightsEntry) -> tuple[bool, str]:
    """(ok, digest) of the cached file against the published checksum."""
    from .download import checksum_ok, sha256_of

    digest = sha256_of(cached_path(entry))
    return checksum_ok(digest, entry.sha256, entry.hash_prefix), digest


# -- safe loading and key mapping ---------------------------------------------------------------------------
def safe_load(path: str) -> dict:
    """Tensors of a weights file without running code from it (see the module docstring)."""
    import torch

    name = os.path.basename(path)
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise ModelFileError(f"The weights file {name} cannot be read ({exc}).") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for anything beyond tensors and containers
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "unpickl" in text.lower():
            raise ModelFileError(
                f"The weights file {name} was refused: it needs full unpickling, which could run code from the "
                f"file ({text.splitlines()[0] if text else type(exc).__name__}).",
                "Use weights saved as a plain state dict (torch.save(model.state_dict())) or as .safetensors.") from exc
        raise ModelFileError(f"The weights file {name} cannot be read ({exc}).",
                             "Delete it and download it again.") from exc
    return obj


def unwrap_state(obj) -> dict:
    """The tensor dict inside a checkpoint: a bare state dict, or under 'state_dict' / 'model' / 'teacher'."""
    import torch

    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            inner = next((obj[k] for k in ("state_dict", "model", "teacher", "student") if isinstance(obj.get(k), dict)),
                         None)
            if inner is not None:
                obj = inner
                continue
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
        break
    raise ModelFileError("The weights file holds no tensors GeoML can use (no state dict found).")


def backbone_state(obj, backbone) -> dict:
    """``obj`` (a loaded checkpoint) as a state dict for GeoML's ``backbone`` (torchvision / timm names).

    Prefixes are stripped while they are not backbone names; the classifier is dropped; extra or missing
    tensors other than the first convolution's are refused with their names."""
    state = unwrap_state(obj)
    wanted = set(backbone.state_dict())
    out = {}
    for key, value in state.items():
        k = key
        while k not in wanted and k.startswith(PREFIXES):
            k = k.split(".", 1)[1]
        if k.startswith(CLASSIFIER_PREFIXES) and k not in wanted:
            continue
        if k.endswith("num_batches_tracked") and k not in wanted:
            continue
        out[k] = value
    missing = sorted(wanted - set(out) - {k for k in wanted if k.endswith("num_batches_tracked")})
    extra = sorted(set(out) - wanted)
    if missing or extra:
        show = lambda ks: ", ".join(ks[:5]) + (" …" if len(ks) > 5 else "")  # noqa: E731
        raise ModelFileError(
            "The weights do not fit this backbone"
            + (f"; missing: {show(missing)}" if missing else "") + (f"; unexpected: {show(extra)}" if extra else "")
            + ".", "Choose weights made for the selected backbone.")
    return out


# -- bands -------------------------------------------------------------------------------------------------
def band_key(name: str) -> str:
    """Canonical band name: B1 / B01 / b1 → B1, B8a / B08A → B8A, SR_B04 → SR_B4; others upper-cased."""
    s = name.strip().upper()
    m = re.fullmatch(r"(SR_)?B0*(\d+)(A?)(_\w+)?", s)
    return f"{m.group(1) or ''}B{int(m.group(2))}{m.group(3)}{m.group(4) or ''}" if m else s


def _lookup(entry: WeightsEntry, name: str, whole_only: bool = False) -> Optional[int]:
    """Index of ``name`` among ``entry.bands`` (by canonical name or common alias), else None."""
    keys = [band_key(b) for b in entry.bands]
    aliases = ALIASES.get(entry.sensor, {})
    text = (name or "").strip()
    if not text:
        return None
    if band_key(text) in keys:
        return keys.index(band_key(text))
    for i, b in enumerate(entry.bands):
        if text.lower() in aliases.get(b, ()):
            return i
    if whole_only:
        return None
    for token in re.split(r"[^0-9A-Za-z_]+", text):  # "B4 (665 nm)", "Sentinel-2 B8A", "red band"
        if any(ch.isdigit() for ch in token) and band_key(token) in keys:
            return keys.index(band_key(token))
        for i, b in enumerate(entry.bands):
            if token.lower() in aliases.get(b, ()):
                return i
    return None


@dataclass
class BandMatch:
    """Which of the weights' bands each raster band takes (None: not known → mean kernel)."""
    index: Optional[list]  # None: no band could be named (kernels spread over the bands)
    how: str
    names: list = field(default_factory=list)  # per raster band: the weights' band name or ""

    def as_dict(self) -> dict:
        return {"bands": self.names, "how": self.how}


def parse_weight_bands(text) -> Optional[list]:
    """WEIGHT_BANDS: 'B04,B03,B02' (one per selected band; '-' or empty = not a band of the weights)."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        items = [str(t) for t in text]
    else:
        text = str(text).strip()
        if not text:
            return None
        items = text.split(",")
    return [i.strip() for i in items]


def match_bands(entry: WeightsEntry, raster_names: list, explicit: Optional[list] = None) -> BandMatch:
    n = len(raster_names)
    if explicit:
        if len(explicit) != n:
            raise InputError(f"WEIGHT_BANDS names {len(explicit)} band(s), but {n} band(s) are used.",
                             "Give one name per band used, in order ('-' for a band the weights do not know).")
        idx = []
        for name in explicit:
            if name in ("", "-", "?"):
                idx.append(None)
                continue
            i = _lookup(entry, name, whole_only=True)
            if i is None:
                raise InputError(f"'{name}' is not a band of the weights '{entry.name}'.",
                                 "Their bands: " + ", ".join(entry.bands) + " ('-' for a band they do not know).")
            idx.append(i)
        return BandMatch(idx, "as given (WEIGHT_BANDS)", [entry.bands[i] if i is not None else "" for i in idx])
    idx = [_lookup(entry, name) for name in raster_names]
    if any(i is not None for i in idx):
        return BandMatch(idx, "from the band descriptions", [entry.bands[i] if i is not None else "" for i in idx])
    if n == len(entry.bands):
        return BandMatch(list(range(n)), "by position (no band description names a band of the weights)",
                         list(entry.bands))
    return BandMatch(None, f"not known: {n} unnamed band(s) for weights of {len(entry.bands)} band(s)",
                     [""] * n)


def first_layer(weight, index: list):
    """First-layer kernels for the raster's bands: band i takes ``weight[:, index[i]]``, or the mean kernel."""
    import torch

    mean = weight.mean(dim=1)
    return torch.stack([weight[:, i] if i is not None else mean for i in index], dim=1).contiguous()


def scaling(entry: WeightsEntry, match: BandMatch, raster_mean, raster_std) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per raster band: the weights' scaling for named bands, the raster's statistics otherwise."""
    mean = np.asarray(raster_mean, np.float64).copy()
    std = np.asarray(raster_std, np.float64).copy()
    if entry.scale_mean is None or match.index is None:
        return mean, std
    for b, i in enumerate(match.index):
        if i is not None:
            mean[b], std[b] = entry.scale_mean[i], entry.scale_std[i]
    return mean, std


def apply_entry(model, entry: WeightsEntry, path: str, match: BandMatch) -> str:
    """Load the weights file ``path`` of ``entry`` into ``model.backbone``; returns a log line."""
    from ..models.resnets import adapt_first_conv

    backbone = model.backbone
    first = backbone.first_conv  # conv1.weight (ResNets), features.0.0.weight (MobileNetV2)
    state = backbone_state(safe_load(path), backbone)
    w = state.get(first)
    target = backbone.state_dict()[first]
    if w is None:
        raise ModelFileError(f"The weights file {os.path.basename(path)} has no first convolution ({first}).")
    if w.shape[1] != len(entry.bands):
        raise ModelFileError(f"The weights file {os.path.basename(path)} has {w.shape[1]} input band(s); the "
                             f"catalogue says {len(entry.bands)} for '{entry.name}'.", "Delete it and download again.")
    in_bands = target.shape[1]
    if match.index is not None:
        state[first] = first_layer(w, match.index)
        known = sum(i is not None for i in match.index)
        how = (f"bands matched {match.how}: " + ", ".join(n or "mean kernel" for n in match.names)
               + (f" ({in_bands - known} band(s) unknown to the weights take the mean kernel)"
                  if known < in_bands else ""))
    else:
        state[first] = adapt_first_conv(w, in_bands)
        how = f"bands {match.how}; kernels repeated over {in_bands} bands, scaled by {w.shape[1]}/{in_bands}"
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"The weights '{entry.name}' do not fit this backbone: {exc}") from exc
    return f"Started from {entry.title} ({entry.name}); {how}."

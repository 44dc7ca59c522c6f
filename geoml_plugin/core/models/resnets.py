"""Residual CNN backbones for N-band rasters, and patch classifiers built on them.

Every network here is ``PatchNet(backbone, head)``: the *backbone* turns a
patch into feature maps, the *head* (pool → dropout → linear) turns them into
class scores or regression outputs. Keeping the two apart (state-dict keys
``backbone.*`` and ``head.*``) is what makes transfer work: an earlier GeoML
model's backbone can start a new model with a new head, and the same backbone
can be the encoder of a U-Net (``segmentation.py``).

Backbones:

* ``small_resnet`` — a fast residual CNN made for 32–128 px patches on a CPU
  (full-resolution stem, max-pooling, four residual stages of ``widths`` channels: by default
  32–256, ≈1.2 M parameters; Fine-tune builds patch classifiers with 48–384, ≈2.8 M);
* ``resnet18`` / ``resnet34`` / ``resnet50`` — torchvision's ResNets, whose
  first convolution is adapted to any band count. With ImageNet weights the
  RGB kernels are repeated cyclically over the N bands and scaled by 3/N, so
  a patch of N bands that look alike gives the same first-layer response as
  the RGB image it was trained on (timm's ``adapt_input_conv``);
* ``mobilenet_v2`` — torchvision's MobileNetV2 (inverted residuals with
  depthwise convolutions, 2.2 M parameters): a pretrained backbone light
  enough for a CPU (≈25 M multiply-adds for a 64-px patch, 1280 features).

Every backbone has ``feature_maps(x)`` (its stage outputs, finest first, for
the U-Net), ``channels`` and ``reductions`` of those maps, ``first_conv`` (the
state-dict key of its first convolution, which pretrained weights adapt to the
raster's bands); those whose patch maps may be scored in one pass over a tile
also have ``strided_stages()`` (the groups of layers that halve the resolution
after the stem, which the fully convolutional map dilates: ``window_scores``).

Architecture arguments are plain JSON values so a model file rebuilds the
network; weights are never downloaded here (see ``core/finetune/weights.py``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .registry import register

TORCHVISION_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
SMALL_WIDTHS = (32, 64, 128, 256)  # small_resnet's stage widths when a model file names none


def adapt_first_conv(weight: torch.Tensor, in_bands: int) -> torch.Tensor:
    """RGB first-layer kernels ``(out, 3, k, k)`` → ``(out, in_bands, k, k)``.

    One band: the kernels summed over RGB. N bands: RGB repeated cyclically
    (R, G, B, R, G, …) and scaled by 3/N so activations keep their scale.
    """
    if weight.shape[1] == in_bands:
        return weight.clone()
    if in_bands == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_bands / weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_bands] * (weight.shape[1] / in_bands)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class SmallResNet(nn.Module):
    """Full-resolution 3×3 stem, 2×2 max-pooling, four residual stages; stage outputs at 1/2 … 1/16.

    As cheap as a plain four-layer CNN (≈65 M multiply-adds for a 64-px patch),
    with residual connections that keep deeper stages easy to train.
    """

    def __init__(self, in_bands: int, widths=SMALL_WIDTHS):
        if len(widths) != 4:
            raise ValueError("small_resnet has four stages: four widths")
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(in_bands, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2))
        stages, c = [], w0
        for i, w in enumerate(widths):
            stages.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)
        self.reductions = [2 * 2**i for i in range(len(widths))]
        self.first_conv = "stem.0.weight"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for blk in self.stages:  # start each residual branch near identity
            nn.init.zeros_(blk.bn2.weight)

    def strided_stages(self) -> list:
        return list(self.stages)[1:]

    def feature_maps(self, x: torch.Tensor, full_res: bool = False) -> list:
        """The stages' outputs (1/2 … 1/16); with ``full_res`` the stem's full-resolution map (before its
        max-pooling) first."""
        stem = self.stem
        first = stem[2](stem[1](stem[0](x)))
        out, x = [first] if full_res else [], stem[3](first)
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        return x


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet without its classifier, first conv sized for N bands.

    Submodule names match torchvision's, so an ImageNet state dict loads into
    it once ``conv1.weight`` has been adapted (``adapt_first_conv``).
    """

    def __init__(self, depth: int, in_bands: int):
        super().__init__()
        from ..deps_check import require_torchvision

        tv = require_torchvision()
        net = getattr(tv.models, f"resnet{depth}")(weights=None)
        if in_bands != 3:
            net.conv1 = nn.Conv2d(in_bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        exp = 4 if depth >= 50 else 1
        self.channels = [64, 64 * exp, 128 * exp, 256 * exp, 512 * exp]
        self.reductions = [2, 4, 8, 16, 32]
        self.first_conv = "conv1.weight"

    def strided_stages(self) -> list:
        return [self.layer2, self.layer3, self.layer4]

    def feature_maps(self, x: torch.Tensor) -> list:
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return [x0, x1, x2, x3, self.layer4(x3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TorchvisionMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 without its classifier, first convolution sized for N bands.

    The layers keep torchvision's names (``features.0.0.weight`` …) so its ImageNet state dict loads as it
    is; ``features`` is that ``nn.Sequential`` (reached as ``self._modules["features"]``, because
    :meth:`feature_maps` is the method every backbone shares). The stage outputs the U-Net takes are those
    at 1/2 (16 channels), 1/4 (24), 1/8 (32), 1/16 (96) and 1/32 (the 1280-channel last layer).

    It has no ``strided_stages()`` on purpose: as a patch classifier its features reach far past the cell of
    context it is trained with, so a map computed in one pass over a tile (every window seeing all its neighbours) is not
    what it learnt: on EuroSAT from ImageNet weights, 95.0 % of the held-out chips with their 32 px of context,
    88 % with 64–128 px, 73–75 % in the one-pass map. ``geoml:predict`` scores its windows cut out with the
    context they were trained with instead (``predict._predict_patches``)."""

    # a stage ends after this many of torchvision's layers: features[0:2], [2:4], [4:7], [7:14], [14:19]
    BOUNDS = (2, 4, 7, 14, 19)

    def __init__(self, in_bands: int):
        super().__init__()
        from ..deps_check import require_torchvision

        tv = require_torchvision()
        feats = tv.models.mobilenet_v2(weights=None).features
        if in_bands != 3:
            conv = nn.Conv2d(in_bands, 32, 3, 2, 1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            feats[0][0] = conv
        self.add_module("features", feats)
        self.channels = [16, 24, 32, 96, 1280]
        self.reductions = [2, 4, 8, 16, 32]
        self.first_conv = "features.0.0.weight"

    def feature_maps(self, x: torch.Tensor) -> list:
        out = []
        for i, layer in enumerate(self._modules["features"], start=1):
            x = layer(x)
            if i in self.BOUNDS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._modules["features"](x)


def make_backbone(name: str, in_bands: int, widths=None) -> nn.Module:
    """Backbone ``name`` for ``in_bands`` bands; ``widths``: small_resnet's stage widths (None: the default
    ``SMALL_WIDTHS``, which every model file written without them was built with)."""
    if name == "small_resnet":
        return SmallResNet(in_bands, tuple(widths) if widths else SMALL_WIDTHS)
    if widths:
        raise ValueError(f"backbone {name!r} has fixed widths")
    if name == "mobilenet_v2":
        return TorchvisionMobileNetV2(in_bands)
    if name in TORCHVISION_DEPTHS:
        return TorchvisionResNet(TORCHVISION_DEPTHS[name], in_bands)
    raise ValueError(f"unknown backbone {name!r}")


def centre_weights(n: int, sigma: float) -> torch.Tensor:
    """Weights (n × n, summing to 1) of the cells of a window ``n`` cells wide: a Gaussian of standard
    deviation ``sigma`` × n cells around the window's centre; ``sigma`` 0 gives the plain mean."""
    if sigma <= 0:
        return torch.full((n, n), 1.0 / (n * n))
    pos = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
    g = torch.exp(-(pos / (sigma * n)) ** 2 / 2)
    w = g[:, None] * g[None, :]
    return w / w.sum()


class CentrePool(nn.Module):
    """Weighted average of a window's feature cells, heavier toward its centre (:func:`centre_weights`).

    Why: in the fully convolutional map (``window_scores.DenseWindows``) and in training with context, the
    features of a window's outer cells see its neighbours. A plain average gives those cells as much say as
    the central ones, and a translation-equivariant network cannot tell them apart; the centre weighting
    makes the window's class the class of what lies at its centre, which is what the map assigns it to.
    No parameters: model files keep their keys."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("centre-weighted pooling needs square windows")
        w = centre_weights(x.shape[-1], self.sigma).to(device=x.device, dtype=x.dtype)
        return (x * w).sum(dim=(-2, -1), keepdim=True)


class PatchNet(nn.Module):
    """Backbone → global pool → dropout → linear: one output per patch.

    The pool is the plain average, or with ``centre_pool`` > 0 a centre-weighted one (:class:`CentrePool`)."""

    def __init__(self, backbone: nn.Module, num_outputs: int, dropout: float = 0.0, centre_pool: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.centre_pool = float(centre_pool)
        pool = CentrePool(centre_pool) if centre_pool > 0 else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(backbone.channels[-1], num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@register("small_resnet")
def small_resnet(in_bands: int, num_outputs: int, dropout: float = 0.1, centre_pool: float = 0.0,
                 widths=None) -> nn.Module:
    return PatchNet(make_backbone("small_resnet", in_bands, widths), num_outputs, dropout, centre_pool)


def _torchvision_builder(name: str):
    def build(in_bands: int, num_outputs: int, dropout: float = 0.0, centre_pool: float = 0.0) -> nn.Module:
        return PatchNet(make_backbone(name, in_bands), num_outputs, dropout, centre_pool)

    build.__name__ = name
    build.__doc__ = f"torchvision {name} patch classifier/regressor for N bands."
    return build


for _name in (*TORCHVISION_DEPTHS, "mobilenet_v2"):
    register(_name)(_torchvision_builder(_name))

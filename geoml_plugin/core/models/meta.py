"""Networks for few-shot learning: an embedding followed by a linear head.

The same architecture (``meta_classifier``) stores a meta-model and the
classifier adapted from it, so an adapted model is an ordinary GeoML patch
classifier that ``geoml:predict`` applies like any other.

Normalisation is GroupNorm, not BatchNorm: MAML runs the network functionally
on a batch of tasks at once (``torch.func.vmap``), where BatchNorm's running
statistics would mix tasks and let query patches leak into the support
statistics. GroupNorm normalises each patch on its own, so a patch's features
do not depend on what else is in the batch.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register
from .view_sets import VIEW_SETS

BACKBONES = ("small_cnn", "resnet18")


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ConvEmbedding(nn.Module):
    """A small, fast CNN: conv blocks that halve the resolution, then global
    average pooling (so any patch size works).

    ``stem_stride`` 2 makes the first block work at half resolution (about
    15 M multiply-adds for a 64 px, 3-band patch: meta-training and
    interactive adaptation must run on a laptop CPU). ``pool_blocks`` > 1
    concatenates the pooled features of that many last blocks: earlier blocks
    hold more general features (colour, texture), which transfer better to
    classes never seen in training than the last block's.
    """

    def __init__(self, in_bands: int, widths=(32, 64, 128, 256), stem_stride: int = 2, pool_blocks: int = 1,
                 max_pool: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList()
        c = in_bands
        for i, w in enumerate(widths):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, stride=stem_stride if i == 0 else 1, bias=False),
                nn.GroupNorm(_groups(w), w), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)))
            c = w
        self.pool_blocks = max(1, min(int(pool_blocks), len(widths)))
        self.max_pool = bool(max_pool)
        self.out_dim = sum(widths[-self.pool_blocks:]) * (2 if self.max_pool else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - self.pool_blocks:
                pooled.append(x.mean((2, 3)))
                if self.max_pool:
                    pooled.append(x.amax((2, 3)))
        return torch.cat(pooled, 1) if len(pooled) > 1 else pooled[0]


def resnet_embedding(in_bands: int) -> nn.Module:
    """torchvision ResNet-18 with GroupNorm and without its classifier
    (trained from scratch: pretrained BatchNorm weights do not transfer to GroupNorm)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, norm_layer=lambda c: nn.GroupNorm(_groups(c), c))
    if in_bands != 3:
        net.conv1 = nn.Conv2d(in_bands, 64, 7, stride=2, padding=3, bias=False)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations/reflections of a patch (k = 0 is the identity).

    Overhead imagery has no 'up': a field is the same field turned or mirrored."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, (-2, -1))


class MetaClassifier(nn.Module):
    """``embedding`` → (optional L2 normalisation) → ``head`` (linear).

    ``views`` > 1 averages the embedding over that many dihedral views of each
    patch (test-time augmentation; costs ``views`` × the compute).
    """

    def __init__(self, in_bands: int, num_classes: int, backbone: str = "small_cnn", widths=(32, 64, 128, 256),
                 normalize: bool = False, views: int = 1, stem_stride: int = 2, pool_blocks: int = 1,
                 max_pool: bool = False):
        super().__init__()
        if backbone == "small_cnn":
            self.embedding = ConvEmbedding(in_bands, tuple(widths), stem_stride, pool_blocks, max_pool)
        elif backbone == "resnet18":
            self.embedding = resnet_embedding(in_bands)
        else:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        self.out_dim = self.embedding.out_dim
        self.normalize = bool(normalize)
        self.views = int(views)
        self.head = nn.Linear(self.out_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.views > 1:
            z = torch.stack([self.embedding(dihedral(x, k)) for k in VIEW_SETS[self.views]]).mean(0)
        else:
            z = self.embedding(x)
        return nn.functional.normalize(z, dim=1) if self.normalize else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@register("meta_classifier")
def meta_classifier(in_bands: int, num_classes: int, backbone: str = "small_cnn", widths=(32, 64, 128, 256),
                    normalize: bool = False, views: int = 1, stem_stride: int = 2, pool_blocks: int = 1,
                    max_pool: bool = False) -> nn.Module:
    return MetaClassifier(in_bands, num_classes, backbone, tuple(widths), normalize, views, stem_stride, pool_blocks,
                          max_pool)


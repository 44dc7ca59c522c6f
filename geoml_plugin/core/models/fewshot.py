"""Networks for few-shot learning: an embedding followed by a linear head.

The same architecture (``meta_classifier``) stores a meta-model and the
classifier adapted from it, so an adapted model is an ordinary GeoML patch
classifier that ``geoml:predict`` applies like any other.

Normalisation is not BatchNorm: MAML runs the network functionally on a batch
of tasks at once (``torch.func.vmap``), where BatchNorm's running statistics
would mix tasks and let query patches leak into the support statistics.
``norm="pixel"`` (the default of new meta-models) normalises each pixel's
channels on their own (a LayerNorm over channels, as in ConvNeXt): a patch's
features depend neither on the batch nor on the rest of the window, so the
network can score every window of a tile in one pass
(``window_scores.DenseEmbedding``). ``norm="group"`` (GroupNorm over the whole
patch, models made before version 0.9) needs each window cut out.
"""
from __future__ import annotations

import torch
from torch import nn

from ..augment import dihedral
from .registry import register
from .view_sets import VIEW_SETS

BACKBONES = ("small_cnn", "resnet18")


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class PixelNorm(nn.Module):
    """LayerNorm over the channels of each pixel, with a learnt scale and offset per channel."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


NORMS = ("group", "pixel")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "pixel":
        return PixelNorm(channels)
    if kind == "group":
        return nn.GroupNorm(_groups(channels), channels)
    raise ValueError(f"unknown normalisation {kind!r}; choose one of {NORMS}")


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
                 max_pool: bool = False, norm: str = "group", centre_pool: float = 0.0):
        super().__init__()
        self.centre_pool = float(centre_pool)  # > 0: cells averaged toward the window's centre (centre_weights)
        self.blocks = nn.ModuleList()
        self.stem_stride = int(stem_stride)
        self.norm = norm
        c = in_bands
        for i, w in enumerate(widths):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, stride=stem_stride if i == 0 else 1, bias=False),
                _norm(norm, w), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)))
            c = w
        self.pool_blocks = max(1, min(int(pool_blocks), len(widths)))
        self.max_pool = bool(max_pool)
        self.out_dim = sum(widths[-self.pool_blocks:]) * (2 if self.max_pool else 1)

    def reduction(self, block: int) -> int:
        """Input pixels per cell of block ``block``'s output."""
        return self.stem_stride * 2 ** (block + 1)

    def forward(self, x: torch.Tensor, context: int = 0) -> torch.Tensor:
        """Embedding of patches; with ``context`` > 0, ``x`` holds the windows with ``context`` px of their
        real neighbourhood on each side, every block runs over window and context, and only the window's
        cells are pooled — what a map's windows get from the one pass over a tile
        (``window_scores.DenseEmbedding``). ``context`` must be a multiple of every pooled block's
        reduction (:meth:`reduction`)."""
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - self.pool_blocks:
                k = context // self.reduction(i)
                f = x[:, :, k:x.shape[-2] - k, k:x.shape[-1] - k] if k else x
                if self.centre_pool > 0 and f.shape[-1] == f.shape[-2]:
                    from .resnets import centre_weights

                    w = centre_weights(f.shape[-1], self.centre_pool).to(device=f.device, dtype=f.dtype)
                    pooled.append((f * w).sum((2, 3)))
                else:
                    pooled.append(f.mean((2, 3)))
                if self.max_pool:
                    pooled.append(f.amax((2, 3)))
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


class MetaClassifier(nn.Module):
    """``embedding`` → (optional L2 normalisation) → ``head`` (linear).

    ``views`` > 1 averages the embedding over that many dihedral views of each
    patch (test-time augmentation; costs ``views`` × the compute).
    """

    def __init__(self, in_bands: int, num_classes: int, backbone: str = "small_cnn", widths=(32, 64, 128, 256),
                 normalize: bool = False, views: int = 1, stem_stride: int = 2, pool_blocks: int = 1,
                 max_pool: bool = False, norm: str = "group", centre_pool: float = 0.0):
        super().__init__()
        if backbone == "small_cnn":
            self.embedding = ConvEmbedding(in_bands, tuple(widths), stem_stride, pool_blocks, max_pool, norm,
                                           centre_pool)
        elif backbone == "resnet18":
            self.embedding = resnet_embedding(in_bands)
        else:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        self.out_dim = self.embedding.out_dim
        self.normalize = bool(normalize)
        self.views = int(views)
        self.head = nn.Linear(self.out_dim, num_classes)

    def _embedding(self, x: torch.Tensor, context: int) -> torch.Tensor:
        return self.embedding(x, context) if context else self.embedding(x)

    def embed(self, x: torch.Tensor, context: int = 0) -> torch.Tensor:
        """Embedding of patches (``context``: see ``ConvEmbedding.forward``; small_cnn only)."""
        if self.views > 1:
            z = torch.stack([self._embedding(dihedral(x, k), context) for k in VIEW_SETS[self.views]]).mean(0)
        else:
            z = self._embedding(x, context)
        return nn.functional.normalize(z, dim=1) if self.normalize else z

    def forward(self, x: torch.Tensor, context: int = 0) -> torch.Tensor:
        return self.head(self.embed(x, context))


@register("meta_classifier")
def meta_classifier(in_bands: int, num_classes: int, backbone: str = "small_cnn", widths=(32, 64, 128, 256),
                    normalize: bool = False, views: int = 1, stem_stride: int = 2, pool_blocks: int = 1,
                    max_pool: bool = False, norm: str = "group", centre_pool: float = 0.0) -> nn.Module:
    return MetaClassifier(in_bands, num_classes, backbone, tuple(widths), normalize, views, stem_stride, pool_blocks,
                          max_pool, norm, centre_pool)


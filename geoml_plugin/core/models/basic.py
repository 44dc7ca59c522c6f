"""Small architectures that need nothing beyond torch."""
from __future__ import annotations

import torch
from torch import nn

from .registry import register


@register("pixel_linear")
def pixel_linear(in_bands: int, out_channels: int) -> nn.Module:
    """A per-pixel linear model (1×1 convolution): a linear classifier or
    regressor of the band values. Used for the built-in sample model."""
    return nn.Conv2d(in_bands, out_channels, kernel_size=1)


class SmallCNN(nn.Module):
    """Four conv blocks + global pooling: a fast patch classifier/regressor.

    ``widths`` sets the channels; each block halves the resolution.
    """

    def __init__(self, in_bands: int, num_outputs: int, widths=(32, 64, 128, 256), dropout: float = 0.2):
        super().__init__()
        layers, c = [], in_bands
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@register("small_cnn")
def small_cnn(in_bands: int, num_outputs: int, widths=(32, 64, 128, 256), dropout: float = 0.2) -> nn.Module:
    return SmallCNN(in_bands, num_outputs, tuple(widths), dropout)


class SmallFCN(nn.Module):
    """A small fully convolutional per-pixel model (segmentation or regression).

    Full resolution throughout, dilated convolutions for a ~30 px receptive
    field; any tile size works.
    """

    def __init__(self, in_bands: int, num_classes: int, width: int = 32):
        super().__init__()
        layers, c = [], in_bands
        for d in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@register("small_fcn")
def small_fcn(in_bands: int, num_classes: int, width: int = 32) -> nn.Module:
    return SmallFCN(in_bands, num_classes, width)

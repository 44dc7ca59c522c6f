"""U-Net on a residual backbone: per-pixel classes (segmentation) or values (pixel regression).

The encoder is any backbone of ``resnets.py`` (same ``backbone.*`` state-dict
keys as a patch classifier, so one can start the other). The decoder climbs
back one stage at a time: upsample ×2, concatenate the encoder's map of that
scale, two 3×3 convolutions; a last upsampling returns to full resolution. With ``full_res`` (small_resnet
encoders; new models since 2026-12-07) the last 3×3 convolution also sees the stem's full-resolution map, so
edges (roads, building outlines) are drawn from pixels rather than from the 1/2-scale map; files written
without it keep the former layout.

Inputs of any size work: the forward pass pads the input to a multiple of the
encoder's total reduction (reflect padding) and crops the output back, so the
prediction tiler may use any tile size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register
from .resnets import SmallResNet, make_backbone


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(_conv_bn_relu(cin + cskip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_outputs: int, max_width: int = 256, full_res: bool = False):
        super().__init__()
        if full_res and not isinstance(backbone, SmallResNet):
            raise ValueError("the full-resolution skip needs the small_resnet encoder")
        self.backbone = backbone
        self.full_res = bool(full_res)
        ch = list(backbone.channels)
        widths = [min(c, max_width) for c in ch[:-1]]
        blocks, cin = [], ch[-1]
        for cskip, cout in zip(reversed(ch[:-1]), reversed(widths)):
            blocks.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        skip = ch[0] if full_res else 0
        self.final = nn.Sequential(_conv_bn_relu(cin + skip, cin), nn.Conv2d(cin, num_outputs, 1))
        self.multiple = backbone.reductions[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        feats = self.backbone.feature_maps(x, full_res=True) if self.full_res else self.backbone.feature_maps(x)
        full = feats.pop(0) if self.full_res else None
        y = feats[-1]
        for blk, skip in zip(self.decoder, reversed(feats[:-1])):
            y = blk(y, skip)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if full is not None:
            y = torch.cat([y, full], dim=1)
        return self.final(y)[..., :h, :w]


@register("unet")
def unet(backbone: str, in_bands: int, num_outputs: int, widths=None, full_res: bool = False) -> nn.Module:
    return UNet(make_backbone(backbone, in_bands, widths), num_outputs, full_res=full_res)

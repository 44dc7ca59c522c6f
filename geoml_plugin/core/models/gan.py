"""GAN architectures: a seamless tile generator, a U-Net translator and their critics.

* ``tile_generator`` — unconditional, fully convolutional: a *spatial* latent
  grid (``nz`` channels, one cell per ``stride`` output pixels) is decoded by
  bilinear ×2 upsampling + 3×3 convolutions with BatchNorm (DCGAN). At inference
  BatchNorm applies stored statistics, so every operation is local and an
  output pixel depends only on the latent cells within
  :meth:`TileGenerator.margin_px` of it. Decoding any window of one big
  latent field with that margin and cropping gives exactly the pixels a single
  pass over the whole field would: tiles generated apart join without seams.
* ``unet_translator`` — conditional (pix2pix) U-Net; BatchNorm runs on stored
  statistics at inference, so tiled prediction is seamless as well.
* ``patch_critic`` — PatchGAN discriminator (one score per overlapping patch),
  spectral-normalised for the hinge loss or plain for WGAN-GP; also used as
  the pix2pix discriminator on (input, output) pairs.

Only the generator is saved in a model file; its ``arch_args`` are plain JSON.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from .registry import register


def _block(cin: int, cout: int) -> list:
    # BatchNorm keeps every channel varying across the batch and the tile during
    # training; a per-pixel normalisation let the generator collapse to flat tiles.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]


class TileGenerator(nn.Module):
    """Spatial latent ``(B, nz, h, w)`` → tile ``(B, out_bands, h·stride, w·stride)``.

    ``widths[0]`` channels at the latent resolution (two 3×3 convolutions),
    then one ×2 bilinear upsampling stage with one 3×3 convolution per further
    width, then a 3×3 output convolution. (Bilinear rather than nearest
    upsampling: nearest left the latent grid visible as blocks.) Outputs are in normalised units
    (z-scores of the training bands); the model file's ``target`` turns them
    back into the raster's units.
    """

    def __init__(self, out_bands: int, nz: int = 32, widths=(128, 96, 48, 24, 12)):
        super().__init__()
        widths = [int(w) for w in widths]
        self.out_bands, self.nz, self.widths = int(out_bands), int(nz), widths
        stages = [nn.Sequential(*(_block(nz, widths[0]) + _block(widths[0], widths[0])))]
        for cin, cout in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                        *_block(cin, cout)))
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(widths[-1], out_bands, 3, padding=1)
        # reach (output px) of everything after stage k: a 3×3 conv reaches one
        # pixel of its own resolution (stride / 2**j output px at stage j), and
        # bilinear upsampling one pixel of the resolution below (twice that)
        s = self.stride
        self._reach_after = [1 + sum(3 * (s >> j) for j in range(k + 1, len(widths))) for k in range(len(widths))]

    @property
    def stride(self) -> int:
        """Output pixels per latent cell."""
        return 2 ** (len(self.widths) - 1)

    def margin_px(self) -> int:
        """Output pixels around a window whose latent cells influence it.

        Zero padding at a decoded window's border also spoils exactly this
        many pixels, so decoding latent cells covering the window plus this
        margin and cropping is exact (see :meth:`forward_crop`).
        """
        return 2 * self.stride + self._reach_after[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            z = stage(z)
        return self.out(z)

    def forward_crop(self, z: torch.Tensor, x0: int, y0: int, w: int, h: int) -> torch.Tensor:
        """The ``w``×``h`` output window at output pixel ``(x0, y0)`` of ``forward(z)``.

        Computes only what that window needs: after each stage the feature
        map is cropped to the window plus the reach of the remaining layers.
        Exact (equal to cropping ``forward(z)``) when the window lies at least
        :meth:`margin_px` inside ``z``'s output footprint.
        """
        f = self.stride  # output pixels per feature pixel
        ox = oy = 0  # output pixel of feature[0, 0]
        for k, stage in enumerate(self.stages):
            if k:
                f //= 2
            z = stage(z)
            r = self._reach_after[k]
            cx0, cy0 = max(0, (x0 - r - ox) // f), max(0, (y0 - r - oy) // f)
            cx1 = min(z.shape[-1], -(-(x0 + w + r - ox) // f))
            cy1 = min(z.shape[-2], -(-(y0 + h + r - oy) // f))
            z = z[..., cy0:cy1, cx0:cx1]
            ox, oy = ox + cx0 * f, oy + cy0 * f
        out = self.out(z)
        return out[..., y0 - oy : y0 - oy + h, x0 - ox : x0 - ox + w]


@register("tile_generator")
def tile_generator(out_bands: int, nz: int = 32, widths=(128, 96, 48, 24, 12)) -> nn.Module:
    return TileGenerator(out_bands, nz, tuple(widths))


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x):
        return self.body(x)


class UNetTranslator(nn.Module):
    """U-Net (two 3×3 conv + BatchNorm per level, max-pool down, bilinear up).

    A per-pixel linear path (1×1 convolution of the input) is added to the
    output, so the network only has to learn what a band regression cannot
    explain; it starts as a good linear model instead of from zero.
    """

    def __init__(self, in_bands: int, out_bands: int, widths=(32, 64, 128, 256)):
        super().__init__()
        widths = [int(w) for w in widths]
        self.depth = len(widths)
        self.down = nn.ModuleList()
        c = in_bands
        for w in widths:
            self.down.append(_Down(c, w))
            c = w
        self.up = nn.ModuleList()
        for w_skip in reversed(widths[:-1]):
            self.up.append(_Down(c + w_skip, w_skip))
            c = w_skip
        self.head = nn.Conv2d(c, out_bands, 1)
        self.linear = nn.Conv2d(in_bands, out_bands, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, blk in enumerate(self.down):
            if i:
                h = nn.functional.max_pool2d(h, 2)
            h = blk(h)
            skips.append(h)
        for blk, skip in zip(self.up, reversed(skips[:-1])):
            h = nn.functional.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = blk(torch.cat([h, skip], dim=1))
        return self.head(h) + self.linear(x)


@register("unet_translator")
def unet_translator(in_bands: int, out_bands: int, widths=(32, 64, 128, 256)) -> nn.Module:
    return UNetTranslator(in_bands, out_bands, tuple(widths))


class PatchCritic(nn.Module):
    """PatchGAN critic: stride-2 4×4 convolutions, one score per patch.

    ``spectral=True`` wraps every convolution in spectral normalisation (for
    the hinge / non-saturating losses); ``False`` gives a plain critic for
    WGAN-GP. No batch statistics either way, so the gradient penalty is valid.
    """

    def __init__(self, in_bands: int, widths=(32, 64, 128), spectral: bool = True):
        super().__init__()
        sn = spectral_norm if spectral else (lambda m: m)
        layers, c = [], in_bands
        for i, w in enumerate(widths):
            layers += [sn(nn.Conv2d(c, w, 4, stride=2 if i < len(widths) - 1 else 1, padding=1)),
                       nn.LeakyReLU(0.2, inplace=True)]
            c = w
        layers.append(sn(nn.Conv2d(c, 1, 4, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("patch_critic")
def patch_critic(in_bands: int, widths=(32, 64, 128), spectral: bool = True) -> nn.Module:
    return PatchCritic(in_bands, tuple(widths), spectral)

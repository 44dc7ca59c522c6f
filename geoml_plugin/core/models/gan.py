"""GAN architectures: a seamless tile generator, a U-Net translator and their critics.

* ``tile_generator`` — unconditional, fully convolutional: a *spatial* latent
  grid (``nz`` channels, one cell per ``stride`` output pixels) is decoded by
  smooth ×2 upsampling + 3×3 convolutions with BatchNorm (DCGAN). At inference
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


class SmoothUpsample(nn.Module):
    """×2 upsampling by cubic B-spline subdivision: nearest ×2, then a fixed [1,3,3,1]/8 blur.

    New samples are (1,6,1)/8 of their neighbours at old pixels and midpoints
    between them, so slopes and curvature stay continuous. Nearest upsampling
    left the latent grid visible as blocks, bilinear as kinks that a hillshade
    shows as a faint grid. Reach: one pixel of the lower resolution.
    """

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8.0
        self.register_buffer("kernel", (k[:, None] * k[None, :])[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        x = nn.functional.pad(x, (1, 2, 1, 2), mode="replicate")
        return nn.functional.conv2d(x, self.kernel.expand(x.shape[1], 1, 4, 4), groups=x.shape[1])


def _block(cin: int, cout: int) -> list:
    # BatchNorm keeps every channel varying across the batch and the tile during
    # training; a per-pixel normalisation let the generator collapse to flat tiles.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]


class _UpStage(nn.Module):
    """Smooth ×2 upsampling, 3×3 convolution, optional per-pixel noise, BatchNorm, LeakyReLU.

    The noise (one map, scaled per channel by a learnt weight, as in StyleGAN)
    gives fine, stochastic detail — the roughness of real terrain or texture —
    that the coarse latent grid cannot; it comes from the same seeded hash as
    the latent field at generation time, so it is part of the endless field.
    """

    def __init__(self, cin: int, cout: int, noise: bool):
        super().__init__()
        self.up = SmoothUpsample()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.noise_weight = nn.Parameter(torch.full((1, cout, 1, 1), 0.1)) if noise else None
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        x = self.conv(self.up(x))
        if self.noise_weight is not None:
            if noise is None:
                noise = torch.randn(x.shape[0], 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
            x = x + self.noise_weight * noise
        return self.act(self.bn(x))


class TileGenerator(nn.Module):
    """Spatial latent ``(B, nz, h, w)`` → tile ``(B, out_bands, h·stride, w·stride)``.

    ``widths[0]`` channels at the latent resolution (two 3×3 convolutions),
    then one smooth ×2 upsampling stage (:class:`_UpStage`) per further width
    — the last ``noise_stages`` of them with per-pixel noise — then a 3×3
    output convolution. Outputs are in normalised units (z-scores of the
    training bands); the model file's ``target`` turns them back into units.

    ``noise_fn(stage, row, col, h, w)`` supplies the noise of a stage for
    feature pixels ``row.., col..`` (global indices at that stage's
    resolution, given ``origin``, the global output pixel of ``z[0, 0]``);
    without it the noise is random (training).
    """

    def __init__(self, out_bands: int, nz: int = 32, widths=(128, 96, 48, 24, 12), noise_stages: int = 2):
        super().__init__()
        widths = [int(w) for w in widths]
        self.out_bands, self.nz, self.widths, self.noise_stages = int(out_bands), int(nz), widths, int(noise_stages)
        n_up = len(widths) - 1
        stages = [nn.Sequential(*(_block(nz, widths[0]) + _block(widths[0], widths[0])))]
        for k, (cin, cout) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            stages.append(_UpStage(cin, cout, noise=k > n_up - self.noise_stages))
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(widths[-1], out_bands, 3, padding=1)
        # reach (output px) of everything after stage k: a 3×3 conv reaches one
        # pixel of its own resolution (stride / 2**j output px at stage j), and
        # the upsampling one pixel of the resolution below (twice that)
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

    def _stage(self, k: int, z, f: int, ox: int, oy: int, noise_fn, origin):
        if k == 0:
            return self.stages[0](z)
        noise = None
        if noise_fn is not None and self.stages[k].noise_weight is not None:
            noise = noise_fn(k, (origin[1] + oy) // f, (origin[0] + ox) // f, 2 * z.shape[-2], 2 * z.shape[-1])
        return self.stages[k](z, noise)

    def forward(self, z: torch.Tensor, noise_fn=None, origin=(0, 0)) -> torch.Tensor:
        f = self.stride
        for k in range(len(self.stages)):
            f = f // 2 if k else f
            z = self._stage(k, z, f, 0, 0, noise_fn, origin)
        return self.out(z)

    def forward_crop(self, z: torch.Tensor, x0: int, y0: int, w: int, h: int, noise_fn=None,
                     origin=(0, 0)) -> torch.Tensor:
        """The ``w``×``h`` output window at output pixel ``(x0, y0)`` of ``forward(z)``.

        Computes only what that window needs: after each stage the feature
        map is cropped to the window plus the reach of the remaining layers.
        Exact (equal to cropping ``forward(z)`` with the same ``noise_fn``)
        when the window lies at least :meth:`margin_px` inside ``z``'s
        output footprint.
        """
        f = self.stride  # output pixels per feature pixel
        ox = oy = 0  # output pixel of feature[0, 0]
        for k in range(len(self.stages)):
            f = f // 2 if k else f
            z = self._stage(k, z, f, ox, oy, noise_fn, origin)
            r = self._reach_after[k]
            cx0, cy0 = max(0, (x0 - r - ox) // f), max(0, (y0 - r - oy) // f)
            cx1 = min(z.shape[-1], -(-(x0 + w + r - ox) // f))
            cy1 = min(z.shape[-2], -(-(y0 + h + r - oy) // f))
            z = z[..., cy0:cy1, cx0:cx1]
            ox, oy = ox + cx0 * f, oy + cy0 * f
        out = self.out(z)
        return out[..., y0 - oy : y0 - oy + h, x0 - ox : x0 - ox + w]


@register("tile_generator")
def tile_generator(out_bands: int, nz: int = 32, widths=(128, 96, 48, 24, 12), noise_stages: int = 2) -> nn.Module:
    return TileGenerator(out_bands, nz, tuple(widths), noise_stages)


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

"""One optimisation step of each GAN flavour, with the generator's running average.

* :class:`TileGanTrainer` — unconditional: ``dcgan_sn`` (hinge loss,
  spectral-normalised PatchGAN critic) or ``wgan_gp`` (Wasserstein loss with
  gradient penalty, plain critic, two critic steps per generator step). The
  generator decodes a random latent grid and the critic sees a crop at a
  random sub-cell offset, away from the decoded border: the critic only ever
  judges pixels decoded with full context, exactly as generation does, and
  the latent grid's period cannot leave a visible pattern unpunished.
* :class:`Pix2PixTrainer` — conditional: U-Net generator + PatchGAN
  discriminator on (input, output) pairs; loss = BCE + ``l1_weight`` × masked
  L1, discriminator loss × 0.5 (Isola et al.). ``l1_weight`` alone (no
  adversary) gives a plain U-Net regression (``unet_l1``).

Both keep an exponential moving average of the generator's weights (what is
saved and sampled): a cheap, standard way to get steadier GAN outputs. Under
``torchrun`` ``sync`` averages each network's gradients over the processes
before its update (``train.run_traingan``).
"""
from __future__ import annotations

import copy

import numpy as np

from ..device import torch_for_training
from .data import Batch

UNCONDITIONAL = ("dcgan_sn", "wgan_gp")
CONDITIONAL = ("pix2pix", "unet_l1")


class _EmaMixin:
    sync = None  # under torchrun: called with a network's parameters before each update (gradient average)

    def _update(self, opt, net) -> None:
        if self.sync is not None:
            self.sync(net.parameters())
        opt.step()

    def _init_ema(self, g):
        self.ema = copy.deepcopy(g).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.steps = 0

    def _update_ema(self) -> None:
        torch = self.torch
        self.steps += 1
        decay = min(0.999, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.g.parameters()):
                pe.lerp_(p.detach(), 1.0 - decay)
            for be, b in zip(self.ema.buffers(), self.g.buffers()):
                be.copy_(b)  # BatchNorm statistics (recalibrated for the tile generator at the end)


class TileGanTrainer(_EmaMixin):
    def __init__(self, bands: int, tile: int, loss: str, device, gen_args: dict, critic_widths=(32, 64, 128),
                 lr: float = 2e-4):
        from ..models.gan import PatchCritic, TileGenerator

        self.torch = torch = torch_for_training()
        self.loss, self.tile, self.device = loss, int(tile), device
        self.g = TileGenerator(bands, **gen_args).to(device)
        self.d = PatchCritic(bands, critic_widths, spectral=(loss == "dcgan_sn")).to(device)
        self.n_critic = 2 if loss == "wgan_gp" else 1
        betas = (0.0, 0.99) if loss == "dcgan_sn" else (0.0, 0.9)
        # two time-scale update rule: the critic learns faster than the generator
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr / 2, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr * 2, betas=betas)
        s, m = self.g.stride, self.g.margin_px()
        self.cells = -(-(2 * m + s + self.tile) // s)  # room for the crop at any sub-cell offset
        self._init_ema(self.g)

    def fake(self, n: int, g=None):
        torch = self.torch
        g = g or self.g
        s, m = self.g.stride, self.g.margin_px()
        z = torch.randn(n, self.g.nz, self.cells, self.cells, device=self.device)
        ox, oy = (m + int(v) for v in torch.randint(0, s, (2,)))
        return g.forward_crop(z, ox, oy, self.tile, self.tile)

    def _gradient_penalty(self, real, fake):
        torch = self.torch
        a = torch.rand(real.shape[0], 1, 1, 1, device=self.device)
        mix = (a * real + (1 - a) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.d(mix).sum(), mix, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def step(self, batches: list) -> dict:
        """``batches``: ``n_critic`` real batches. Returns the step's losses.

        The last critic step and the generator step share one generator pass.
        """
        torch = self.torch
        F = torch.nn.functional
        for i, b in enumerate(batches[: self.n_critic]):
            real = torch.from_numpy(b.x).to(self.device)
            if i < self.n_critic - 1:
                with torch.no_grad():
                    fake = self.fake(real.shape[0])
            else:
                fake = self.fake(real.shape[0])
            dr, df = self.d(real), self.d(fake.detach())
            if self.loss == "dcgan_sn":
                loss_d = F.relu(1 - dr).mean() + F.relu(1 + df).mean()
            else:
                loss_d = df.mean() - dr.mean() + 10.0 * self._gradient_penalty(real, fake.detach())
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._update(self.opt_d, self.d)
        for p in self.d.parameters():
            p.requires_grad_(False)
        loss_g = -self.d(fake).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._update(self.opt_g, self.g)
        for p in self.d.parameters():
            p.requires_grad_(True)
        self._update_ema()
        return {"D": loss_d.item(), "G": loss_g.item()}

    def recalibrate(self, batches: int = 32, n: int = 16) -> None:
        """Give the averaged generator BatchNorm statistics that match its own weights.

        The running statistics tracked during training belong to the live
        generator; the saved (averaged) one gets its own, averaged over
        ``batches`` batches, before it is sampled or saved.
        """
        bns = [m for m in self.ema.modules() if isinstance(m, self.torch.nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        self.ema.train()
        with self.torch.no_grad():
            for _ in range(batches):
                self.fake(n, self.ema)
        self.ema.eval()
        for bn in bns:
            bn.momentum = 0.1

    def samples(self, n: int) -> np.ndarray:
        with self.torch.no_grad():
            return self.fake(n, self.ema).cpu().numpy()


class Pix2PixTrainer(_EmaMixin):
    def __init__(self, in_bands: int, out_bands: int, device, gen_args: dict, adversarial: bool = True,
                 l1_weight: float = 100.0, critic_widths=(32, 64, 128), lr: float = 2e-4):
        from ..models.gan import PatchCritic, UNetTranslator

        self.torch = torch = torch_for_training()
        self.device, self.l1_weight, self.adversarial = device, float(l1_weight), adversarial
        self.g = UNetTranslator(in_bands, out_bands, **gen_args).to(device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=(0.5, 0.999))
        if adversarial:
            self.d = PatchCritic(in_bands + out_bands, critic_widths, spectral=True).to(device)
            self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr, betas=(0.5, 0.999))
        self._init_ema(self.g)

    def tensors(self, b: Batch):
        torch = self.torch
        x, y = torch.from_numpy(b.x).to(self.device), torch.from_numpy(b.y).to(self.device)
        m = torch.from_numpy(b.mask.astype(np.float32)).to(self.device)[:, None]
        return x, y, m

    def masked_l1(self, pred, y, m):
        return ((pred - y).abs() * m).sum() / (m.sum() * pred.shape[1]).clamp_min(1.0)

    def step(self, batches: list) -> dict:
        torch = self.torch
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        self.g.train()
        x, y, m = self.tensors(batches[0])
        pred = self.g(x)
        out = {}
        if self.adversarial:
            y_d = torch.where(m > 0, y, pred.detach())  # no free hint from target nodata
            dr, df = self.d(torch.cat([x, y_d], 1)), self.d(torch.cat([x, pred.detach()], 1))
            loss_d = 0.5 * (bce(dr, torch.ones_like(dr)) + bce(df, torch.zeros_like(df)))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._update(self.opt_d, self.d)
            dg = self.d(torch.cat([x, pred], 1))
            adv = bce(dg, torch.ones_like(dg))
            out.update(D=loss_d.item(), G_adv=adv.item())
        else:
            adv = pred.new_zeros(())
        l1 = self.masked_l1(pred, y, m)
        loss_g = adv + self.l1_weight * l1
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._update(self.opt_g, self.g)
        self._update_ema()
        out["L1"] = l1.item()
        return out

    def evaluate(self, b: Batch, g=None) -> float:
        """Masked L1 (normalised units) of a generator on a fixed batch."""
        torch = self.torch
        g = g or self.ema
        g.eval()
        x, y, m = self.tensors(b)
        with torch.no_grad():
            return float(self.masked_l1(g(x), y, m))

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            return self.ema(torch.from_numpy(x).to(self.device)).cpu().numpy()

"""Scores of every window of a tile: how a patch model maps a raster.

A patch classifier (or patch regressor) gives one output per window. To make a
map, windows are laid on a lattice ``step`` px apart (``tiling.window_tiles``)
and every pixel takes the outputs of the four window centres around it,
weighted bilinearly toward the nearer centres (:func:`interpolate`): soft
voting of overlapping windows. The map then does not depend on where the
lattice happens to fall: moving the raster by k px moves the map by k px, and
a boundary lands where it is, not on the next block edge.

Two ways to score all windows of a tile, chosen by :func:`window_scorer`:

* **fully convolutional** (``PatchNet``: a ResNet backbone, global average
  pooling, linear head — every fine-tuned classifier): the backbone runs once
  over the tile. Its last strided stages are turned into dilated ones ("à
  trous", as DeepLab does) so that features come every ``step`` px instead of
  every 16 or 32; the head, being linear, is applied at every feature position
  and each window's cells are pooled at every window position as the model's
  own head pools them (a plain average, or weighted toward the window's
  centre for models with ``centre_pool``: ``models.resnets.CentrePool``).
  This gives the windows' scores for the cost of about 1.5 passes of the plain
  network over the tile (small_resnet, 64 px windows every 8 px), where cutting
  the windows out costs (patch / step)² = 64 passes. The numbers equal windows
  cut out and classified one by one except near each window's edge, where the
  features see the real neighbouring pixels instead of zero padding: fine-tuning
  trains with that context (``finetune.window_context``, ``window_output``), and
  each window is credited to the pixel its features centre on
  (``feature_centre_shift``).
* **window by window** (any other patch model, e.g. few-shot meta-models with
  GroupNorm, ``norm="group"``, which normalises each window as a whole): windows are cut out
  of the tile and classified in batches.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from .device import torch_module


def default_step(patch: int) -> int:
    """Default spacing of the window lattice: an eighth of the patch (8 px for 64-px patches), at least 1."""
    return max(1, int(patch) // 8)


def window_output(model, x, context: int = 0):
    """A patch model's output for windows given with ``context`` pixels around them (``x``: windows of
    ``patch + 2 * context`` px): the features are computed over window and context, and only the window's
    cells are pooled — what :class:`DenseWindows` (a ``PatchNet``) or :class:`DenseEmbedding` (a few-shot
    ``MetaClassifier``) computes for every window of a map. ``context`` 0 is a plain call (the window
    alone, zero padding at its edge)."""
    if not context:
        return model(x)
    if not hasattr(model, "backbone"):  # MetaClassifier: its embedding pools the window's cells itself
        return model(x, context)
    f = model.backbone(x)
    k = context // (x.shape[-1] // f.shape[-1])
    return model.head(f[:, :, k:f.shape[-2] - k, k:f.shape[-1] - k])


def map_context(model, patch: int) -> int:
    """Pixels of real neighbourhood around each window that ``model``'s map sees: one cell of the network's
    last stage (16 px for small_resnet, 32 for the ResNets and few-shot small_cnn models) when the map is
    scored fully convolutionally (:func:`fully_convolutional`), else 0 (windows cut out, zero padding).

    Whatever learns from patches for such a model — fine-tuning, few-shot prototypes and adaptation,
    meta-training — should see them with this context (:func:`window_output`), or the map's windows look
    different from what it learnt: a few-shot meta-model trained 2400 iterations scored 85 % on EuroSAT
    chips cut out but 54–60 % through the map's pass with prototypes taken from patches alone, 82–84 % with
    prototypes taken with the context."""
    steps, _ = _fcn_steps(model, patch)
    return int(steps[0]) if steps else 0


# -- fully convolutional scoring of PatchNet ------------------------------------

def _strided_stages(backbone) -> Optional[tuple[list, int]]:
    """(stages whose first block halves the resolution, in order; the backbone's total reduction), or None."""
    stages = getattr(backbone, "strided_stages", None)
    return (stages(), backbone.reductions[-1]) if callable(stages) else None


def _dilate(stages: list, levels: int) -> None:
    """Turn the last ``levels`` strided stages into dilated ones, in place (torchvision's
    ``replace_stride_with_dilation`` rule: the block that halved the resolution keeps the previous dilation
    on its strided 3×3 convolution, every later 3×3 convolution takes the new one)."""
    torch = torch_module()
    nn = torch.nn
    d = 1
    for stage in stages[len(stages) - levels:]:
        prev, d = d, d * 2
        for blk in (list(stage) if isinstance(stage, nn.Sequential) else [stage]):
            for conv in (m for m in blk.modules() if isinstance(m, nn.Conv2d)):
                k = conv.kernel_size[0]
                if conv.stride[0] == 2:
                    conv.stride = (1, 1)
                    if k > 1:
                        conv.dilation, conv.padding = (prev, prev), (prev * (k // 2),) * 2
                elif k > 1:
                    conv.dilation, conv.padding = (d, d), (d * (k // 2),) * 2


def feature_centre_shift(net) -> int:
    """Pixels from a window's centre to the centre of what its pooled features see in a fully
    convolutional pass (negative: to the left and up).

    A stride-2 convolution centres output ``i`` on input ``2i``, not on the middle of the pair it pools,
    so each halving moves the feature lattice half a step towards the origin: the last cells of
    small_resnet are centred 7 px left of and above the 16-px squares they stand for, those of torchvision's
    ResNets 15.5 px. A window cut out is confined to itself by zero padding; in one pass over a tile its
    features reach past it by this much on one side, so a map made without this correction is shifted by
    it (a boundary lands 7 px off). Walks the convolutions and poolings of the main path (not the residual
    shortcuts) in order: ``start += ((k - 1) * dilation / 2 - padding) * jump``, ``jump *= stride``.
    """
    torch = torch_module()
    nn = torch.nn
    skip = set()
    for name, mod in net.named_modules():
        if name.rsplit(".", 1)[-1] in ("shortcut", "downsample"):
            skip.update(id(m) for m in mod.modules())
    start, jump = 0.5, 1.0
    for mod in net.modules():
        if id(mod) in skip or not isinstance(mod, (nn.Conv2d, nn.MaxPool2d)):
            continue
        k, s, p, d = (v if isinstance(v, int) else v[0] for v in (mod.kernel_size, mod.stride, mod.padding,
                                                                   mod.dilation))
        start += ((k - 1) * d / 2 - p) * jump
        jump *= s
    return int(round(start - jump / 2))


class DenseWindows:
    """Scores of all ``patch``-px windows of a tile whose top-left corners are ``step`` px apart, computed
    fully convolutionally from a ``PatchNet`` (see the module docstring). ``shift``: see
    :func:`feature_centre_shift`."""

    def __init__(self, model, patch: int, step: int):
        self.shift = feature_centre_shift(model.backbone)
        stages, reduction = _strided_stages(model.backbone)
        levels = int(np.log2(reduction // step))
        self.backbone = copy.deepcopy(model.backbone)
        _dilate(_strided_stages(self.backbone)[0], levels)
        linear = model.head[-1]
        self.weight = linear.weight.detach()[:, :, None, None]
        self.bias = linear.bias.detach()
        self.cells = patch // reduction  # the window's cells per side in the plain network
        self.reduction = reduction
        self.spacing = 2 ** levels  # cells of the plain network lie this many dilated positions apart
        from .models.resnets import centre_weights

        k = self.weight.shape[0]
        w = centre_weights(self.cells, getattr(model, "centre_pool", 0.0)).to(self.weight.dtype)
        self.pool = w.expand(k, 1, self.cells, self.cells).contiguous()
        self.patch, self.step = patch, step

    def to(self, device):
        self.backbone = self.backbone.to(device).eval()
        self.weight, self.bias, self.pool = (t.to(device) for t in (self.weight, self.bias, self.pool))
        return self

    def __call__(self, x):
        """``x`` (B, C, H, W) with ``(H - patch) % step == 0`` → (B, outputs, ny, nx) raw head outputs."""
        F = torch_module().nn.functional
        f = self.backbone(x)
        logits = F.conv2d(f, self.weight.to(f.dtype), self.bias.to(f.dtype))
        pooled = F.conv2d(logits, self.pool.to(f.dtype), dilation=self.spacing, groups=logits.shape[1])
        ny = (x.shape[-2] - self.patch) // self.step + 1
        nx = (x.shape[-1] - self.patch) // self.step + 1
        return pooled[:, :, :ny, :nx]


class DenseEmbedding:
    """Scores of all windows of a tile from a few-shot ``MetaClassifier`` whose ``ConvEmbedding`` normalises
    each pixel on its own (``norm="pixel"``): the blocks run once over the tile (pooling steps past ``step``
    turned into dilations), each block's output is averaged over every window, the averages are concatenated
    (as ``ConvEmbedding.forward`` does), optionally L2-normalised, and the linear head is applied."""

    def __init__(self, model, patch: int, step: int):
        emb = model.embedding
        self.shift = feature_centre_shift(emb)
        self.blocks = copy.deepcopy(emb.blocks)
        self.pools: list = []  # per block: (stride, dilation) of its max-pooling
        self.cells: list = []  # per block: (cells of a window per side, their spacing, map positions per step)
        red, d = 1, 1
        for blk in self.blocks:
            conv = blk[0]
            k = conv.kernel_size[0]
            if conv.stride[0] > 1:
                red *= conv.stride[0]
                if red > step:
                    conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d * (k // 2),) * 2
                    d *= 2
            elif k > 1:
                conv.dilation, conv.padding = (d, d), (d * (k // 2),) * 2
            red *= 2
            if red > step:
                self.pools.append((1, d))
                d *= 2
            else:
                self.pools.append((2, 1))
            self.cells.append((patch // red, d, step // min(red, step)))
        self.first = len(self.blocks) - emb.pool_blocks
        self.centre = float(getattr(emb, "centre_pool", 0.0))
        self.reduction = red
        self.normalize, self.views = model.normalize, int(model.views)
        self.weight = model.head.weight.detach()[:, :, None, None]
        self.bias = model.head.bias.detach()
        self.patch, self.step = patch, step

    def to(self, device):
        self.blocks = self.blocks.to(device).eval()
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self

    def _embedding(self, x, ny: int, nx: int):
        torch = torch_module()
        F = torch.nn.functional
        pooled = []
        for i, (blk, (stride, dil)) in enumerate(zip(self.blocks, self.pools)):
            x = blk[2](blk[1](blk[0](x)))
            if stride == 2:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            else:  # a 2×2 max over positions ``dil`` apart, same size (the pooling grid kept, as dilation)
                x = F.max_pool2d(F.pad(x, (0, dil, 0, dil), value=float("-inf")), 2, stride=1, dilation=dil)
            if i >= self.first:
                n, spacing, q = self.cells[i]
                if spacing == 1 and not self.centre:
                    m = F.avg_pool2d(x, n, stride=q)
                else:  # the channel count from the layer, not the tensor: a constant when exported to ONNX
                    from .models.resnets import centre_weights

                    c = int(blk[0].out_channels)
                    kernel = centre_weights(n, self.centre).to(dtype=x.dtype, device=x.device).expand(c, 1, n, n)
                    if spacing > 1:
                        m = F.conv2d(x, kernel, dilation=spacing, groups=c)[:, :, ::q, ::q]
                    else:
                        m = F.conv2d(x, kernel, stride=q, groups=c)
                pooled.append(m[:, :, :ny, :nx])
        return torch.cat(pooled, 1) if len(pooled) > 1 else pooled[0]

    def __call__(self, x):
        torch = torch_module()
        from .augment import dihedral, undo_dihedral

        ny = (x.shape[-2] - self.patch) // self.step + 1
        nx = (x.shape[-1] - self.patch) // self.step + 1
        if self.views > 1:
            from .models.view_sets import VIEW_SETS

            ks = VIEW_SETS[self.views]
            z = sum(undo_dihedral(self._embedding(dihedral(x, k), *((nx, ny) if k % 2 else (ny, nx))), k)
                    for k in ks) / len(ks)
        else:
            z = self._embedding(x, ny, nx)
        if self.normalize:
            z = torch.nn.functional.normalize(z, dim=1)
        return torch.nn.functional.conv2d(z, self.weight.to(z.dtype), self.bias.to(z.dtype))


def _fcn_steps(model, patch: int) -> tuple[list, object]:
    """(the lattice spacings at which ``model`` can score windows fully convolutionally, largest first;
    the scorer class), or ([], None)."""
    from .models.fewshot import ConvEmbedding, MetaClassifier
    from .models.resnets import PatchNet

    if isinstance(model, PatchNet):
        found = _strided_stages(model.backbone)
        if found is not None and patch % found[1] == 0:
            stages, reduction = found
            return [reduction >> k for k in range(len(stages) + 1)], DenseWindows
    if isinstance(model, MetaClassifier) and isinstance(model.embedding, ConvEmbedding):
        emb = model.embedding
        if emb.norm == "pixel" and not emb.max_pool and emb.stem_stride in (1, 2):
            reduction = emb.stem_stride * 2 ** len(emb.blocks)
            if patch % reduction == 0:
                n = len(emb.blocks) + (emb.stem_stride == 2)
                return [reduction >> k for k in range(n + 1)], DenseEmbedding
    return [], None


def fully_convolutional(model, patch: int, stride: int):
    """A scorer of all windows of a tile (:class:`DenseWindows` or :class:`DenseEmbedding`) whose lattice
    spacing ``.step`` is the largest the network allows at most ``stride``, or None when ``model`` must be
    applied window by window (another architecture, GroupNorm, a patch that is not a multiple of the
    network's reduction, a backbone without ``strided_stages``: MobileNetV2)."""
    steps, cls = _fcn_steps(model, patch)
    for s in steps:
        if s <= stride:
            return cls(model, patch, s)
    return None


# -- soft voting ------------------------------------------------------------------

def _lerp(n_pix: int, first: int, step: int, n_win: int):
    """Per output pixel: the window standing for the pixel at or before it, the next one, and its weight."""
    t = (np.arange(n_pix) - first) / step
    j0 = np.clip(np.floor(t).astype(np.int64), 0, max(0, n_win - 2))
    w = np.clip(t - j0, 0.0, 1.0) if n_win > 1 else np.zeros(n_pix)
    return j0, np.minimum(j0 + 1, n_win - 1), w


def interpolate(scores, first: tuple, step: int, size: tuple):
    """Window scores ``(K, ny, nx)`` (a torch tensor) → ``(K, h, w)`` per pixel, bilinear between the pixels
    the windows stand for (``tiling.WindowTile``). ``first`` = (x, y) of window (0, 0)'s pixel relative to
    the output; ``size`` = (w, h). A pixel a window stands for takes that window's scores alone."""
    torch = torch_module()
    k, ny, nx = scores.shape
    (w, h), (cx, cy) = size, first
    y0, y1, wy = _lerp(h, cy, step, ny)
    x0, x1, wx = _lerp(w, cx, step, nx)
    dev, dt = scores.device, scores.dtype
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    wy, wx = t(wy).to(dt)[None, :, None], t(wx).to(dt)[None, None, :]
    rows = scores.index_select(1, t(y0)) * (1 - wy) + scores.index_select(1, t(y1)) * wy
    return rows.index_select(2, t(x0)) * (1 - wx) + rows.index_select(2, t(x1)) * wx

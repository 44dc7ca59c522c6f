"""Label-preserving changes of patches and tiles: the one place fine-tuning, meta-training, few-shot
adaptation, GAN training and test-time views take them from.

* **Dihedral views** (:func:`dihedral`, :func:`undo_dihedral`): overhead imagery has no 'up', so a patch
  turned by a multiple of 90° or mirrored is as valid as the patch itself. View ``k`` (0–7) mirrors
  left–right when ``k >= 4`` and then turns by ``k % 4`` quarter turns; ``k = 0`` is the identity. The
  same numbering serves training (:func:`random_dihedral`, :func:`random_view`) and test-time averages
  (``models.view_sets.VIEW_SETS``).
* **Shifts with real neighbouring pixels** (:func:`crop`, :func:`crop_with`, :func:`shifted`): patches
  are read with a margin of real context around them and cropped back to their size, at the centre or
  shifted at random by up to the margin. A window on the map is rarely centred on a labelled point and
  must still be labelled by what lies at its centre.
* **Intensity jitter** (:func:`jitter_intensity`): a random contrast gain per patch and level offset per
  band, in normalised units, for the sun angle, haze and sensor differences between scenes and dates.
* :func:`augment`: the meta-training and few-shot recipe (random shift, view and jitter). Meta-training
  sees every labelled patch many times; without augmentation a network memorises them.

Each random function draws from the ``generator`` it is given, in a fixed order, so a seeded run
repeats itself; ``tests/core/test_augment.py`` pins the draws against the code these functions
replaced (the benchmark figures in README and docs were measured with it).

torch is imported inside the functions (the module is imported by torch-free code paths too);
:func:`dihedral`, :func:`undo_dihedral` and :func:`random_view` also take numpy arrays.
"""
from __future__ import annotations

import numpy as np

VIEWS = 8  # the dihedral group of the square: 4 quarter turns, each with or without a mirror image


def dihedral(x, k: int):
    """The ``k``-th of the 8 rotations/reflections of a patch ``(..., H, W)`` (torch tensor or numpy array).

    ``k >= 4`` mirrors left–right, then the patch is turned ``k % 4`` quarter turns (counter-clockwise)."""
    if isinstance(x, np.ndarray):
        if k >= 4:
            x = x[..., ::-1]
        return np.rot90(x, k % 4, axes=(-2, -1))
    import torch

    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, (-2, -1))


def undo_dihedral(y, k: int):
    """Inverse of :func:`dihedral` ``(y, k)``: turn an output map of view ``k`` back."""
    if isinstance(y, np.ndarray):
        if k % 4:
            y = np.rot90(y, -(k % 4), axes=(-2, -1))
        return y[..., ::-1] if k >= 4 else y
    import torch

    if k % 4:
        y = torch.rot90(y, -(k % 4), (-2, -1))
    return y.flip(-1) if k >= 4 else y


def all_views(x, views: int = VIEWS):
    """``(N, C, H, W)`` → ``(views * N, C, H, W)``: every patch in views ``0 .. views - 1``."""
    import torch

    return torch.cat([dihedral(x, k) for k in range(views)])


def random_dihedral(x, generator=None, y=None):
    """Each sample ``x[i]`` of a batch ``(B, ..., H, W)`` in a random one of the 8 views, drawn per sample
    (one ``randint(0, 8, (B,))`` from ``generator``); ``y`` of shape ``(B, ..., H, W)`` (masks, target
    rasters) gets the same view. Works IN PLACE on ``x`` and ``y`` (pass fresh batch tensors); returns
    ``(x, y)``."""
    import torch

    k = torch.randint(0, VIEWS, (x.shape[0],), generator=generator).to(x.device)
    flip = k >= 4
    if flip.any():
        x[flip] = x[flip].flip(-1)
        if y is not None:
            y[flip] = y[flip].flip(-1)
    for r in (1, 2, 3):
        sel = (k % 4) == r
        if sel.any():
            x[sel] = torch.rot90(x[sel], r, (-2, -1))
            if y is not None:
                y[sel] = torch.rot90(y[sel], r, (-2, -1))
    return x, y


def random_view(arrays: list, rng: np.random.Generator) -> list:
    """One random view, the same for each numpy array of ``arrays`` (a GAN tile, its target and mask).

    Draws a quarter-turn count and then a mirror flag from ``rng`` and turns before mirroring (the GAN
    tile sampler's order since its first version); mirroring after ``k`` turns is view
    ``4 + (-k) % 4`` of :func:`dihedral`. Returns C-contiguous copies."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    view = 4 + (-k) % 4 if flip else k
    return [np.ascontiguousarray(dihedral(a, view)) for a in arrays]


def crop_with(x, y, size: int, generator=None):
    """Patches read with context ``x (..., C, S, S)`` (and their per-pixel targets ``y (..., S, S)``, or
    None) → ``(..., C, size, size)`` (and ``(..., size, size)``): the centre, or with a ``generator``
    each patch (and its target) shifted at random by up to ``m = (S - size) // 2`` px in x and y (one
    ``randint(0, 2m + 1, (n, 2))``: row, then column offset of each patch). Returns ``(x, y)``."""
    m = (x.shape[-1] - size) // 2
    if m <= 0:
        return x, y
    if generator is None:
        return x[..., m:m + size, m:m + size], (None if y is None else y[..., m:m + size, m:m + size])
    import torch

    flat = x.reshape(-1, *x.shape[-3:])
    off = torch.randint(0, 2 * m + 1, (flat.shape[0], 2), generator=generator).tolist()
    out = torch.stack([flat[i, :, a:a + size, b:b + size] for i, (a, b) in enumerate(off)])
    if y is not None:
        yf = y.reshape(-1, *y.shape[-2:])
        y = torch.stack([yf[i, a:a + size, b:b + size] for i, (a, b) in enumerate(off)])
        y = y.reshape(*x.shape[:-3], size, size)
    return out.reshape(*x.shape[:-2], size, size), y


def crop(x, size: int, generator=None):
    """:func:`crop_with` without targets: the patches only."""
    return crop_with(x, None, size, generator)[0]


def shifted(x, patch: int):
    """``(N, C, S, S)`` patches with context → ``(5 * N, C, patch, patch)``: the centre and the four
    crops shifted by the whole context margin left, right, up and down (prototypes of the neighbourhood a
    map window sees around a point)."""
    import torch

    m = (x.shape[-1] - patch) // 2
    if m <= 0:
        return x
    offs = [(m, m), (0, m), (2 * m, m), (m, 0), (m, 2 * m)]
    return torch.cat([x[..., a:a + patch, b:b + patch] for a, b in offs])


def jitter_intensity(x, strength: float, generator=None, gain: str = "uniform", offset: float = 0.5):
    """Randomly vary each patch's contrast and each band's level, in normalised units (band std = 1):
    ``x · g + o`` with ``g = 1 + strength · u`` per patch and ``o ~ N(0, offset · strength)`` per band.

    ``gain`` "uniform": ``u ~ U(-1, 1)`` (contrast ×(1 ± strength); fine-tuning's default); "normal":
    ``u ~ N(0, 1)`` (meta-training's, with ``offset`` 1). Draws ``u`` for the ``B`` patches, then the
    ``B × C`` offsets. Mimics the sun angle, haze and sensor differences between scenes and dates, so a
    classifier leans on texture and relative colour rather than exact brightness. For classes: for
    regression the band values may be the very thing predicted."""
    import torch

    b, c = x.shape[:2]
    if gain == "uniform":
        g = 1 + strength * (2 * torch.rand((b, 1, 1, 1), generator=generator) - 1)
    elif gain == "normal":
        g = 1.0 + strength * torch.randn(b, 1, 1, 1, generator=generator)
    else:
        raise ValueError(f"gain must be 'uniform' or 'normal', not {gain!r}")
    o = offset * strength * torch.randn((b, c, 1, 1), generator=generator)
    return x * g.to(x.device) + o.to(x.device)


def augment(x, generator, jitter: float = 0.1, patch: int | None = None):
    """The meta-training / few-shot recipe for a batch of normalised patches ``(..., C, H, W)``: with
    ``patch``, patches read with context are first shifted at random (:func:`crop`); then a random view
    of each (:func:`random_dihedral`) and, with ``jitter`` > 0, a normal gain and offset of scale
    ``jitter`` (:func:`jitter_intensity` "normal"). Returns a new tensor of the cropped shape."""
    if patch is not None:
        x = crop(x, patch, generator)
    shape = x.shape
    flat, _ = random_dihedral(x.reshape(-1, *shape[-3:]).clone(), generator)
    if jitter > 0:
        flat = jitter_intensity(flat, jitter, generator, gain="normal", offset=1.0)
    return flat.reshape(shape)

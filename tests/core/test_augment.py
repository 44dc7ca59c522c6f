"""core.augment and core.schedule: views and their inverses, shifts, jitter ranges, schedule values — and,
because benchmark figures were measured with them, the same random draws and the same numbers, to the
last bit, as the code they replaced (kept below, verbatim from commit dd1f38e, as the reference)."""
import math

import numpy as np
import pytest
import torch

from geoml_plugin.core.augment import (
    all_views,
    augment,
    crop,
    crop_with,
    dihedral,
    jitter_intensity,
    random_dihedral,
    random_view,
    shifted,
    undo_dihedral,
)
from geoml_plugin.core.schedule import warmup_cosine

# -- the replaced code (reference) ------------------------------------------------------------------------


def old_view(x, k):  # models/meta.py dihedral
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, (-2, -1))


def old_undo(y, k):  # window_scores.py undo_dihedral
    if k % 4:
        y = torch.rot90(y, -(k % 4), (-2, -1))
    return y.flip(-1) if k >= 4 else y


def old_trainer_dihedral(x, y=None, generator=None):  # trainer.py dihedral
    k = torch.randint(0, 8, (x.shape[0],), generator=generator).to(x.device)
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


def old_trainer_jitter(x, strength, generator=None):  # trainer.py jitter_intensity
    b, c = x.shape[:2]
    gain = 1 + strength * (2 * torch.rand((b, 1, 1, 1), generator=generator) - 1)
    offset = 0.5 * strength * torch.randn((b, c, 1, 1), generator=generator)
    return x * gain.to(x.device) + offset.to(x.device)


def old_trainer_shift(xb, yb, m, p, gen, dense):  # trainer.py Trainer._batch, shift=True
    off = torch.randint(0, 2 * m + 1, (len(xb), 2), generator=gen).tolist()
    xb = torch.stack([xb[i, :, a:a + p, b:b + p] for i, (a, b) in enumerate(off)])
    if dense:
        yb = torch.stack([yb[i, a:a + p, b:b + p] for i, (a, b) in enumerate(off)])
    return xb, yb


def old_one_cycle_lr(base, t, warmup):  # trainer.py one_cycle_lr
    t = min(max(t, 0.0), 1.0)
    if warmup > 0 and t < warmup:
        lo, u = base / 25, t / warmup
        return lo + (base - lo) * (1 - math.cos(math.pi * u)) / 2
    end, u = base / 1e4, (t - warmup) / max(1e-9, 1 - warmup)
    return end + (base - end) * (1 + math.cos(math.pi * u)) / 2


def old_meta_crop(x, patch, generator=None):  # meta/augment.py crop
    m = (x.shape[-1] - patch) // 2
    if m <= 0:
        return x
    if generator is None:
        return x[..., m:m + patch, m:m + patch]
    flat = x.reshape(-1, *x.shape[-3:])
    off = torch.randint(0, 2 * m + 1, (flat.shape[0], 2), generator=generator).tolist()
    out = torch.stack([flat[i, :, a:a + patch, b:b + patch] for i, (a, b) in enumerate(off)])
    return out.reshape(*x.shape[:-2], patch, patch)


def old_meta_augment(x, generator, jitter=0.1, patch=None):  # meta/augment.py augment
    if patch is not None:
        x = old_meta_crop(x, patch, generator)
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:])
    ks = torch.randint(0, 8, (flat.shape[0],), generator=generator)
    out = torch.empty_like(flat)
    for k in range(8):
        sel = ks == k
        if sel.any():
            out[sel] = old_view(flat[sel], k)
    if jitter > 0:
        n, c = flat.shape[:2]
        gain = 1.0 + jitter * torch.randn(n, 1, 1, 1, generator=generator)
        offset = jitter * torch.randn(n, c, 1, 1, generator=generator)
        out = out * gain + offset
    return out.reshape(shape)


def old_gan_augment(arrs, rng):  # gan_data.py _augment
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def gen(seed):
    return torch.Generator().manual_seed(seed)


def next_draw(g):
    """The generator's next number: equal after two calls only if both drew the same amount."""
    return torch.randint(0, 2**31, (1,), generator=g).item()


# -- views --------------------------------------------------------------------------------------------------


def test_the_eight_views_are_distinct_mirror_then_turn_and_undo_round_trips():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = [dihedral(x, k) for k in range(8)]
    assert torch.equal(views[0], x)
    assert len({v.numpy().tobytes() for v in views}) == 8
    assert torch.equal(views[4], x.flip(-1))
    assert torch.equal(views[1][..., 0, 0], x[..., 0, -1])  # a quarter turn counter-clockwise
    for k in range(8):
        assert torch.equal(views[k], old_view(x, k))
        assert torch.equal(undo_dihedral(views[k], k), x)
        assert torch.equal(undo_dihedral(x, k), old_undo(x, k))
        a = x.numpy()
        np.testing.assert_array_equal(dihedral(a, k), views[k].numpy())  # numpy: the same numbering
        np.testing.assert_array_equal(undo_dihedral(dihedral(a, k), k), a)
    assert torch.equal(all_views(x, 8), torch.cat(views))
    assert torch.equal(all_views(x, 2), torch.cat(views[:2]))


def test_non_square_maps_round_trip():
    y = torch.randn(1, 2, 5, 7)
    for k in range(8):
        assert dihedral(y, k).shape[-2:] == ((7, 5) if k % 2 else (5, 7))
        assert torch.equal(undo_dihedral(dihedral(y, k), k), y)


@pytest.mark.parametrize("seed", range(4))
def test_random_dihedral_draws_as_finetuning_did_and_moves_masks_with_patches(seed):
    x, y = torch.randn(32, 3, 6, 6), torch.randint(0, 5, (32, 6, 6))
    ga, gb = gen(seed), gen(seed)
    xa, ya = random_dihedral(x.clone(), ga, y.clone())
    xb, yb = old_trainer_dihedral(x.clone(), y.clone(), gb)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and next_draw(ga) == next_draw(gb)
    ks = torch.randint(0, 8, (32,), generator=gen(seed))
    for i in range(32):
        assert torch.equal(xa[i], dihedral(x[i], int(ks[i]))) and torch.equal(ya[i], dihedral(y[i], int(ks[i])))
    assert len(set(ks.tolist())) == 8
    xc, yc = random_dihedral(x.clone(), gen(seed))
    assert torch.equal(xc, xa) and yc is None


@pytest.mark.parametrize("seed", range(20))
def test_random_view_draws_as_gan_training_did(seed):
    rng = np.random.default_rng(seed)
    arrs = [rng.normal(size=(2, 5, 5)).astype(np.float32), rng.normal(size=(1, 5, 5)), rng.random((5, 5)) > 0.5]
    ra, rb = np.random.default_rng(seed + 100), np.random.default_rng(seed + 100)
    new, old = random_view(arrs, ra), old_gan_augment(arrs, rb)
    for a, b in zip(new, old):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype and a.flags.c_contiguous
    assert ra.integers(1 << 30) == rb.integers(1 << 30)


# -- shifts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True])
def test_crop_with_shifts_as_finetuning_did_and_keeps_targets_aligned(dense):
    x = torch.randn(12, 3, 14, 14)
    y = torch.randn(12, 14, 14) if dense else torch.randint(0, 3, (12,))
    ga, gb = gen(5), gen(5)
    xa, ya = crop_with(x, y if dense else None, 10, ga)
    xb, yb = old_trainer_shift(x, y, 2, 10, gb, dense)
    assert torch.equal(xa, xb) and next_draw(ga) == next_draw(gb)
    if dense:
        assert torch.equal(ya, yb)
    xc, yc = crop_with(x, y if dense else None, 10)  # no generator: the centre
    assert torch.equal(xc, x[:, :, 2:12, 2:12]) and (not dense or torch.equal(yc, y[:, 2:12, 2:12]))


def test_crop_shifts_as_meta_training_did_within_the_margin():
    x = torch.randn(3, 4, 2, 20, 20)  # episodes: (tasks, shots, C, S, S)
    ga, gb = gen(1), gen(1)
    assert torch.equal(crop(x, 16, ga), old_meta_crop(x, 16, gb)) and next_draw(ga) == next_draw(gb)
    assert torch.equal(crop(x, 16), x[..., 2:18, 2:18])
    assert crop(x, 20, gen(0)) is x  # no context: nothing to shift
    # every offset from 0 to 2·margin occurs, and a shifted crop is a window of the original
    marker = torch.arange(20.0)[None, None, :].expand(500, 1, 20, 20).contiguous()
    firsts = crop(marker, 16, gen(2))[:, 0, 0, 0]
    assert set(firsts.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    s = shifted(x[0], 16)
    assert s.shape == (20, 2, 16, 16) and torch.equal(s[:4], x[0, :, :, 2:18, 2:18])


# -- intensity jitter -----------------------------------------------------------------------------------------


def test_uniform_jitter_draws_as_finetuning_did_and_stays_within_its_range():
    x = torch.randn(64, 3, 8, 8)
    ga, gb = gen(3), gen(3)
    assert torch.equal(jitter_intensity(x, 0.1, ga), old_trainer_jitter(x, 0.1, gb))
    assert next_draw(ga) == next_draw(gb)
    ones = torch.ones(4000, 2, 1, 1)
    zero = torch.zeros(4000, 2, 1, 1)
    gain = jitter_intensity(ones, 0.2, gen(0)) - jitter_intensity(zero, 0.2, gen(0))  # offsets cancel
    assert gain.min() >= 0.8 - 1e-6 and gain.max() <= 1.2 + 1e-6  # contrast ×(1 ± 0.2)
    assert gain.min() < 0.82 and gain.max() > 1.18  # …the whole range is used
    torch.testing.assert_close(gain[:, 0], gain[:, 1])  # one gain per patch
    offset = jitter_intensity(zero, 0.2, gen(0))
    assert offset.std().item() == pytest.approx(0.1, rel=0.1)  # N(0, strength / 2) per band
    assert torch.equal(jitter_intensity(x, 0.0), x)


def test_normal_jitter_has_the_meta_training_scale():
    zero, ones = torch.zeros(4000, 2, 1, 1), torch.ones(4000, 2, 1, 1)
    gain = jitter_intensity(ones, 0.1, gen(0), gain="normal", offset=1.0) - \
        jitter_intensity(zero, 0.1, gen(0), gain="normal", offset=1.0)
    assert gain.mean().item() == pytest.approx(1.0, abs=0.01) and gain.std().item() == pytest.approx(0.1, rel=0.1)
    assert jitter_intensity(zero, 0.1, gen(0), gain="normal", offset=1.0).std().item() == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ValueError):
        jitter_intensity(zero, 0.1, gen(0), gain="lognormal")


@pytest.mark.parametrize("patch,jitter", [(16, 0.1), (None, 0.1), (16, 0.0), (20, 0.3)])
def test_meta_training_recipe_draws_as_before_and_leaves_its_input_alone(patch, jitter):
    x = torch.randn(2, 6, 3, 20, 20)
    before = x.clone()
    for seed in range(3):
        ga, gb = gen(seed), gen(seed)
        assert torch.equal(augment(x, ga, jitter, patch), old_meta_augment(x, gb, jitter, patch))
        assert next_draw(ga) == next_draw(gb)
    assert torch.equal(x, before)


# -- schedules ------------------------------------------------------------------------------------------------


def test_finetuning_schedule_is_the_one_cycle_it_replaced_bit_for_bit():
    for total in (1, 3, 7, 40, 250, 1001):
        for step in range(total + 1):
            assert warmup_cosine(1e-3, step, total, 0.15, 25, 1e4) == old_one_cycle_lr(1e-3, step / total, 0.15)
    base = 3e-3
    assert warmup_cosine(base, 0, 100, 0.15, 25, 1e4) == pytest.approx(base / 25)
    assert warmup_cosine(base, 15, 100, 0.15, 25, 1e4) == pytest.approx(base)  # warm-up ends at its peak
    assert warmup_cosine(base, 100, 100, 0.15, 25, 1e4) == pytest.approx(base / 1e4)
    assert warmup_cosine(base, 130, 100, 0.15, 25, 1e4) == pytest.approx(base / 1e4)  # clamped
    rates = [warmup_cosine(base, s, 100, 0.15, 25, 1e4) for s in range(101)]
    assert all(a < b for a, b in zip(rates[:15], rates[1:16])) and all(a > b for a, b in zip(rates[15:], rates[16:]))


def test_meta_training_schedule_is_the_cosine_it_replaced_bit_for_bit():
    for iterations in (1, 7, 50, 100, 1000, 2000):
        for it in range(1, iterations + 1):
            old = 1e-3 * 0.5 * (1 + math.cos(math.pi * (it - 1) / iterations))
            assert warmup_cosine(1e-3, it - 1, iterations) == old
    assert warmup_cosine(2e-3, 0, 500) == 2e-3
    assert warmup_cosine(2e-3, 250, 500) == pytest.approx(1e-3)
    assert warmup_cosine(2e-3, 500, 500) == pytest.approx(0.0, abs=1e-18)

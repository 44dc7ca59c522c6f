"""GAN networks and the seeded latent field: shapes, exact windowed decoding, determinism."""
import numpy as np
import pytest
import torch

from geoml_plugin.core.gan.latent_field import FieldDecoder, latent_noise
from geoml_plugin.core.models import build_model
from geoml_plugin.core.models.gan import TileGenerator
from tests.gan_helpers import one_torch_thread  # noqa: F401


def test_generator_discriminator_and_translator_shapes():
    g = build_model("tile_generator", out_bands=3, nz=8, widths=[16, 8, 8])
    assert g.stride == 4
    assert g(torch.randn(2, 8, 5, 6)).shape == (2, 3, 20, 24)
    default = TileGenerator(1)
    assert default.stride == 16 and default(torch.randn(1, 32, 3, 3)).shape == (1, 1, 48, 48)
    d = build_model("patch_critic", in_bands=3, widths=[8, 16, 32])
    scores = d(torch.randn(2, 3, 64, 64))
    assert scores.shape[:2] == (2, 1) and 4 <= scores.shape[-1] < 64  # one score per patch, not per tile
    u = build_model("unet_translator", in_bands=4, out_bands=2, widths=[8, 16, 32])
    assert u.multiple == 4
    assert u(torch.randn(2, 4, 48, 40)).shape == (2, 2, 48, 40)


def test_wgan_critic_has_no_spectral_norm_and_hinge_critic_has():
    plain = build_model("patch_critic", in_bands=1, widths=[8, 16], spectral=False)
    sn = build_model("patch_critic", in_bands=1, widths=[8, 16], spectral=True)
    assert not any("weight_orig" in n for n, _ in plain.named_parameters())
    assert any("weight_orig" in n for n, _ in sn.named_parameters())


def _noise(seed=0):
    def fn(stage, row, col, h, w):
        return torch.from_numpy(latent_noise(seed, 1, row, col, h, w, channel0=1000 + stage))[None]

    return fn


def test_forward_crop_equals_cropping_the_full_decode():
    torch.manual_seed(0)
    g = TileGenerator(2, nz=8, widths=(16, 12, 8, 8)).eval()
    assert [s.noise_weight is not None for s in g.stages[1:]] == [False, True, True]
    m = g.margin_px()
    z = torch.randn(1, 8, 24, 20)
    noise = _noise()
    with torch.no_grad():
        full = g(z, noise)
        assert not torch.allclose(full, g(z, _noise(1)))  # the noise matters
        for x0, y0, w, h in [(m, m, 32, 32), (m + 3, m + 7, 41, 19), (70, 90, 33, 40)]:
            crop = g.forward_crop(z, x0, y0, w, h, noise)
            assert crop.shape == (1, 2, h, w)
            torch.testing.assert_close(crop, full[..., y0 : y0 + h, x0 : x0 + w], rtol=0, atol=1e-5)
        # a decode that starts 2 cells later agrees from the margin on, but not at its border
        s, rows = g.stride, slice(m, -m)
        sub = g(z[..., 2:], noise, origin=(2 * s, 0))
        torch.testing.assert_close(sub[..., rows, m : m + 20], full[..., rows, 2 * s + m : 2 * s + m + 20],
                                   rtol=0, atol=1e-5)
        assert not torch.allclose(sub[..., rows, :4], full[..., rows, 2 * s : 2 * s + 4], atol=1e-3)


def test_latent_noise_is_standard_normal_and_independent_of_the_window():
    big = latent_noise(5, 4, -10, 1000, 50, 60)
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05
    np.testing.assert_array_equal(latent_noise(5, 4, 0, 1010, 7, 3), big[:, 10:17, 10:13])
    assert not np.allclose(latent_noise(6, 4, 0, 1010, 7, 3), big[:, 10:17, 10:13])
    # neighbouring cells and channels are uncorrelated
    assert abs(np.corrcoef(big[0, :, :-1].ravel(), big[0, :, 1:].ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(big[0].ravel(), big[1].ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("col0,row0", [(0, 0), (-1000003, 77), (123457, -98765)])
def test_neighbouring_windows_join_exactly(col0, row0):
    """Seams: tiles decoded apart equal one decode over both, edge rows included."""
    torch.manual_seed(1)
    dec = FieldDecoder(TileGenerator(1, nz=8, widths=(16, 8, 8)).eval())
    left = dec.decode(3, col0, row0, 37, 29)
    right = dec.decode(3, col0 + 37, row0, 37, 29)
    below = dec.decode(3, col0, row0 + 29, 37, 29)
    both = dec.decode(3, col0, row0, 74, 58)
    np.testing.assert_allclose(np.concatenate([left, right], axis=2), both[:, :29], atol=1e-5)
    np.testing.assert_allclose(below, both[:, 29:, :37], atol=1e-5)
    # the columns either side of the seam differ about as much as any neighbouring columns
    seam = np.abs(left[0, :, -1] - right[0, :, 0]).mean()
    inner = np.abs(np.diff(both[0, :29], axis=1)).mean()
    assert seam < 3 * inner
    blocks = dict(((x, y), a) for x, y, a in dec.decode_blocks(3, col0, row0, 74, 58, block=32))
    np.testing.assert_allclose(blocks[(32, 32)], both[:, 32:58, 32:64], atol=1e-5)

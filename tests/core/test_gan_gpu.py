"""CUDA paths of GAN training and generation (skipped without a GPU)."""
import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.core.gan.generate import GenerateConfig, run_generate
from geoml_plugin.core.gan.train import GanTrainConfig, run_traingan
from tests.gan_helpers import TINY_GEN, tiny_generator_model

pytestmark = pytest.mark.gpu


def test_train_and_generate_on_cuda_match_cpu(scene, tmp_path):
    res = run_traingan(GanTrainConfig(scene.dem, str(tmp_path / "g.safetensors"), tile_size=32, iterations=5,
                                      batch_size=4, device="cuda", generator_widths=TINY_GEN["widths"],
                                      latent_channels=TINY_GEN["nz"], critic_widths=[8, 16]))
    assert res.device.startswith("cuda")
    model = tiny_generator_model(tmp_path / "t.safetensors")
    outs = []
    for dev in ("cpu", "cuda"):
        r = run_generate(GenerateConfig(model, str(tmp_path / f"{dev}.tif"), center=(500000.0, 5100000.0),
                                        tile_size=64, seed=2, device=dev))
        outs.append(gdal.Open(r.output_path).ReadAsArray())
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-2)

"""Small GAN model files for tests: real architectures, tiny widths, seeded weights."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import osr

TINY_GEN = {"nz": 8, "widths": [16, 8, 8]}  # stride 4
TINY_UNET = [8, 16]


def wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def tiny_generator_model(path, bands: int = 1, mean: float = 500.0, std: float = 100.0, pixel: float = 10.0,
                         epsg: int = 32632, seed: int = 0, units: str = "m", crs_wkt: str = "") -> str:
    """An untrained (seeded) tile generator saved as a GeoML generation model."""
    import torch

    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model

    torch.manual_seed(seed)
    args = {"out_bands": bands, **TINY_GEN}
    g = build_model("tile_generator", **args)
    target = {"name": "elevation (m)" if bands == 1 else "bands", "units": units, "mean": [mean] * bands,
              "std": [std] * bands, "bands": bands, "band_names": [f"b{i + 1}" for i in range(bands)],
              "kind": "elevation" if bands == 1 else "rgb", "nodata": -9999.0,
              "value_range": [[mean - 2 * std, mean + 2 * std]] * bands}
    meta = ModelMetadata(architecture="tile_generator", arch_args=args, task="generation", output="image", in_bands=0,
                     patch_size=32, target=target, pixel_size=[pixel, pixel], crs_wkt=crs_wkt or wkt(epsg),
                     extra={"pixel_size_m": pixel * 1.0004, "stride": g.stride, "margin_px": g.margin_px()})
    return save_model(str(path), g, meta)


def tiny_translator_model(path, in_bands: int = 2, out_bands: int = 1, seed: int = 0):
    """An untrained (seeded) U-Net translator, with BatchNorm statistics made non-trivial."""
    import torch

    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model

    torch.manual_seed(seed)
    args = {"in_bands": in_bands, "out_bands": out_bands, "widths": TINY_UNET}
    g = build_model("unet_translator", **args)
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(4, in_bands, 32, 32) * 2 + 1)
    g.eval()
    target = {"name": "t", "units": "", "mean": [10.0] * out_bands, "std": [2.0] * out_bands, "bands": out_bands,
              "band_names": ["t"] * out_bands, "kind": "elevation" if out_bands == 1 else "rgb",
              "value_range": [[6.0, 14.0]] * out_bands}
    meta = ModelMetadata(architecture="unet_translator", arch_args=args, task="translation", output="dense",
                     in_bands=in_bands, patch_size=32, norm_mean=[100.0] * in_bands, norm_std=[20.0] * in_bands,
                     target=target, pixel_size=[10.0, 10.0], crs_wkt=wkt(32632), extra={"multiple": 2})
    save_model(str(path), g, meta)
    return str(path), g


class FakePlugin:
    """What GeoML's dialogs and panels use of the plugin object, around pytest-qgis's iface."""

    def __init__(self, iface):
        self.iface = iface
        self.dialogs = {}

    def message_bar(self):
        return self.iface.messageBar()

    def open_tool(self, target):
        import importlib

        mod, fn = target.split(":")
        return getattr(importlib.import_module(f"geoml_plugin.{mod}"), fn)(self)


def smooth_field(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    from geoml_plugin.core.sampledata import smooth_noise

    return smooth_noise(rng, h, w, scale).astype(np.float32)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and on a shared CPU two threads can
    be 10× slower (OpenMP workers waiting for each other); restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

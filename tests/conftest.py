"""Shared fixtures: a small synthetic scene and a real (LDA) model, made once."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    from geoml_plugin.core.sampledata import make_sample_scene

    return make_sample_scene(str(tmp_path_factory.mktemp("scene")), size=128, seed=1, points_per_class=25)


@pytest.fixture(scope="session")
def sample_model(scene, tmp_path_factory):
    from geoml_plugin.core.sampledata import make_sample_model

    return make_sample_model(scene, str(tmp_path_factory.mktemp("model") / "lda.safetensors"))


def tiny_regression_model(path) -> str:
    """A 4-band pixel regression model file (target 'height', no confidence raster), untrained."""
    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model

    meta = ModelMetadata(architecture="pixel_linear", arch_args={"in_bands": 4, "out_channels": 1}, task="regression",
                     output="dense", in_bands=4, patch_size=16, norm_mean=[1000] * 4, norm_std=[500] * 4,
                     target={"name": "height"})
    return save_model(str(path), build_model("pixel_linear", in_bands=4, out_channels=1), meta)


@pytest.fixture()
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def leftovers(folder) -> list:
    """Temporary/partial files a failed job must not leave behind."""
    return [f for f in os.listdir(folder) if ".part" in f]


def shared_path(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


def write_raster(path, array, gt=(500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0), epsg=32632, nodata=None):
    from osgeo import osr

    from geoml_plugin.core.raster.io import RasterWriter

    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    with RasterWriter(str(path), arr.shape[2], arr.shape[1], arr.shape[0], arr.dtype, gt, srs.ExportToWkt(),
                      nodata=nodata) as w:
        w.write(arr, 0, 0)
    return str(path)

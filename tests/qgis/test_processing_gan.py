"""geoml:traingan and geoml:generate through QGIS Processing (processing.run)."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsCoordinateReferenceSystem, QgsProcessingException, QgsRasterLayer

from geoml_plugin.core.modelfile import read_metadata
from tests.conftest import leftovers, write_raster
from tests.gan_helpers import one_torch_thread, tiny_generator_model, tiny_translator_model  # noqa: F401
from tests.qgis.test_qgis_process_and_desktop import _env, staged  # noqa: F401 (plugin staged as installed)


def _run(alg, params):
    import processing

    return processing.run(f"geoml:{alg}", params)


def test_traingan_then_generate_a_tile_at_a_lonlat_point(geoml_provider, scene, out_dir):
    model = str(out_dir / "terrain.safetensors")
    report = str(out_dir / "terrain.png")
    res = _run("traingan", {"INPUT": scene.dem, "TILE_SIZE": 32, "ITERATIONS": 6, "BATCH_SIZE": 2, "DEVICE": 1,
                            "SEED": 1, "OUTPUT_MODEL": model, "OUTPUT_REPORT": report})
    assert res["OUTPUT_MODEL"] == model and res["OUTPUT_REPORT"] == report
    meta = read_metadata(model)
    assert meta.task == "generation" and meta.target["units"] == "m" and meta.provenance["iterations"] == 6
    assert os.path.getsize(report) > 1000

    out = str(out_dir / "tile.tif")
    res = _run("generate", {"MODEL": model, "CENTER": "9.0,46.03 [EPSG:4326]", "TILES": "2x1", "TILE_SIZE": 48,
                            "SEED": 11, "DEVICE": 1, "OUTPUT": out})
    assert res["OUTPUT"] == out
    layer = QgsRasterLayer(out, "tile", "gdal")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32632"
    assert (layer.width(), layer.height()) == (96, 48)
    assert layer.rasterUnitsPerPixelX() == pytest.approx(10.0)
    assert layer.renderer().type() == "singlebandpseudocolor"  # the .qml beside it is the default style
    assert gdal.Open(out).GetMetadata()["GEOML_SEED"] == "11"


def test_generate_extent_in_another_crs_with_output_crs_and_style(geoml_provider, tmp_path, out_dir):
    model = tiny_generator_model(tmp_path / "g.safetensors")
    out = str(out_dir / "ext.tif")
    _run("generate", {"MODEL": model, "EXTENT": "9.0,9.01,46.0,46.005 [EPSG:4326]", "OUTPUT_CRS": "EPSG:3857",
                      "STYLE": 2, "OUTPUT": out})
    layer = QgsRasterLayer(out, "ext", "gdal")
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:3857")
    assert layer.renderer().type() == "hillshade"
    ext = layer.extent()
    assert ext.xMinimum() <= 1001875.5 and ext.xMaximum() >= 1002988.6  # lon 9.0–9.01 in Web Mercator


def test_generate_translates_an_input_raster(geoml_provider, tmp_path, out_dir):
    model, _ = tiny_translator_model(tmp_path / "t.safetensors")
    src = write_raster(tmp_path / "in.tif", np.random.default_rng(0).normal(100, 20, (2, 80, 70)).astype(np.float32))
    out = str(out_dir / "translated.tif")
    _run("generate", {"MODEL": model, "INPUT": src, "OUTPUT": out, "SCENE_NORMALISATION": True})
    ds = gdal.Open(out)
    assert (ds.RasterXSize, ds.RasterYSize) == (70, 80)
    assert ds.GetGeoTransform() == gdal.Open(src).GetGeoTransform()


def test_bad_input_gives_clean_processing_errors(geoml_provider, scene, sample_model, tmp_path, out_dir):
    model = tiny_generator_model(tmp_path / "g.safetensors")
    with pytest.raises(QgsProcessingException, match="not a GAN model"):
        _run("generate", {"MODEL": sample_model, "CENTER": "500000,5100000 [EPSG:32632]", "OUTPUT": str(out_dir / "a.tif")})
    with pytest.raises(QgsProcessingException, match="outside the area where"):
        _run("generate", {"MODEL": model, "CENTER": "-100,40 [EPSG:4326]", "OUTPUT": str(out_dir / "b.tif")})
    with pytest.raises(QgsProcessingException, match="columns × rows"):
        _run("generate", {"MODEL": model, "CENTER": "500000,5100000 [EPSG:32632]", "TILES": "two",
                          "OUTPUT": str(out_dir / "c.tif")})
    far = write_raster(tmp_path / "far.tif", np.ones((64, 64), np.float32), gt=(700000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0))
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        _run("traingan", {"INPUT": scene.dem, "TARGET": far, "ITERATIONS": 2, "TILE_SIZE": 32,
                          "OUTPUT_MODEL": str(out_dir / "m.safetensors")})
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="qgis_process.bin not installed")
def test_qgis_process_runs_generate_with_a_point_in_another_crs(staged, tmp_path):  # noqa: F811
    env = _env(staged, tmp_path / "home")
    (tmp_path / "home").mkdir()
    model = tiny_generator_model(tmp_path / "g.safetensors")
    out = tmp_path / "qp_tile.tif"

    def run(*a):
        return subprocess.run(["qgis_process.bin", *a], env=env, capture_output=True, text=True, timeout=300)

    assert run("plugins", "enable", "geoml_plugin").returncode == 0
    res = run("run", "geoml:generate", "--", f"MODEL={model}", "CENTER=9.0,46.0 [EPSG:4326]", "TILES=2x1",
              "TILE_SIZE=32", "SEED=5", f"OUTPUT={out}")
    assert res.returncode == 0, res.stdout + res.stderr
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize) == (64, 32) and ds.GetMetadata()["GEOML_SEED"] == "5"


def test_traingan_refuses_a_report_that_is_not_png(geoml_provider, scene, out_dir):
    param = geoml_provider.algorithm("traingan").parameterDefinition("OUTPUT_REPORT")
    assert param.fileFilter() == "PNG image (*.png)" and param.defaultFileExtension() == "png"
    with pytest.raises(QgsProcessingException, match="PNG image"):
        _run("traingan", {"INPUT": scene.dem, "TILE_SIZE": 32, "ITERATIONS": 2, "BATCH_SIZE": 2, "DEVICE": 1,
                          "OUTPUT_MODEL": str(out_dir / "m.safetensors"), "OUTPUT_REPORT": str(out_dir / "r.html")})
    assert not (out_dir / "r.html").exists() and not (out_dir / "m.safetensors").exists()

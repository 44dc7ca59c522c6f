"""Minimum region of class maps (``PredictConfig.min_region``): no region under the size is left, larger regions
keep their pixels, nodata stays nodata, the counts and the confidence raster match what is written, and a cancel
during the sieve leaves no file."""
import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from geoml_plugin.core.errors import JobCancelled
from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.progress import Feedback
from tests.conftest import write_raster
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

MIN = 20


def regions(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(region id per pixel, pixels per region id) of the class raster's 8-connected regions, from GDAL's
    polygonize (not the sieve under test); nodata pixels get id -1."""
    ds = gdal.Open(path)
    band = ds.GetRasterBand(1)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference()
    srs.ImportFromWkt(ds.GetProjection())
    layer = mem.CreateLayer("r", srs)
    layer.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0, ["8CONNECTED=8"])
    gt = ds.GetGeoTransform()
    ids = np.full((ds.RasterYSize, ds.RasterXSize), -1, np.int64)
    target = gdal.GetDriverByName("MEM").Create("", ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Int32)
    target.SetGeoTransform(gt)
    target.GetRasterBand(1).Fill(-1)
    for f in layer:
        f.SetField("cls", f.GetFID())
        layer.SetFeature(f)
    gdal.RasterizeLayer(target, [1], layer, options=["ATTRIBUTE=cls"])
    ids = target.GetRasterBand(1).ReadAsArray().astype(np.int64)
    valid = ids >= 0
    sizes = np.bincount(ids[valid].ravel(), minlength=layer.GetFeatureCount())
    return ids, sizes


@pytest.fixture(scope="module")
def speckled(tmp_path_factory):
    """A segmentation model of bright 'roof' vs dark 'meadow', and a raster to map with small bright blobs and a
    nodata corner: its map has regions of a few pixels."""
    d = tmp_path_factory.mktemp("minregion")
    rng = np.random.default_rng(3)
    h, w = 40, 40
    truth = np.zeros((h, w), np.uint8)
    truth[:, :20], truth[:, 20:] = 1, 2
    img = rng.normal(100, 4, (1, h, w)).astype(np.float32)
    img[:, truth == 2] += 60
    labels = write_raster(d / "lab.tif", truth[None].astype(np.float32), nodata=0)
    res = run_finetune(FinetuneConfig(write_raster(d / "img.tif", img), labels, "", str(d / "m.safetensors"),
                                      task="segmentation", patch_size=16, epochs=2, batch_size=8,
                                      max_raster_samples=60, device="cpu"))
    other = rng.normal(100, 4, (1, 48, 48)).astype(np.float32)
    other[:, 24:, :] += 60  # a large bright region
    for r, c, s in ((3, 3, 3), (3, 12, 4), (12, 30, 5), (12, 4, 8)):  # 9 to 64 px bright squares in the dark half
        other[:, r:r + s, c:c + s] += 60
    other[:, :3, 40:] = -9999.0
    return res.model_path, write_raster(d / "other.tif", other, nodata=-9999.0)


def test_no_region_under_the_minimum_is_left_and_larger_regions_keep_their_pixels(speckled, tmp_path):
    model, raster = speckled
    plain, sieved = str(tmp_path / "plain.tif"), str(tmp_path / "sieved.tif")
    r0 = run_predict(PredictConfig(raster, model, plain, str(tmp_path / "plain_conf.tif"), device="cpu"))
    log = []
    r1 = run_predict(PredictConfig(raster, model, sieved, str(tmp_path / "sieved_conf.tif"), device="cpu",
                                   min_region=MIN), Feedback(on_log=log.append))
    before, after = gdal.Open(plain).ReadAsArray(), gdal.Open(sieved).ReadAsArray()
    ids0, sizes0 = regions(plain)
    assert (sizes0 < MIN).any(), "the plain map must hold small regions for this test to say anything"
    _, sizes1 = regions(sieved)
    assert sizes1.min() >= MIN
    changed = before != after
    assert changed.any()
    assert (sizes0[ids0[changed]] < MIN).all()  # only pixels of small regions took another class
    nodata = np.zeros(before.shape, bool)
    nodata[:3, 40:] = True
    assert (after[nodata] == 0).all() and (after[~nodata] > 0).all()
    counts = np.bincount(after[~nodata].ravel(), minlength=3)
    assert r1.class_counts == {"1": int(counts[1]), "2": int(counts[2])} != r0.class_counts
    assert np.array_equal(gdal.Open(str(tmp_path / "sieved_conf.tif")).ReadAsArray(),
                          gdal.Open(str(tmp_path / "plain_conf.tif")).ReadAsArray())
    assert any(f"Regions under {MIN} px" in m for m in log)


def test_a_cancel_during_the_sieve_leaves_no_file(speckled, tmp_path):
    model, raster = speckled
    out = tmp_path / "map.tif"
    seen = []

    def cancelled():
        return any(m.startswith("removing regions") for m in seen)

    fb = Feedback(on_progress=lambda f, m: seen.append(m), is_cancelled=cancelled)
    with pytest.raises(JobCancelled):
        run_predict(PredictConfig(raster, model, str(out), str(tmp_path / "conf.tif"), device="cpu", min_region=MIN),
                    fb)
    assert any(m.startswith("removing regions") for m in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

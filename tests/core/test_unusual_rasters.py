"""Unusual but real-world rasters: masks, alpha bands, rotated and south-up grids."""
import math

import numpy as np
import pytest
import torch
from osgeo import gdal, osr

from geoml_plugin.core.fewshot.job import _points_labelset
from geoml_plugin.core.modelfile import ModelMetadata
from geoml_plugin.core.predict import PredictConfig, predict_raster
from geoml_plugin.core.raster.io import RasterReader, raster_info, window_from_extent
from geoml_plugin.core.raster.labels import LabelRaster

UTM_GT = (500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0)
_T = math.radians(30)
ROTATED_GT = (500000.0, 10 * math.cos(_T), -10 * math.sin(_T), 5100000.0, -10 * math.sin(_T), -10 * math.cos(_T))


def gtiff(path, array, gt=UTM_GT, epsg=32632, nodata=None, dtype=gdal.GDT_Byte):
    """A plain GeoTIFF written with GDAL (left open for masks / colour interpretation): returns the dataset."""
    arr = np.asarray(array)
    arr = arr[None] if arr.ndim == 2 else arr
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], dtype)
    if gt is not None:
        ds.SetGeoTransform(gt)
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(arr.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(arr[i])
        if nodata is not None:
            ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
    return ds


class FirstBand(torch.nn.Module):
    """A 'pixel regression' that returns its first input band: output = input where valid."""

    def forward(self, x):
        return x[:, :1]


def first_band_model(bands):
    return FirstBand(), ModelMetadata(architecture="test", task="regression", in_bands=bands, output="dense",
                                  patch_size=16, norm_mean=[0.0] * bands, norm_std=[1.0] * bands,
                                  target={"name": "v"})


def test_a_per_dataset_mask_band_marks_nodata(tmp_path):
    """An internal mask (GMF_PER_DATASET, as gdal_translate -mask or a JPEG-compressed GeoTIFF has) is honoured."""
    img = np.random.default_rng(0).integers(1, 200, (3, 20, 24)).astype(np.uint8)
    ds = gtiff(tmp_path / "masked.tif", img)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((20, 24), 255, np.uint8)
    mask[:5] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    with RasterReader(str(tmp_path / "masked.tif")) as r:
        data, valid = r.read(0, 0, 24, 20)
        n = r.band_statistics()[2]
    np.testing.assert_array_equal(valid, mask > 0)
    assert (data[:, :5] == 0).all() and n == 15 * 24
    out = tmp_path / "out.tif"
    predict_raster(*first_band_model(3), PredictConfig(str(tmp_path / "masked.tif"), output_path=str(out),
                                                       device="cpu"))
    pred = gdal.Open(str(out)).ReadAsArray()
    assert (pred[:5] == -9999.0).all()
    np.testing.assert_array_equal(pred[5:], img[0, 5:])


def test_an_alpha_band_of_zero_is_nodata_for_the_colour_bands(tmp_path):
    """RGBA: alpha = 0 means no data, also when only the colour bands are read."""
    img = np.random.default_rng(1).integers(1, 200, (4, 20, 24)).astype(np.uint8)
    img[3] = 255
    img[3, :, :6] = 0
    ds = gtiff(tmp_path / "rgba.tif", img)
    ds.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    ds = None
    with RasterReader(str(tmp_path / "rgba.tif"), [1, 2, 3]) as r:
        _, valid = r.read(-2, 0, 24, 20)
        n = r.band_statistics()[2]
    assert not valid[:, :8].any() and valid[:, 8:].all()
    assert n == 20 * 18


def test_map_coordinates_on_a_rotated_grid_go_through_the_full_affine(tmp_path):
    """Few-shot map-tool points and map extents on a rotated raster land on the right pixels."""
    gtiff(tmp_path / "rot.tif", np.full((20, 30), 7, np.uint8), gt=ROTATED_GT)
    info = raster_info(str(tmp_path / "rot.tif"))
    x, y = gdal.ApplyGeoTransform(ROTATED_GT, 7.5, 3.5)
    assert info.world_to_pixel(x, y) == pytest.approx((7.5, 3.5))
    corners = [gdal.ApplyGeoTransform(ROTATED_GT, c, r) for c in (0, 30) for r in (0, 20)]
    xs, ys = zip(*corners)
    assert info.extent == pytest.approx((min(xs), min(ys), max(xs), max(ys)))
    assert window_from_extent(info, *info.extent) == (0, 0, 30, 20)
    with RasterReader(str(tmp_path / "rot.tif")) as r:
        ls = _points_labelset([(x, y, "a"), (*gdal.ApplyGeoTransform(ROTATED_GT, 25.5, 18.5), "b")], info, r)
    np.testing.assert_allclose(np.c_[ls.cols, ls.rows], [[7.5, 3.5], [25.5, 18.5]])


@pytest.mark.parametrize("grid", ["south-up", "rotated"])
def test_a_label_raster_on_another_grid_lands_on_the_right_pixels_of_a_south_up_or_rotated_raster(tmp_path, grid):
    """The label raster (north-up, 5 m pixels) is resampled onto the input's own grid, whatever its orientation."""
    gt = (500000.0, 10.0, 0.0, 5099800.0, 0.0, 10.0) if grid == "south-up" else ROTATED_GT
    h, w = 20, 30
    gtiff(tmp_path / "in.tif", np.ones((h, w), np.uint8), gt=gt)
    info = raster_info(str(tmp_path / "in.tif"))
    # classes by map position: 1 in the north-west quarter, 2 elsewhere, on a grid covering the input's extent
    xmin, ymin, xmax, ymax = info.extent
    x0, y0 = (xmin + xmax) / 2, (ymin + ymax) / 2
    lw, lh = int((xmax - xmin) / 5) + 4, int((ymax - ymin) / 5) + 4
    lx, ly = np.meshgrid(xmin - 10 + 5 * (np.arange(lw) + 0.5), ymax + 10 - 5 * (np.arange(lh) + 0.5))
    labels = np.where((lx < x0) & (ly > y0), 1, 2).astype(np.uint8)
    gtiff(tmp_path / "lab.tif", labels, gt=(xmin - 10, 5.0, 0.0, ymax + 10, 0.0, -5.0), nodata=0)
    lab = LabelRaster(str(tmp_path / "lab.tif"), info, categorical=True)
    try:
        lab.set_classes([1, 2])
        got = lab.read_classes(0, 0, w, h)
    finally:
        lab.close()
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    px, py = gt[0] + cols * gt[1] + rows * gt[2], gt[3] + cols * gt[4] + rows * gt[5]
    want = np.where((px < x0) & (py > y0), 0, 1)
    clear = (np.abs(px - x0) > 10) & (np.abs(py - y0) > 10)  # away from class boundaries
    assert (want[clear] == 0).sum() > 20 and (want[clear] == 1).sum() > 20
    np.testing.assert_array_equal(got[clear], want[clear])


def test_scale_and_offset_metadata_are_not_applied_values_are_read_as_stored(tmp_path):
    """Documented behaviour: raw values, in training (statistics, patches) and prediction alike."""
    img = np.arange(400, dtype=np.uint16).reshape(20, 20) * 20
    ds = gtiff(tmp_path / "scaled.tif", img, dtype=gdal.GDT_UInt16)
    ds.GetRasterBand(1).SetScale(0.0001)
    ds.GetRasterBand(1).SetOffset(-0.1)
    ds.BuildOverviews("NEAREST", [2])
    ds = None
    with RasterReader(str(tmp_path / "scaled.tif")) as r:
        data, _ = r.read(0, 0, 20, 20)
        mean = r.band_statistics()[0]
    np.testing.assert_array_equal(data[0], img)
    assert mean[0] == pytest.approx(img.mean())
    out = tmp_path / "out.tif"
    predict_raster(*first_band_model(1), PredictConfig(str(tmp_path / "scaled.tif"), output_path=str(out), device="cpu"))
    np.testing.assert_array_equal(gdal.Open(str(out)).ReadAsArray(), img)


@pytest.fixture()
def rgba(scene, tmp_path):
    """The sample scene's red, green and blue bands with an alpha band (0 on the 8 left columns) as band 4."""
    img = gdal.Open(scene.image).ReadAsArray()[:3]
    alpha = np.full(img.shape[1:], 65535, np.uint16)
    alpha[:, :8] = 0
    ds = gtiff(tmp_path / "rgba.tif", np.concatenate([img, alpha[None]]), dtype=gdal.GDT_UInt16)
    ds.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    ds = None
    return str(tmp_path / "rgba.tif")


def test_training_leaves_an_alpha_band_out_by_default_and_prediction_uses_the_same_bands(scene, rgba, tmp_path):
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.predict import choose_bands
    from geoml_plugin.core.progress import Feedback

    log = []
    res = run_finetune(FinetuneConfig(rgba, scene.points, "class_name", str(tmp_path / "m.safetensors"), epochs=1,
                                      patch_size=16, batch_size=16, device="cpu"), Feedback(on_log=log.append))
    assert (res.meta.in_bands, res.meta.band_indices) == (3, [1, 2, 3])
    assert any("rgba.tif: band 4 left out of the input: it is an alpha (transparency) band" in m for m in log)
    assert choose_bands(res.meta, 4) == [1, 2, 3]
    out = tmp_path / "pred.tif"
    predict_raster(res.model, res.meta, PredictConfig(rgba, output_path=str(out), device="cpu"))
    pred = gdal.Open(str(out))
    assert pred.GetRasterBand(1).ReadAsArray()[:, :8].tolist() == [[pred.GetRasterBand(1).GetNoDataValue()] * 8] * 128
    # an explicit band list is used as given, alpha included
    res4 = run_finetune(FinetuneConfig(rgba, scene.points, "class_name", str(tmp_path / "m4.safetensors"), epochs=1,
                                       input_bands=[1, 2, 3, 4], patch_size=16, batch_size=16, device="cpu"))
    assert res4.meta.band_indices == [1, 2, 3, 4]


def test_rasters_without_an_alpha_band_keep_every_band_by_default(scene):
    with RasterReader(scene.image, None, skip_alpha=True) as r:
        assert r.bands == [1, 2, 3, 4] and r.alpha_left_out == [] and r.alpha_note() == ""


def test_meta_training_and_gan_training_leave_the_alpha_band_out_and_few_shot_picks_the_same_bands(scene, rgba,
                                                                                                   tmp_path):
    from geoml_plugin.core.fewshot.job import FewShotConfig, adapt
    from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain
    from geoml_plugin.core.gan.train import GanTrainConfig, run_traingan
    from geoml_plugin.core.modelfile import read_metadata
    from geoml_plugin.core.progress import Feedback
    from tests.core.test_fewshot_jobs import TINY, support_points

    log = []
    meta_path = str(tmp_path / "proto.safetensors")
    run_metatrain(MetaTrainConfig([rgba], scene.points, output_model=meta_path, iterations=2, **TINY),
                  Feedback(on_log=log.append))
    meta = read_metadata(meta_path)
    assert (meta.in_bands, meta.band_indices) == (3, [1, 2, 3])
    assert any("band 4 left out of the input" in m for m in log)
    log.clear()
    adapt(FewShotConfig(rgba, meta_path, "", points=support_points(scene), device="cpu"), Feedback(on_log=log.append))
    assert "The model uses bands 1, 2, 3 of the raster's 4; band 4 is not used." in log

    gan = run_traingan(GanTrainConfig(rgba, str(tmp_path / "g.safetensors"), generator_widths=[16, 8, 8],
                                      critic_widths=[8, 16], latent_channels=8, device="cpu", tile_size=32,
                                      iterations=1, batch_size=2))
    assert read_metadata(gan.model_path).target["source_bands"] == [1, 2, 3]


@pytest.mark.parametrize("grid", ["north-up", "rotated"])
def test_polygons_on_a_rotated_raster_get_as_many_samples_spread_as_evenly_as_on_a_north_up_one(tmp_path, grid):
    """Samples per polygon follow its area in pixels (the geotransform's determinant) and cover all of it."""
    from osgeo import ogr

    from geoml_plugin.core.raster.labels import read_vector_labels

    gt = UTM_GT if grid == "north-up" else ROTATED_GT
    gtiff(tmp_path / "img.tif", np.ones((60, 60), np.uint8), gt=gt)
    info = raster_info(str(tmp_path / "img.tif"))
    cx, cy = info.pixel_to_world(30, 30)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "poly.gpkg"))
    lay = ds.CreateLayer("poly", srs, ogr.wkbPolygon)
    lay.CreateField(ogr.FieldDefn("label", ogr.OFTString))
    f = ogr.Feature(lay.GetLayerDefn())
    f.SetField("label", "a")
    f.SetGeometry(ogr.CreateGeometryFromWkt(  # 150 m × 150 m: 225 pixels of 10 m × 10 m
        f"POLYGON(({cx - 75} {cy - 75},{cx + 75} {cy - 75},{cx + 75} {cy + 75},{cx - 75} {cy + 75},{cx - 75} {cy - 75}))"))
    lay.CreateFeature(f)
    ds = None
    ls = read_vector_labels(str(tmp_path / "poly.gpkg"), "label", info, polygon_samples=10_000)
    assert len(ls) == 225
    xs, ys = zip(*(info.pixel_to_world(c, r) for c, r in zip(ls.cols, ls.rows)))
    east, north = np.asarray(xs) > cx, np.asarray(ys) > cy
    quarters = [np.mean(e & n) for e in (east, ~east) for n in (north, ~north)]
    assert min(quarters) > 0.15, quarters


def test_a_near_infrared_band_gdal_marks_as_alpha_stays_an_input_band_and_no_mask(tmp_path):
    """GDAL marks band 4 of any 4-band Byte GeoTIFF made without PHOTOMETRIC as alpha: RGB + NIR imagery
    written by a script. That band holds image data: it is neither left out nor read as a transparency mask."""
    rng = np.random.default_rng(0)
    img = rng.integers(1, 200, (4, 40, 40)).astype(np.uint8)
    img[3, :5, :5] = 0  # dark water in the NIR band: still valid data
    gtiff(tmp_path / "rgbn.tif", img)  # closed on collection
    ds = gdal.Open(str(tmp_path / "rgbn.tif"))
    assert ds.GetRasterBand(4).GetColorInterpretation() == gdal.GCI_AlphaBand  # what GDAL did
    with RasterReader(str(tmp_path / "rgbn.tif"), None, skip_alpha=True) as r:
        assert r.bands == [1, 2, 3, 4] and r.alpha_note() == ""
        data, valid = r.read(0, 0, 40, 40)
    assert valid.all()
    np.testing.assert_array_equal(data[3], img[3])

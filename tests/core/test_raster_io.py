import os

import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.core.errors import InputError
from geoml_plugin.core.raster.classes import category_names, color_table, make_classes
from geoml_plugin.core.raster.io import RasterReader, RasterWriter, category_names_of, parse_band_list, raster_info
from tests.conftest import leftovers, write_raster


def test_write_read_round_trip_keeps_georeference_and_nodata(tmp_path):
    arr = np.arange(3 * 40 * 50, dtype=np.float32).reshape(3, 40, 50)
    gt = (300000.0, 5.0, 0.0, 4000000.0, 0.0, -5.0)
    p = write_raster(tmp_path / "a.tif", arr, gt=gt, epsg=26914, nodata=-1.0)
    info = raster_info(p)
    assert (info.width, info.height, info.band_count) == (50, 40, 3)
    assert info.geotransform == gt
    assert "26914" in info.crs_wkt
    assert info.nodata == [-1.0, -1.0, -1.0]
    ds = gdal.Open(p)
    md = ds.GetMetadata("IMAGE_STRUCTURE")
    assert md.get("COMPRESSION") == "DEFLATE"
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    np.testing.assert_array_equal(ds.ReadAsArray(), arr)


def test_boundless_window_pads_and_masks(tmp_path):
    arr = np.full((2, 10, 10), 7, dtype=np.uint16)
    arr[:, 0, 0] = 0
    p = write_raster(tmp_path / "b.tif", arr, nodata=0)
    with RasterReader(p) as r:
        data, valid = r.read(-3, -2, 8, 8)
    assert data.shape == (2, 8, 8) and data.dtype == np.float32
    assert not valid[:2].any() and not valid[:, :3].any()  # outside the raster
    assert not valid[2, 3]  # the nodata pixel (0, 0)
    assert valid[3, 4] and data[0, 3, 4] == 7
    assert (data[:, ~valid] == 0).all()


def test_band_selection_and_errors(tmp_path):
    arr = np.stack([np.full((4, 4), i, dtype=np.uint8) for i in (1, 2, 3)])
    p = write_raster(tmp_path / "c.tif", arr)
    with RasterReader(p, [3, 1]) as r:
        data, _ = r.read(0, 0, 4, 4)
    assert data[0, 0, 0] == 3 and data[1, 0, 0] == 1
    assert parse_band_list("1, 3", 3) == [1, 3]
    with pytest.raises(InputError, match="do not exist"):
        parse_band_list([4], 3)
    with pytest.raises(InputError, match="numbers"):
        parse_band_list("red", 3)


def test_nan_counts_as_nodata(tmp_path):
    arr = np.ones((1, 3, 3), dtype=np.float32)
    arr[0, 1, 1] = np.nan
    p = write_raster(tmp_path / "n.tif", arr)
    with RasterReader(p) as r:
        _, valid = r.read(0, 0, 3, 3)
    assert valid.sum() == 8 and not valid[1, 1]


def test_writer_is_atomic_on_error(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with RasterWriter(str(target), 10, 10, 1, np.uint8, (0, 1, 0, 0, 0, -1), "") as w:
            w.write(np.ones((10, 10), np.uint8), 0, 0)
            assert leftovers(tmp_path), "writes go to a temporary file first"
            raise RuntimeError("boom")
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_writer_replaces_existing_file_only_when_complete(tmp_path):
    target = tmp_path / "out.tif"
    write_raster(target, np.full((1, 5, 5), 3, np.uint8))
    with pytest.raises(ValueError):
        with RasterWriter(str(target), 5, 5, 1, np.uint8, (0, 1, 0, 0, 0, -1), "") as w:
            w.write(np.full((5, 5), 9, np.uint8), 0, 0)
            raise ValueError("cancelled")
    assert gdal.Open(str(target)).ReadAsArray()[0, 0] == 3  # old file intact


def test_class_raster_carries_category_names_colours_and_style(tmp_path):
    classes = make_classes(["Water", "Forest", "Urban"])
    target = tmp_path / "cls.tif"
    from geoml_plugin.core.raster.styles import paletted_qml

    with RasterWriter(str(target), 8, 8, 1, np.uint8, (0, 1, 0, 0, 0, -1), "", nodata=0,
                      category_names=category_names(classes), color_table=color_table(classes),
                      qml=paletted_qml(classes)) as w:
        w.write(np.tile(np.arange(4, dtype=np.uint8), (8, 2)), 0, 0)
    assert category_names_of(str(target)) == ["", "Water", "Forest", "Urban"]
    ds = gdal.Open(str(target))  # keep the dataset alive while using its band
    ct = ds.GetRasterBand(1).GetColorTable()
    assert ct.GetColorEntry(1)[:3] == classes[0].rgba()[:3]
    qml = (tmp_path / "cls.qml").read_text()
    assert 'label="Forest"' in qml and 'type="paletted"' in qml


def test_large_output_gets_overviews(tmp_path):
    target = tmp_path / "big.tif"
    with RasterWriter(str(target), 2100, 600, 1, np.uint8, (0, 1, 0, 0, 0, -1), "") as w:
        w.write(np.ones((600, 2100), np.uint8), 0, 0)
    ds = gdal.Open(str(target))
    assert ds.GetRasterBand(1).GetOverviewCount() >= 1


def test_unwritten_areas_are_nodata_also_in_overviews(tmp_path):
    target = tmp_path / "part.tif"
    with RasterWriter(str(target), 2100, 600, 2, np.float32, (0, 1, 0, 0, 0, -1), "", nodata=-9999.0) as w:
        w.write(np.ones((2, 300, 256), np.float32), 0, 0)
    ds = gdal.Open(str(target))
    arr = ds.ReadAsArray()
    assert (arr[:, :300, :256] == 1).all()
    assert (arr[:, 300:, :] == -9999).all() and (arr[:, :, 256:] == -9999).all()
    ov = ds.GetRasterBand(1).GetOverview(0).ReadAsArray()
    assert (ov[200:, :] == -9999).all()


def test_many_window_writes_keep_gdal_cache_bounded(tmp_path, monkeypatch):
    """Dirty tiles are flushed as writing goes, not held until the file is closed."""
    import geoml_plugin.core.raster.io as rio

    monkeypatch.setattr(rio, "FLUSH_BYTES", 1 << 20)
    gdal.SetCacheMax(512 << 20)
    base = gdal.GetCacheUsed()
    with RasterWriter(str(tmp_path / "big.tif"), 2048, 2048, 1, np.float32, (0, 1, 0, 0, 0, -1), "",
                      nodata=0.0) as w:
        peak = 0
        for y in range(0, 2048, 256):
            for x in range(0, 2048, 256):
                w.write(np.full((256, 256), 1.5, np.float32), x, y)
                peak = max(peak, gdal.GetCacheUsed() - base)
    assert peak < 4 << 20  # the whole band is 16 MB
    ds = gdal.Open(str(tmp_path / "big.tif"))
    assert (ds.ReadAsArray() == 1.5).all()


def test_unwritable_destinations_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        RasterWriter(str(tmp_path / "missing" / "x.tif"), 2, 2, 1, np.uint8, (0, 1, 0, 0, 0, -1), "")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(InputError, match="not writable"):
            RasterWriter(str(ro / "x.tif"), 2, 2, 1, np.uint8, (0, 1, 0, 0, 0, -1), "")
    finally:
        os.chmod(ro, 0o700)


def test_band_statistics_ignore_nodata(tmp_path):
    arr = np.zeros((1, 20, 20), np.float32)
    arr[0, :10] = 4.0
    arr[0, 10:] = -9999.0
    p = write_raster(tmp_path / "s.tif", arr, nodata=-9999.0)
    with RasterReader(p) as r:
        mean, std, n = r.band_statistics()
    assert n == 200 and mean[0] == pytest.approx(4.0)


def test_output_named_as_another_raster_format_is_refused(tmp_path):
    """The writer makes GeoTIFFs: 'x.png' or 'x.img' would be a GeoTIFF under another format's extension."""
    for name in ("x.png", "x.IMG", "x.vrt"):
        with pytest.raises(InputError, match="GeoTIFF"):
            RasterWriter(str(tmp_path / name), 8, 8, 1, np.uint8, (0, 1, 0, 0, 0, -1), "")
    assert os.listdir(tmp_path) == []
    for name in ("a.tif", "b.TIFF", "c"):
        with RasterWriter(str(tmp_path / name), 8, 8, 1, np.uint8, (0, 1, 0, 0, 0, -1), "") as w:
            w.write(np.ones((8, 8), np.uint8), 0, 0)
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.TIFF", "c"]


def gpkg_raster(tif, gpkg, table="image"):
    """A GeoPackage raster copy of ``tif`` (lossless PNG tiles); returns its GDAL/QGIS source string."""
    gdal.Translate(str(gpkg), str(tif), format="GPKG", creationOptions=[f"RASTER_TABLE={table}", "TILE_FORMAT=PNG"])
    return f"GPKG:{gpkg}:{table}"


def test_a_geopackage_raster_is_read_through_its_gdal_source_string(tmp_path):
    from geoml_plugin.core.raster.labels import is_raster_source

    arr = np.random.default_rng(0).integers(1, 255, (3, 40, 50)).astype(np.uint8)
    tif = write_raster(tmp_path / "rgb.tif", arr)
    source = gpkg_raster(tif, tmp_path / "rgb.gpkg")
    with RasterReader(source) as r:
        data, valid = r.read(0, 0, 50, 40)
        assert r.info.path == source and r.info.band_count == 3
    np.testing.assert_array_equal(data, arr.astype(np.float32))
    assert valid.all()
    assert raster_info(source).extent == raster_info(tif).extent
    assert is_raster_source(source)


def test_a_source_gdal_cannot_open_says_what_geoml_reads_and_how_to_export(tmp_path):
    wms = "crs=EPSG:3857&format=image/png&layers=roads&styles=&url=http://localhost:1/wms"
    for source in (wms, f"GPKG:{tmp_path / 'x.gpkg'}:image"):
        with pytest.raises(InputError, match="GeoML reads rasters that GDAL can open") as err:
            raster_info(source)
        assert "Raster ▸ Conversion ▸ Translate" in str(err.value)
    with pytest.raises(InputError, match="does not exist"):  # a plain file name that is not there
        raster_info(str(tmp_path / "missing.tif"))

import os

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException, QgsRasterLayer

from tests.conftest import leftovers, write_raster


def _run(params):
    import processing

    return processing.run("geoml:predict", params)


def test_processing_run_predict_writes_styled_class_raster(geoml_provider, scene, sample_model, out_dir):
    out = str(out_dir / "pred.tif")
    conf = str(out_dir / "conf.tif")
    res = _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": out, "OUTPUT_CONFIDENCE": conf,
                "DEVICE": 1, "BATCH_SIZE": 4})
    assert res["OUTPUT"] == out and res["OUTPUT_CONFIDENCE"] == conf
    pred = gdal.Open(out).ReadAsArray()
    truth = gdal.Open(scene.landcover).ReadAsArray()
    assert (pred == truth)[truth > 0].mean() > 0.95
    layer = QgsRasterLayer(out, "pred", "gdal")
    assert layer.isValid()
    assert layer.renderer().type() == "paletted"  # the .qml beside the file is the default style
    labels = {c.label for c in layer.renderer().classes()}
    assert labels == {"Water", "Forest", "Cropland", "Urban"}
    conf_layer = QgsRasterLayer(conf, "conf", "gdal")
    assert conf_layer.renderer().type() == "singlebandpseudocolor"


def test_processing_test_time_views(geoml_provider, scene, sample_model, out_dir):
    out = str(out_dir / "pred4.tif")
    _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": out, "DEVICE": 1, "VIEWS": 2})  # 4 views
    ds = gdal.Open(out)
    assert ds.GetMetadataItem("GEOML_VIEWS") == "4"
    truth = gdal.Open(scene.landcover).ReadAsArray()
    assert (ds.ReadAsArray() == truth)[truth > 0].mean() > 0.9


def test_processing_minimum_region_sieves_the_styled_class_raster(geoml_provider, scene, sample_model, out_dir):
    """MIN_REGION: the class raster is GDAL's sieve of the plain map (8-connected), keeps its classes' style, and
    nothing else is left in the folder."""
    plain, sieved = str(out_dir / "plain.tif"), str(out_dir / "sieved.tif")
    _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": plain, "DEVICE": 1})
    _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": sieved, "DEVICE": 1, "MIN_REGION": 40})
    ref = gdal.GetDriverByName("MEM").CreateCopy("", gdal.Open(plain))
    band = ref.GetRasterBand(1)
    gdal.SieveFilter(band, band.GetMaskBand(), band, 40, 8)
    expected, got, before = band.ReadAsArray(), gdal.Open(sieved).ReadAsArray(), gdal.Open(plain).ReadAsArray()
    assert np.array_equal(got, expected) and not np.array_equal(got, before)
    layer = QgsRasterLayer(sieved, "sieved", "gdal")
    assert layer.renderer().type() == "paletted"
    assert {c.label for c in layer.renderer().classes()} == {"Water", "Forest", "Cropland", "Urban"}
    assert leftovers(out_dir) == []


def test_processing_temporary_output_and_no_confidence(geoml_provider, scene, sample_model):
    res = _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": "TEMPORARY_OUTPUT"})
    assert os.path.exists(res["OUTPUT"])
    assert not res.get("OUTPUT_CONFIDENCE")


def test_bad_model_gives_clean_error_and_no_output(geoml_provider, scene, tmp_path, out_dir):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(QgsProcessingException, match="never loads pickles"):
        _run({"INPUT": scene.image, "MODEL": str(bogus), "OUTPUT": str(out_dir / "x.tif")})
    assert list(out_dir.iterdir()) == []


def test_band_mismatch_gives_clean_error(geoml_provider, sample_model, tmp_path, out_dir):
    img = write_raster(tmp_path / "rgb.tif", np.ones((3, 64, 64), np.uint8))
    with pytest.raises(QgsProcessingException, match="expects 4 band"):
        _run({"INPUT": img, "MODEL": sample_model, "OUTPUT": str(out_dir / "x.tif")})
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


def test_bands_the_model_does_not_use_are_named_in_the_processing_log(geoml_provider, sample_model, scene, tmp_path,
                                                                    out_dir):
    import processing
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)
            super().pushInfo(info)

    ds = gdal.Open(scene.image)
    five = np.concatenate([ds.ReadAsArray(), np.ones((1, ds.RasterYSize, ds.RasterXSize), np.uint16)])
    img = write_raster(tmp_path / "five.tif", five, gt=ds.GetGeoTransform(), nodata=0)
    fb = Log()
    processing.run("geoml:predict", {"INPUT": img, "MODEL": sample_model, "OUTPUT": str(out_dir / "x.tif"),
                                     "DEVICE": 1}, feedback=fb)
    assert "The model uses bands 1, 2, 3, 4 of the raster's 5; band 5 is not used." in fb.lines


def test_a_geopackage_raster_layer_is_classified_as_its_geotiff(geoml_provider, tmp_path, out_dir):
    """A raster layer from a GeoPackage (source 'GPKG:/…/x.gpkg:table') is read by GDAL through that source."""
    from qgis.core import QgsProject

    from tests.core.test_predict import _patch_model
    from tests.core.test_raster_io import gpkg_raster

    model = _patch_model(tmp_path, in_bands=3)
    arr = np.random.default_rng(0).integers(1, 255, (3, 48, 48)).astype(np.uint8)
    tif = write_raster(tmp_path / "rgb.tif", arr)
    layer = QgsRasterLayer(gpkg_raster(tif, tmp_path / "rgb.gpkg"), "rgb from gpkg", "gdal")
    assert layer.isValid() and layer.source().startswith("GPKG:")
    QgsProject.instance().addMapLayer(layer)
    try:
        _run({"INPUT": layer, "MODEL": model, "OUTPUT": str(out_dir / "gpkg.tif"), "DEVICE": 1, "STRIDE": 8})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    _run({"INPUT": tif, "MODEL": model, "OUTPUT": str(out_dir / "tif.tif"), "DEVICE": 1, "STRIDE": 8})
    np.testing.assert_array_equal(gdal.Open(str(out_dir / "gpkg.tif")).ReadAsArray(),
                                  gdal.Open(str(out_dir / "tif.tif")).ReadAsArray())


def test_outputs_are_offered_as_geotiff_only_and_other_formats_refused(geoml_provider, scene, sample_model, out_dir):
    """Every GeoML raster is a GeoTIFF: the output widgets must not offer PNG, ERDAS … (the file would be a GeoTIFF
    under another format's name)."""
    from qgis.core import QgsApplication

    for alg_id in ("geoml:predict", "geoml:fewshot", "geoml:generate"):
        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        assert alg.parameterDefinition("OUTPUT").supportedOutputRasterLayerExtensions() == ["tif"]
    with pytest.raises(QgsProcessingException, match="GeoML writes GeoTIFF"):
        _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": str(out_dir / "x.png")})
    assert list(out_dir.iterdir()) == []


def test_batch_mode_runs_the_algorithm_per_row(geoml_provider, scene, sample_model, out_dir):
    """What the batch dialog does: one run per parameter row, each its own output."""
    import processing

    rows = [{"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": str(out_dir / f"p{i}.tif")} for i in range(2)]
    outs = [processing.run("geoml:predict", r)["OUTPUT"] for r in rows]
    assert all(os.path.exists(o) for o in outs)
    np.testing.assert_array_equal(gdal.Open(outs[0]).ReadAsArray(), gdal.Open(outs[1]).ReadAsArray())


def test_extent_in_another_crs_limits_the_output(geoml_provider, scene, sample_model, out_dir):
    """EXTENT given in WGS 84 is transformed to the raster CRS and clipped."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle

    from geoml_plugin.core.raster.io import raster_info

    src = raster_info(scene.image)
    x0, y0 = src.pixel_to_world(20, 30)
    x1, y1 = src.pixel_to_world(70, 90)
    ct = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32632"), QgsCoordinateReferenceSystem("EPSG:4326"),
                                QgsProject.instance())
    r = ct.transformBoundingBox(QgsRectangle(x0, y1, x1, y0))
    out = str(out_dir / "part.tif")
    _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": out,
          "EXTENT": f"{r.xMinimum()},{r.xMaximum()},{r.yMinimum()},{r.yMaximum()} [EPSG:4326]"})
    info = raster_info(out)
    assert 45 <= info.width <= 56 and 55 <= info.height <= 66  # bounding box of the reprojected extent
    assert abs(info.geotransform[0] - x0) <= 3 * src.geotransform[1]
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": str(out_dir / "none.tif"),
              "EXTENT": "0,1,0,1 [EPSG:4326]"})


def test_processing_overlap_reaches_dense_tiling(geoml_provider, scene, sample_model, out_dir):
    out = str(out_dir / "ov.tif")
    res = _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": out, "DEVICE": 1, "OVERLAP": 2})
    assert os.path.exists(res["OUTPUT"])
    with pytest.raises(QgsProcessingException, match="twice the overlap"):
        _run({"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": str(out_dir / "ov2.tif"), "DEVICE": 1,
              "OVERLAP": 4096})
    assert not os.path.exists(out_dir / "ov2.tif")

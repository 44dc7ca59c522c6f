"""geoml:metatrain and geoml:fewshot through QGIS Processing (processing.run)."""
import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsRasterLayer,
    QgsVectorLayer,
)

from geoml_plugin.core.modelfile import read_metadata
from geoml_plugin.core.raster.io import category_names_of
from tests.conftest import leftovers


def _run(alg, params):
    import processing

    return processing.run(alg, params)


def test_metatrain_and_fewshot_through_processing(geoml_provider, scene, tmp_path, out_dir):
    model = str(tmp_path / "meta.safetensors")
    res = _run("geoml:metatrain", {
        "INPUT": scene.image, "EXTRA_INPUTS": [], "LABELS": scene.points, "LABEL_FIELD": "class_name",
        "ALGORITHM": 0, "WAYS": 0, "SHOTS": 2, "QUERY": 3, "META_BATCH": 2, "ITERATIONS": 20, "PATCH_SIZE": 16,
        "DEVICE": 1, "SEED": 0, "OUTPUT_MODEL": model})
    assert res["OUTPUT_MODEL"] == model
    assert 0.4 < res["VAL_ACCURACY"] <= 1.0 and res["VAL_ACCURACY_CI95"] >= 0
    meta = read_metadata(model)
    assert meta.extra["fewshot"]["algorithm"] == "protonet" and meta.patch_size == 16
    assert meta.extra["fewshot"]["ways"] == 4  # WAYS 0: automatic, all 4 labelled classes

    # a memory layer of support points, as an analyst would digitise them
    support = QgsVectorLayer("Point?crs=EPSG:32632&field=cover:string", "support", "memory")
    from geoml_plugin.core.sampledata import read_label_points

    xy, ids = read_label_points(scene.points)
    names = {1: "water", 2: "forest", 3: "crops", 4: "urban"}
    feats = []
    for k in names:
        for i in np.flatnonzero(ids == k)[:4]:
            f = QgsFeature(support.fields())
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(*xy[i])))
            f.setAttribute("cover", names[k])
            feats.append(f)
    support.dataProvider().addFeatures(feats)
    out, conf, adapted = (str(out_dir / n) for n in ("fs.tif", "fs_conf.tif", "adapted.safetensors"))
    res = _run("geoml:fewshot", {"INPUT": scene.image, "MODEL": model, "SUPPORT": support, "LABEL_FIELD": "cover",
                                 "ADAPT_STEPS": 10, "DEVICE": 1, "STRIDE": 4, "OUTPUT": out,
                                 "OUTPUT_CONFIDENCE": conf, "OUTPUT_MODEL": adapted})
    assert res["OUTPUT"] == out and res["OUTPUT_CONFIDENCE"] == conf and res["OUTPUT_MODEL"] == adapted
    assert res["METHOD"] == "nearest prototype + 10 fine-tuning steps"
    assert category_names_of(out) == ["", "crops", "forest", "urban", "water"]
    layer = QgsRasterLayer(out, "fs", "gdal")
    assert layer.renderer().type() == "paletted"
    assert {c.label for c in layer.renderer().classes()} == {"crops", "forest", "urban", "water"}
    # the map agrees with the true land cover
    truth = gdal.Open(scene.landcover).ReadAsArray()
    pred = gdal.Open(out).ReadAsArray()
    lut = np.array([0, 3, 2, 4, 1])  # crops→Cropland(3), forest→2, urban→4, water→1
    assert (lut[pred] == truth)[truth > 0].mean() > 0.75
    # the adapted model works with geoml:predict
    again = _run("geoml:predict", {"INPUT": scene.image, "MODEL": adapted, "OUTPUT": str(out_dir / "p.tif"),
                                   "STRIDE": 4, "DEVICE": 1})
    np.testing.assert_array_equal(gdal.Open(again["OUTPUT"]).ReadAsArray(), pred)


def test_fewshot_errors_are_clean_processing_errors(geoml_provider, scene, sample_model, out_dir):
    support = QgsVectorLayer("Point?crs=EPSG:32632&field=cover:string", "one class", "memory")
    f = QgsFeature(support.fields())
    f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(500500, 5099500)))
    f.setAttribute("cover", "water")
    support.dataProvider().addFeatures([f])
    # the sample model is a dense per-pixel model: not a starting point for few-shot
    with pytest.raises(QgsProcessingException, match="needs a GeoML meta-model or a patch classifier"):
        _run("geoml:fewshot", {"INPUT": scene.image, "MODEL": sample_model, "SUPPORT": support,
                               "LABEL_FIELD": "cover", "OUTPUT": str(out_dir / "x.tif")})
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


def test_metatrain_with_too_many_ways_is_a_clean_error(geoml_provider, scene, out_dir):
    with pytest.raises(QgsProcessingException, match="WAYS is 6 but the labels have only 4 class"):
        _run("geoml:metatrain", {"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name",
                                 "WAYS": 6, "PATCH_SIZE": 16, "OUTPUT_MODEL": str(out_dir / "m.safetensors")})
    assert list(out_dir.iterdir()) == []

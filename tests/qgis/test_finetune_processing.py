"""geoml:finetune through QGIS Processing, then geoml:predict on its model."""
import json
import os
import shutil
import subprocess

import pytest
from osgeo import gdal
from qgis.core import QgsFeature, QgsProcessingException, QgsRasterLayer, QgsVectorLayer

from geoml_plugin.core.raster.io import category_names_of
from tests.conftest import leftovers
from tests.qgis.test_qgis_process_and_desktop import _env, staged  # noqa: F401 (fixture)
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

TINY = {"PATCH_SIZE": 16, "EPOCHS": 4, "BATCH_SIZE": 16, "DEVICE": 1}



pytestmark = pytest.mark.usefixtures("release_provider")


def _run(alg, params):
    import processing

    return processing.run(alg, params)


def test_finetune_then_predict_gives_named_styled_classes(geoml_provider, scene, out_dir):
    model, report = str(out_dir / "lc.safetensors"), str(out_dir / "lc.html")
    res = _run("geoml:finetune", {"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name",
                                  "OUTPUT_MODEL": model, "OUTPUT_REPORT": report, **TINY})
    assert res["OUTPUT_MODEL"] == model and os.path.exists(model)
    assert res["OUTPUT_REPORT"] == report and os.path.exists(report)
    assert 0.0 <= res["OVERALL_ACCURACY"] <= 1.0 and res["KAPPA"] is not None and res["RMSE"] is None
    assert res["MEAN_IOU"] is None  # patch classes: no IoU
    metrics = json.loads(res["METRICS"])
    assert set(metrics["per_class"]) == {"Water", "Forest", "Cropland", "Urban"}
    assert metrics["overall_accuracy"] == res["OVERALL_ACCURACY"]
    pred = _run("geoml:predict", {"INPUT": scene.image, "MODEL": model, "OUTPUT": str(out_dir / "lc.tif"),
                                  "STRIDE": 8})
    names = category_names_of(pred["OUTPUT"])
    assert sorted(n for n in names if n) == ["Cropland", "Forest", "Urban", "Water"]
    layer = QgsRasterLayer(pred["OUTPUT"], "lc", "gdal")
    assert layer.renderer().type() == "paletted"
    assert gdal.Open(pred["OUTPUT"]).ReadAsArray().max() <= 4


def test_a_model_name_without_suffix_gets_safetensors_as_in_train_gan(geoml_provider, scene, out_dir):
    """Before: geoml:finetune wrote the model as given ('lc', no suffix) while geoml:traingan appended
    .safetensors; both follow core.outputs.output_name now."""
    res = _run("geoml:finetune", {"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name",
                                  "OUTPUT_MODEL": str(out_dir / "lc"), **{**TINY, "EPOCHS": 1}})
    model = str(out_dir / "lc.safetensors")
    assert res["OUTPUT_MODEL"] == model and os.path.exists(model)
    assert not (out_dir / "lc").exists()


def test_segmentation_from_polygons_then_predict_keeps_the_grid_names_and_nodata(geoml_provider, scene, out_dir):
    model = str(out_dir / "seg.safetensors")
    res = _run("geoml:finetune", {"INPUT": scene.image, "LABELS": scene.polygons, "LABEL_FIELD": "class_name",
                                  "TASK": 1, "OUTPUT_MODEL": model, **TINY, "EPOCHS": 2})
    metrics = json.loads(res["METRICS"])
    assert metrics["evaluated_on"] == "validation" and 0.0 <= res["OVERALL_ACCURACY"] <= 1.0
    assert 0.0 <= res["MEAN_IOU"] == metrics["mean_iou"] <= 1.0
    assert {c: v["iou"] is not None for c, v in metrics["per_class"].items()} == dict.fromkeys(
        ["Water", "Forest", "Cropland", "Urban"], True)
    pred = _run("geoml:predict", {"INPUT": scene.image, "MODEL": model, "OUTPUT": str(out_dir / "seg.tif"),
                                  "OUTPUT_CONFIDENCE": str(out_dir / "seg_conf.tif")})
    src, out, conf = (gdal.Open(p) for p in (scene.image, pred["OUTPUT"], pred["OUTPUT_CONFIDENCE"]))
    for d in (out, conf):
        assert (d.RasterXSize, d.RasterYSize, d.GetGeoTransform()) == (src.RasterXSize, src.RasterYSize,
                                                                       src.GetGeoTransform())
    assert sorted(n for n in category_names_of(pred["OUTPUT"]) if n) == ["Cropland", "Forest", "Urban", "Water"]
    assert QgsRasterLayer(pred["OUTPUT"], "seg", "gdal").renderer().type() == "paletted"
    nodata = (src.ReadAsArray() == 0).any(axis=0)
    classes, confidence = out.ReadAsArray(), conf.ReadAsArray()
    assert nodata.any() and (classes[nodata] == 0).all() and (confidence[nodata] == -1).all()
    assert (classes[~nodata] >= 1).all() and (confidence[~nodata] >= 0.25).all() and confidence.max() <= 1


def test_memory_layer_labels_are_exported_and_band_subset_is_used(geoml_provider, scene, out_dir):
    src = QgsVectorLayer(scene.points, "pts", "ogr")
    mem = QgsVectorLayer(f"Point?crs={src.crs().authid()}&field=kind:string", "clicked", "memory")
    feats = []
    for f in src.getFeatures():
        g = QgsFeature(mem.fields())
        g.setGeometry(f.geometry())
        g["kind"] = "water" if f["class_name"] == "Water" else "land"
        feats.append(g)
    mem.dataProvider().addFeatures(feats)
    model = str(out_dir / "m.safetensors")
    res = _run("geoml:finetune", {"INPUT": scene.image, "INPUT_BANDS": [1, 4], "LABELS": mem, "LABEL_FIELD": "kind",
                                  "OUTPUT_MODEL": model, **TINY})
    from geoml_plugin.core.modelfile import read_metadata

    meta = read_metadata(res["OUTPUT_MODEL"])
    assert meta.in_bands == 2 and meta.band_indices == [1, 4]
    assert [c.name for c in meta.classes] == ["land", "water"]


def test_bad_input_is_a_clean_processing_error_and_writes_nothing(geoml_provider, scene, out_dir):
    with pytest.raises(QgsProcessingException, match="no field 'nope'"):
        _run("geoml:finetune", {"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "nope",
                                "OUTPUT_MODEL": str(out_dir / "m.safetensors"), **TINY})
    with pytest.raises(QgsProcessingException, match="larger than the raster"):
        _run("geoml:finetune", {"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name",
                                "OUTPUT_MODEL": str(out_dir / "m.safetensors"), **{**TINY, "PATCH_SIZE": 512}})
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="qgis_process.bin not installed")
def test_qgis_process_runs_finetune(staged, tmp_path, scene):  # noqa: F811 (pytest fixture)
    env = _env(staged, tmp_path / "home")
    (tmp_path / "home").mkdir()

    def run(*a):
        return subprocess.run(["qgis_process.bin", *a], env=env, capture_output=True, text=True, timeout=600)

    assert run("plugins", "enable", "geoml_plugin").returncode == 0
    model = tmp_path / "qp.safetensors"
    res = run("--json", "run", "geoml:finetune", "--", f"INPUT={scene.image}", f"LABELS={scene.points}",
              "LABEL_FIELD=class_name", "PATCH_SIZE=16", "EPOCHS=2", "DEVICE=1", f"OUTPUT_MODEL={model}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    payload = json.loads(res.stdout[res.stdout.index("{"):])
    assert payload["results"]["OUTPUT_MODEL"] == str(model) and model.exists()
    assert 0 <= payload["results"]["OVERALL_ACCURACY"] <= 1


def test_label_field_is_text_so_a_raster_labels_layer_cannot_crash_the_dialog(geoml_provider):
    """A field parameter whose parent accepts rasters crashes QGIS's Processing dialog on a raster parent."""
    from qgis.core import QgsApplication, QgsProcessingParameterField, QgsProcessingParameterString

    alg = QgsApplication.processingRegistry().algorithmById("geoml:finetune")
    param = alg.parameterDefinition("LABEL_FIELD")
    assert isinstance(param, QgsProcessingParameterString) and not isinstance(param, QgsProcessingParameterField)


def test_regression_from_a_target_raster_returns_its_metrics_and_a_value_map(geoml_provider, scene, out_dir):
    model = str(out_dir / "chm.safetensors")
    res = _run("geoml:finetune", {"INPUT": scene.image, "LABELS": scene.canopy_height, "TASK": 2, "MAX_SAMPLES": 30,
                                  "OUTPUT_MODEL": model, **{**TINY, "EPOCHS": 1}})
    assert res["OVERALL_ACCURACY"] is None and res["KAPPA"] is None and res["MEAN_IOU"] is None
    metrics = json.loads(res["METRICS"])
    assert res["RMSE"] == metrics["rmse"] > 0 and res["MAE"] == metrics["mae"] and res["R2"] == metrics["r2"]
    assert metrics["evaluated_on"] == "validation" and "per_class" not in metrics
    pred = _run("geoml:predict", {"INPUT": scene.image, "MODEL": model, "OUTPUT": str(out_dir / "chm.tif")})
    ds = gdal.Open(pred["OUTPUT"])
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Float32 and band.GetNoDataValue() == -9999.0
    assert band.GetDescription() == "canopy height (m)"
    assert ds.GetGeoTransform() == gdal.Open(scene.image).GetGeoTransform()
    assert pred["OUTPUT_CONFIDENCE"] is None
    layer = QgsRasterLayer(pred["OUTPUT"], "chm", "gdal")
    assert layer.renderer().type() == "singlebandpseudocolor"
    assert -1 < layer.renderer().classificationMin() < layer.renderer().classificationMax() < 40  # metres of canopy


def test_r2_output_is_empty_not_zero_when_every_held_out_value_is_the_same(geoml_provider, tmp_path, out_dir):
    import numpy as np
    from osgeo import ogr

    from tests.conftest import write_raster
    from tests.core.test_finetune import write_points

    raster = write_raster(tmp_path / "x.tif", np.random.default_rng(0).normal(100, 10, (1, 64, 64)).astype(np.float32))
    # values 0, 5, 5, 10: 0 and 10 are alone in their value bins, so the split keeps one of the two 5s apart
    points = write_points(tmp_path / "h.gpkg", [(8, 8, 0.0), (8, 40, 5.0), (40, 8, 5.0), (40, 40, 10.0)], field="h",
                          ftype=ogr.OFTReal)
    res = _run("geoml:finetune", {"INPUT": raster, "LABELS": points, "LABEL_FIELD": "h", "TASK": 2,
                                  "OUTPUT_MODEL": str(out_dir / "h.safetensors"),
                                  **{**TINY, "PATCH_SIZE": 8, "EPOCHS": 1, "BATCH_SIZE": 8}})
    assert res["R2"] is None and res["RMSE"] is not None and res["MAE"] is not None
    assert json.loads(res["METRICS"])["r2"] is None

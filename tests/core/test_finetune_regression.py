"""Regression fine-tuning as an analyst uses it: values in the target's units, nodata, georeference, styling,
metrics that match a hand computation, and clear messages for unusable value fields."""
import json
import re

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from geoml_plugin.core.errors import InputError
from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
from geoml_plugin.core.finetune.metrics import regression_metrics
from geoml_plugin.core.modelfile import read_metadata
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.progress import Feedback
from tests.conftest import leftovers, write_raster
from tests.core.test_finetune import write_points
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

TINY = dict(task="regression", patch_size=8, batch_size=8, device="cpu")


def test_regression_metrics_match_a_hand_computation():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0, np.nan], [1.0, 3.0, 2.0, 6.0, 5.0])  # NaN truth is not counted
    # errors 0, 1, −1, 2: squared sum 6, mean |e| 1, mean e 0.5; ss_tot = 5
    assert m == {"samples": 4, "rmse": round(np.sqrt(1.5), 6), "mae": 1.0, "r2": -0.2, "bias": 0.5}



def test_r2_is_undefined_not_zero_when_every_held_out_value_is_the_same(tmp_path, out_dir):
    m = regression_metrics([5.0, 5.0, 5.0], [4.0, 5.0, 8.0])  # errors −1, 0, 3
    assert m == {"samples": 3, "rmse": round(np.sqrt(10 / 3), 6), "mae": round(4 / 3, 6), "r2": None,
                 "bias": round(2 / 3, 6)}
    # values 0, 5, 5, 10: 0 and 10 are alone in their value bins, so the split keeps one of the two 5s apart
    raster = write_raster(tmp_path / "x.tif", np.random.default_rng(0).normal(100, 10, (1, 64, 64)).astype(np.float32))
    points = write_points(tmp_path / "h.gpkg", [(8, 8, 0.0), (8, 40, 5.0), (40, 8, 5.0), (40, 40, 10.0)], field="h",
                          ftype=ogr.OFTReal)
    log = []
    res = run_finetune(FinetuneConfig(raster, points, "h", str(out_dir / "h.safetensors"), epochs=1,
                                      output_report=str(out_dir / "h.html"), **TINY), Feedback(on_log=log.append))
    assert res.n_val == 1 and res.metrics["evaluated_on"] == "validation"
    assert res.metrics["r2"] is None and res.metrics["rmse"] >= 0
    assert read_metadata(res.model_path).metrics["r2"] is None
    assert json.loads((out_dir / "h.json").read_text())["metrics"]["r2"] is None  # null, not 0
    assert "R² undefined (all held-out values equal)" in res.summary()
    assert any("R² undefined (all held-out values equal)" in line for line in log)
    html = (out_dir / "h.html").read_text()
    assert "<b>R²</b> undefined (all held-out values equal)" in html

@pytest.fixture(scope="module")
def biomass(tmp_path_factory):
    """6×6 blocks of 12 px, a brightness per block, a nodata corner; a point per block with biomass in g/m²
    (values in the thousands) = 2000·brightness + 1000."""
    d = tmp_path_factory.mktemp("biomass")
    rng = np.random.default_rng(0)
    lvl = rng.uniform(0, 1, (6, 6))
    img = (np.kron(lvl, np.ones((12, 12)))[None] * 100 + rng.normal(0, 2, (1, 72, 72))).astype(np.float32)
    img[:, :12, 60:] = -9999.0  # the top-right block is nodata: its point is skipped, its pixels are nodata
    raster = write_raster(d / "x.tif", img, nodata=-9999.0)
    pts = [(i * 12 + 6, j * 12 + 6, float(2000 * lvl[i, j] + 1000)) for i in range(6) for j in range(6)]
    return raster, write_points(d / "agb.gpkg", pts, field="agb", ftype=ogr.OFTReal), pts


def test_point_regression_map_is_in_target_units_georeferenced_styled_and_its_metrics_are_right(biomass, out_dir):
    raster, points, pts = biomass
    res = run_finetune(FinetuneConfig(raster, points, "agb", str(out_dir / "agb.safetensors"), epochs=5,
                                      validation_fraction=0, augment=False, **TINY))
    assert res.metrics["samples"] == 35  # the point on nodata is skipped
    out, conf = out_dir / "agb.tif", out_dir / "agb_conf.tif"
    r = run_predict(PredictConfig(raster, res.model_path, str(out), confidence_path=str(conf), stride=1, device="cpu"))
    assert r.confidence_path is None and not conf.exists() and leftovers(out_dir) == []
    src, ds = gdal.Open(raster), gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Float32 and band.GetNoDataValue() == -9999.0
    assert ds.GetGeoTransform() == src.GetGeoTransform()
    assert osr.SpatialReference(ds.GetProjection()).IsSame(osr.SpatialReference(src.GetProjection()))
    assert band.GetDescription() == "agb"
    pred = ds.ReadAsArray()
    assert (pred[:12, 60:] == -9999.0).all() and (pred[12:] != -9999.0).all()
    # with stride 1 each pixel is the window centred on it, as in training: the metrics (evaluated on the
    # training points here) are those of the map at the points, in g/m², not normalised
    at = np.array([pred[r_, c] for r_, c, _ in pts])
    truth = np.array([v for *_, v in pts])
    hand = regression_metrics(np.where(at == -9999.0, np.nan, truth), at)
    for k in ("samples", "rmse", "mae", "r2", "bias"):
        assert res.metrics[k] == pytest.approx(hand[k], rel=1e-4, abs=1e-3), k
    assert 800 < pred[pred != -9999.0].mean() < 3200
    # a colour ramp over the values, with a legend in plain numbers (no 1.23e+03)
    qml = (out_dir / "agb.qml").read_text()
    assert 'type="singlebandpseudocolor"' in qml
    lo, hi = (float(v) for v in re.search(r'minimumValue="([^"]+)" maximumValue="([^"]+)"', qml).groups())
    assert 800 < lo < hi < 3200
    labels = re.findall(r'<item [^>]*label="([^"]*)"', qml)
    assert len(labels) >= 5 and all(re.fullmatch(r"-?\d+(\.\d+)?", s) for s in labels), labels


def test_target_raster_keeps_its_name_and_units(tmp_path, out_dir):
    rng = np.random.default_rng(2)
    img = rng.normal(100, 10, (2, 48, 48)).astype(np.float32)
    raster = write_raster(tmp_path / "x.tif", img)
    height = (0.2 * img[0] - 5).astype(np.float32)
    target = write_raster(tmp_path / "chm.tif", height, nodata=-9999.0)
    ds = gdal.Open(target, gdal.GA_Update)
    ds.GetRasterBand(1).SetDescription("canopy height (m)")
    ds = None
    res = run_finetune(FinetuneConfig(raster, target, "", str(out_dir / "chm.safetensors"), epochs=1,
                                      max_raster_samples=30, output_report=str(out_dir / "chm.html"), **TINY))
    meta = read_metadata(res.model_path)
    assert meta.target["name"] == "canopy height (m)" and meta.target["units"] == "m"
    # the report says what was predicted, in which units, and the errors in those units
    html = (out_dir / "chm.html").read_text()
    assert "<tr><th>Labels</th><td>chm.tif (target raster)</td></tr>" in html and "()" not in html
    assert "Class balance" not in html  # classes only: no empty row for a regression
    assert "<tr><th>Target</th><td>canopy height (m)</td></tr><tr><th>Target units</th><td>m</td></tr>" in html
    num = r"-?[\d.]+(e[+-]\d+)?"
    assert re.search(rf"<b>RMSE</b> {num} m · <b>MAE</b> {num} m · <b>R²</b> [^·]+ · <b>bias</b> {num} m · ", html)
    assert re.search(rf"RMSE {num} m, MAE {num} m, R²", res.summary())
    payload = json.loads((out_dir / "chm.json").read_text())
    n = payload["metrics"]["samples"]  # per-pixel regression: held-out pixels, and said so
    assert f"{n} pixels (validation)" in html and res.summary().endswith(f"(validation, {n} pixels)")
    assert payload["target"]["name"] == "canopy height (m)" and payload["target"]["units"] == "m"
    for p in ("chm.html", "chm.json"):
        (out_dir / p).unlink()
    out = out_dir / "chm_values.tif"
    run_predict(PredictConfig(raster, res.model_path, str(out), device="cpu"))
    assert gdal.Open(str(out)).GetRasterBand(1).GetDescription() == "canopy height (m)"
    assert "#440154" in (out_dir / "chm_values.qml").read_text()  # a value ramp (viridis), not terrain colours


def _bad(raster, labels, field, match, out_dir):
    with pytest.raises(InputError, match=match):
        run_finetune(FinetuneConfig(raster, labels, field, str(out_dir / "m.safetensors"), epochs=1, **TINY))
    assert list(out_dir.iterdir()) == []


def test_unusable_value_fields_get_clear_messages(tmp_path, out_dir):
    raster = write_raster(tmp_path / "x.tif", np.random.default_rng(0).normal(100, 10, (1, 64, 64)).astype(np.float32))
    cells = [(8 + 16 * i, 8 + 16 * j) for i in range(4) for j in range(4)]
    text = write_points(tmp_path / "t.gpkg", [(r, c, f"{k}.5") for k, (r, c) in enumerate(cells)], field="h")
    _bad(raster, text, "h", r"'h' is a text field.*to_real\(\"h\"\)", out_dir)
    dates = write_points(tmp_path / "d.gpkg", [(r, c, "2020-01-01") for r, c in cells], field="day", ftype=ogr.OFTDate)
    _bad(raster, dates, "day", "'day' is a date field", out_dir)
    const = write_points(tmp_path / "c.gpkg", [(r, c, 7.5) for r, c in cells], field="h", ftype=ogr.OFTReal)
    _bad(raster, const, "h", r"All 16 labels have the same value \(7\.5\) in field 'h'", out_dir)
    nulls = write_points(tmp_path / "n.gpkg", [(r, c, None if k == 3 else float(k)) for k, (r, c) in enumerate(cells)],
                         field="h", ftype=ogr.OFTReal)
    _bad(raster, nulls, "h", "1 label.* no value in field 'h'", out_dir)

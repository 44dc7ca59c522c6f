"""Pixel segmentation (task 'segmentation'): held-out metrics, labels and maps an analyst relies on."""
import json

import numpy as np
import pytest
from osgeo import ogr, osr

from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
from geoml_plugin.core.finetune.metrics import classification_metrics
from geoml_plugin.core.progress import Feedback
from tests.conftest import write_raster
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

GT = (500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0)


def write_squares(path, squares, field="label", ftype=ogr.OFTString, gt=GT):
    """A GeoPackage of axis-aligned polygons given as (row0, col0, rows, cols, value) in pixels of ``gt``."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lay = ds.CreateLayer("labels", srs, ogr.wkbPolygon)
    lay.CreateField(ogr.FieldDefn(field, ftype))
    for r0, c0, h, w, v in squares:
        x0, y0 = gt[0] + c0 * gt[1], gt[3] + r0 * gt[5]
        x1, y1 = x0 + w * gt[1], y0 + h * gt[5]
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        f = ogr.Feature(lay.GetLayerDefn())
        f.SetField(field, v)
        f.SetGeometry(poly)
        lay.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture(scope="module")
def checkerboard(tmp_path_factory):
    """A 48×48 raster with a 2×2 checkerboard of touching 8×8-pixel polygons (two 'bright', two 'dark')
    in its middle: a 16-pixel patch around any polygon reaches into its neighbours."""
    d = tmp_path_factory.mktemp("checker")
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (1, 48, 48)).astype(np.float32)
    squares = [(16, 16, 8, 8, "bright"), (16, 24, 8, 8, "dark"), (24, 16, 8, 8, "dark"), (24, 24, 8, 8, "bright")]
    fid_map = np.zeros((48, 48), np.int64)  # which polygon (GeoPackage FID, from 1) each pixel is in
    for fid, (r0, c0, h, w, v) in enumerate(squares, start=1):
        img[0, r0:r0 + h, c0:c0 + w] += 80 if v == "bright" else -40
        fid_map[r0:r0 + h, c0:c0 + w] = fid
    return write_raster(d / "img.tif", img), write_squares(d / "squares.gpkg", squares), fid_map


def spy_on_trainer(monkeypatch) -> dict:
    """What fine-tuning hands its Trainer: filled with data, train_idx, val_idx and a copy of the labels y."""
    from geoml_plugin.core.finetune import trainer as trainer_mod

    seen = {}
    original = trainer_mod.Trainer.__init__

    def spy(self, model, data, train_idx, val_idx, *args, **kwargs):
        seen.update(data=data, train_idx=train_idx, val_idx=val_idx, y=data.y.copy())
        original(self, model, data, train_idx, val_idx, *args, **kwargs)

    monkeypatch.setattr(trainer_mod.Trainer, "__init__", spy)
    return seen


def test_validation_metrics_count_each_held_out_pixel_once_and_training_never_sees_their_labels(
        checkerboard, out_dir, monkeypatch):
    raster, polygons, fid_map = checkerboard
    seen = spy_on_trainer(monkeypatch)
    res = run_finetune(FinetuneConfig(raster, polygons, "label", str(out_dir / "seg.safetensors"), task="segmentation",
                                      patch_size=16, epochs=1, batch_size=4, validation_fraction=0.5, device="cpu"))
    data, y = seen["data"], seen["y"]
    val_fids = set(data.groups[seen["val_idx"]].tolist())
    assert len(val_fids) == 2  # one polygon of each class held out
    # every labelled pixel of a patch, in raster coordinates: is it in a held-out polygon?
    size = data.patch + 2 * data.margin
    x0 = np.floor(data.labels.cols).astype(int) - size // 2
    y0 = np.floor(data.labels.rows).astype(int) - size // 2

    def fids_of_labelled(i):
        rr, cc = np.nonzero(y[i] >= 0)
        return set(fid_map[rr + y0[i], cc + x0[i]].tolist())

    for i in seen["train_idx"]:
        assert not fids_of_labelled(i) & val_fids, "a training patch carries labels of a held-out polygon"
    for i in seen["val_idx"]:
        assert fids_of_labelled(i) <= val_fids, "a validation patch scores pixels of a training polygon"
    # the metrics: each of the 2 held-out 8×8 polygons' 64 pixels once, nothing else
    assert res.metrics["evaluated_on"] == "validation"
    assert res.metrics["samples"] == 128
    assert {k: v["support"] for k, v in res.metrics["per_class"].items()} == {"bright": 64, "dark": 64}


def test_overlapping_polygons_burn_the_class_and_the_feature_id_of_the_same_polygon(tmp_path):
    """Which polygon a mask pixel belongs to decides which side of the split it is on: its class must come from
    that same polygon, or a held-out pixel is scored (and a training pixel learnt) with a neighbour's class."""
    from geoml_plugin.core.raster.io import raster_info
    from geoml_plugin.core.raster.labels import rasterize_feature_ids, rasterize_window

    info = raster_info(write_raster(tmp_path / "img.tif", np.zeros((1, 32, 32), np.float32)))
    # FID 1 'water' (class 1) at columns 4–19, FID 2 'forest' (class 0) over columns 12–27, FID 3 'water' on 20–27
    polygons = write_squares(tmp_path / "p.gpkg", [(4, 4, 16, 16, "water"), (4, 12, 16, 16, "forest"),
                                                   (4, 20, 16, 8, "water")])
    window = (0, 0, 32, 32)
    cls = rasterize_window(polygons, "label", info, window, classes=["forest", "water"])
    ids = rasterize_feature_ids(polygons, info, [window])[0]
    class_of_fid = np.array([-1, 1, 0, 1])  # FID → class; FID −1 (outside every polygon) → −1 (unlabelled)
    np.testing.assert_array_equal(cls, class_of_fid[np.maximum(ids, 0)])
    # the polygon drawn last is on top, as on the QGIS canvas
    assert (cls[10, 8], ids[10, 8]) == (1, 1) and (cls[10, 16], ids[10, 16]) == (0, 2)
    assert (cls[10, 24], ids[10, 24]) == (1, 3)

def test_iou_per_class_and_mean_iou_match_a_hand_computation():
    # truth → prediction: water 3 right, 1 as forest; forest 2 as water, 4 right; no urban pixel at all
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, -1]
    pred = [0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 2]  # the unlabelled pixel (−1) is not counted
    m = classification_metrics(truth, pred, ["water", "forest", "urban"], iou=True)
    assert m["confusion_matrix"] == [[3, 1, 0], [2, 4, 0], [0, 0, 0]]
    # IoU = TP / (TP + FP + FN): water 3 / (3 + 2 + 1), forest 4 / (4 + 1 + 2); urban is in neither: undefined
    assert [m["per_class"][c]["iou"] for c in ("water", "forest", "urban")] == [0.5, round(4 / 7, 4), None]
    assert m["mean_iou"] == round((0.5 + 4 / 7) / 2, 4)  # over the classes that occur
    assert "mean_iou" not in classification_metrics(truth, pred, ["water", "forest", "urban"])  # patch classes


def test_segmentation_report_json_and_log_give_iou_per_class_and_mean_iou_of_the_held_out_pixels(checkerboard,
                                                                                                  out_dir):
    raster, polygons, _ = checkerboard
    log = []
    res = run_finetune(FinetuneConfig(raster, polygons, "label", str(out_dir / "seg.safetensors"), task="segmentation",
                                      patch_size=16, epochs=1, batch_size=4, validation_fraction=0.5, device="cpu",
                                      output_report=str(out_dir / "seg.html")), Feedback(on_log=log.append))
    m = json.loads((out_dir / "seg.json").read_text())["metrics"]
    assert m["samples"] == 128  # the held-out pixels: two 8×8 polygons
    cm = np.array(m["confusion_matrix"])
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    hand = {c: round(float(tp[i] / union[i]), 4) for i, c in enumerate(m["class_names"])}
    assert {c: v["iou"] for c, v in m["per_class"].items()} == hand
    assert m["mean_iou"] == pytest.approx(np.mean(list(hand.values())), abs=1e-4)
    html = (out_dir / "seg.html").read_text()
    assert f"<b>mean IoU</b> {m['mean_iou']:.3f}" in html and "<th>IoU</th>" in html
    for c, v in hand.items():
        assert f"<td>{c}</td>" in html and f"<td>{v:.3f}</td>" in html
    assert f"mean IoU {m['mean_iou']:.3f}" in res.summary()
    assert res.summary().endswith(f"(validation, {m['samples']} pixels)")  # pixels are counted, not patches
    assert any(f"mean IoU {m['mean_iou']:.3f}" in line for line in log)
    assert any("IoU per class: " + ", ".join(f"{c} {v:.3f}" for c, v in hand.items()) in line for line in log)


def test_a_label_raster_keeps_held_out_areas_apart_and_its_classes_name_and_colour_the_map(tmp_path, out_dir,
                                                                                            monkeypatch):
    """Label raster (nodata 0 = unlabelled, categories and colours) → segmentation model → styled class map on the
    input's grid, nodata kept; validation pixels are those of held-out 16-pixel areas only, once each."""
    from osgeo import gdal

    from geoml_plugin.core.predict import PredictConfig, run_predict
    from geoml_plugin.core.raster.io import RasterWriter, srs_from_wkt

    rng = np.random.default_rng(1)
    h, w = 48, 41  # odd width: not a multiple of the patch
    truth = np.zeros((h, w), np.uint8)
    truth[4:44, 2:20], truth[4:44, 22:39] = 3, 7  # two classes with raw values 3 and 7; 0 unlabelled
    img = rng.normal(100, 5, (2, h, w)).astype(np.float32)
    img[:, truth == 7] += 60
    img[:, 0, :5] = -9999.0  # input nodata
    raster = write_raster(tmp_path / "img.tif", img, nodata=-9999.0)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    names = [""] * 8
    names[3], names[7] = "Meadow", "Roof"
    with RasterWriter(str(tmp_path / "lab.tif"), w, h, 1, np.uint8, GT, srs.ExportToWkt(), nodata=0,
                      category_names=names, color_table={3: (0, 255, 0, 255), 7: (255, 0, 0, 255)}) as wr:
        wr.write(truth[None], 0, 0)
    seen = spy_on_trainer(monkeypatch)
    res = run_finetune(FinetuneConfig(raster, str(tmp_path / "lab.tif"), "", str(out_dir / "lr.safetensors"),
                                      task="segmentation", patch_size=16, epochs=1, batch_size=8,
                                      max_raster_samples=60, device="cpu"))
    assert res.class_names == ["Meadow", "Roof"]
    from geoml_plugin.core.modelfile import read_metadata

    assert read_metadata(res.model_path).arch_args["full_res"] is True  # the stem's full-resolution map is used
    data, y = seen["data"], seen["y"]
    cells_x = w // 16 + 1
    area = (np.arange(h)[:, None] // 16) * cells_x + np.arange(w)[None] // 16
    held_out = set(data.groups[seen["val_idx"]].tolist())
    size = data.patch + 2 * data.margin
    x0 = np.floor(data.labels.cols).astype(int) - size // 2
    y0 = np.floor(data.labels.rows).astype(int) - size // 2
    scored = []
    for i in range(len(y)):
        rr, cc = np.nonzero(y[i] >= 0)
        areas = set(area[rr + y0[i], cc + x0[i]].tolist())
        if i in set(seen["val_idx"].tolist()):
            assert areas <= held_out
            scored += list(zip(rr + y0[i], cc + x0[i]))
        else:
            assert not areas & held_out
        assert (truth[rr + y0[i], cc + x0[i]] > 0).all()  # 0 is unlabelled, never a class
    assert len(scored) == len(set(scored)) == res.metrics["samples"]

    out, conf = out_dir / "map.tif", out_dir / "map_conf.tif"
    run_predict(PredictConfig(raster, res.model_path, str(out), str(conf), device="cpu"))
    src, o, c = gdal.Open(raster), gdal.Open(str(out)), gdal.Open(str(conf))
    for d in (o, c):
        assert (d.RasterXSize, d.RasterYSize, d.GetGeoTransform()) == (w, h, src.GetGeoTransform())
        assert srs_from_wkt(d.GetProjection()).IsSame(srs_from_wkt(src.GetProjection()))
    band = o.GetRasterBand(1)
    assert band.GetNoDataValue() == 0 and band.GetCategoryNames()[1:3] == ["Meadow", "Roof"]
    ct = band.GetColorTable()
    assert ct.GetColorEntry(1)[:3] == (0, 255, 0) and ct.GetColorEntry(2)[:3] == (255, 0, 0)
    qml_text = open(str(out)[:-4] + ".qml").read()
    assert "paletted" in qml_text and 'label="Meadow"' in qml_text and 'label="Roof"' in qml_text
    classes, confidence = o.ReadAsArray(), c.ReadAsArray()
    nodata = np.zeros((h, w), bool)
    nodata[0, :5] = True
    assert (classes[nodata] == 0).all() and set(np.unique(classes[~nodata])) <= {1, 2}
    assert c.GetRasterBand(1).GetNoDataValue() == -1 and (confidence[nodata] == -1).all()
    assert (confidence[~nodata] >= 0.5).all() and (confidence[~nodata] <= 1).all()


def test_masks_burnt_per_patch_equal_masks_cut_from_one_burn(checkerboard, out_dir, monkeypatch):
    """Over a huge area the masks are burnt patch by patch: same classes and polygon ids as one burn."""
    from geoml_plugin.core.finetune import trainset

    raster, polygons, _ = checkerboard
    runs = []
    for limit in (trainset._RASTERIZE_ONCE_MAX_PIXELS, 0):
        monkeypatch.setattr(trainset, "_RASTERIZE_ONCE_MAX_PIXELS", limit)
        seen = spy_on_trainer(monkeypatch)
        run_finetune(FinetuneConfig(raster, polygons, "label", str(out_dir / f"s{limit}.safetensors"),
                                    task="segmentation", patch_size=16, epochs=1, batch_size=4,
                                    validation_fraction=0.5, device="cpu"))
        runs.append(seen["y"])
    assert runs[0].shape == runs[1].shape and (runs[0] >= 0).any()
    assert np.array_equal(runs[0], runs[1])


def test_the_full_resolution_unet_keeps_any_size_and_files_without_it_load_as_before(tmp_path):
    """A new small_resnet U-Net (``full_res``) maps a raster window of any size to the same size; a model file
    written before (no ``full_res`` in its arch_args) builds the former layout and gives the same values."""
    import torch

    from geoml_plugin.core.models import build_model

    torch.manual_seed(0)
    new = build_model("unet", backbone="small_resnet", in_bands=3, num_outputs=4, full_res=True).eval()
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        assert new(x).shape == (1, 4, 37, 53)
    assert new.final[0][0].in_channels == 32 + new.backbone.channels[0]
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        maps = new.backbone.feature_maps(x, full_res=True)
        assert maps[0].shape[-2:] == (48, 64)  # the stem's map, before its max-pooling
        assert all(torch.equal(a, b) for a, b in zip(maps[1:], new.backbone.feature_maps(x)))
    old = build_model("unet", backbone="small_resnet", in_bands=3, num_outputs=4).eval()
    assert old.final[0][0].in_channels == 32 and not old.full_res
    with torch.no_grad():  # the former forward: stem, stages, decoder, upsampling, last layers
        feats, z = [], old.backbone.stem(x)
        for stage in old.backbone.stages:
            z = stage(z)
            feats.append(z)
        y = feats[-1]
        for blk, skip in zip(old.decoder, reversed(feats[:-1])):
            y = blk(y, skip)
        y = torch.nn.functional.interpolate(y, size=(48, 64), mode="bilinear", align_corners=False)
        assert torch.equal(old(x), old.final(y))
    with pytest.raises(ValueError, match="small_resnet"):
        build_model("unet", backbone="resnet18", in_bands=3, num_outputs=4, full_res=True)

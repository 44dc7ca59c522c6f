"""geoml:finetune core: training works, model files round-trip, bad input is refused cleanly."""
import json
import os

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr, osr

from geoml_plugin.core.errors import InputError, JobCancelled, ModelFileError
from geoml_plugin.core.finetune.job import FinetuneConfig, map_paths_for, output_paths, report_path_for, run_finetune
from geoml_plugin.core.modelfile import load_model, read_metadata
from geoml_plugin.core.predict import PredictConfig, predict_raster, run_predict
from geoml_plugin.core.progress import Feedback
from tests.conftest import leftovers, write_raster
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

GT = (500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0)
FAST = dict(patch_size=16, batch_size=16, device="cpu")



def write_points(path, rows_cols_values, field="label", ftype=ogr.OFTString, epsg=32632, gt=GT):
    """A GeoPackage of points at pixel (row, col) centres of a raster with geotransform ``gt``."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lay = ds.CreateLayer("labels", srs, ogr.wkbPoint)
    lay.CreateField(ogr.FieldDefn(field, ftype))
    for r, c, v in rows_cols_values:
        f = ogr.Feature(lay.GetLayerDefn())
        if v is not None:
            f.SetField(field, v)
        pt = ogr.Geometry(ogr.wkbPoint)
        pt.AddPoint_2D(gt[0] + (c + 0.5) * gt[1], gt[3] + (r + 0.5) * gt[5])
        f.SetGeometry(pt)
        lay.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    """A 5-band raster of 16×16 blocks: 'bright' blocks vs 'dark' blocks, and a label point per block."""
    d = tmp_path_factory.mktemp("blocks")
    rng = np.random.default_rng(0)
    n = 8
    cls = rng.integers(0, 2, (n, n))
    img = np.zeros((5, n * 16, n * 16), np.float32)
    for i in range(n):
        for j in range(n):
            img[:, i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = 100 + 60 * cls[i, j]
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    raster = write_raster(d / "blocks.tif", img)
    pts = [(i * 16 + 8, j * 16 + 8, ["dark", "bright"][cls[i, j]]) for i in range(n) for j in range(n)]
    labels = write_points(d / "blocks.gpkg", pts)
    return raster, labels, cls


def test_separable_classes_train_far_above_chance_and_write_report(blocks, out_dir):
    raster, labels, _ = blocks
    model, report = out_dir / "m.safetensors", out_dir / "report.html"
    cfg = FinetuneConfig(raster, labels, "label", str(model), epochs=6, output_report=str(report), **FAST)
    res = run_finetune(cfg)
    assert res.metrics["evaluated_on"] == "validation" and res.n_val >= 10
    assert res.metrics["overall_accuracy"] >= 0.9  # chance is about 0.5
    assert res.class_names == ["bright", "dark"]
    meta = read_metadata(str(model))
    assert meta.architecture == "small_resnet" and meta.output == "patch" and meta.in_bands == 5
    assert [c.name for c in meta.classes] == ["bright", "dark"]
    assert meta.metrics["overall_accuracy"] == res.metrics["overall_accuracy"]
    assert len(meta.norm_mean) == 5 and 120 < meta.norm_mean[0] < 140
    html = report.read_text()
    assert "<svg" in html and "Confusion matrix" in html and "bright" in html
    assert "<tr><th>Labels</th><td>blocks.gpkg, field “label”</td></tr>" in html
    assert "Target" not in html  # classes: no regression target
    payload = json.loads((out_dir / "report.json").read_text())
    assert payload["metrics"]["confusion_matrix"] and len(payload["history"]) == 6
    assert leftovers(out_dir) == []
    # exactly the files the dialog asks about replacing
    assert sorted(os.listdir(out_dir)) == sorted(os.path.basename(p) for p in output_paths(cfg))


def test_output_paths_name_every_file_a_run_writes():
    """What the Fine-tune dialog's "These files exist and will be replaced" question lists."""
    cfg = FinetuneConfig("in.tif", "pts.gpkg", "label", "/d/x.safetensors")
    assert output_paths(cfg) == ["/d/x.safetensors"]
    cfg.output_report = report_path_for(cfg.output_model)
    assert output_paths(cfg) == ["/d/x.safetensors", "/d/x_report.html", "/d/x_report.json"]
    assert output_paths(cfg, classify=True)[3:] == ["/d/x_classes.tif", "/d/x_confidence.tif"]
    cfg.task = "regression"
    assert output_paths(cfg, classify=True)[3:] == ["/d/x_values.tif"] == map_paths_for(cfg.output_model, "regression")
    assert map_paths_for("/d/x.safetensors", "segmentation") == ["/d/x_classes.tif", "/d/x_confidence.tif"]


def test_model_file_round_trips_and_predicts_like_the_model_in_memory(blocks, out_dir):
    raster, labels, cls = blocks
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "m.safetensors"), epochs=4, **FAST))
    mem_out, file_out = out_dir / "mem.tif", out_dir / "file.tif"
    predict_raster(res.model, res.meta, PredictConfig(raster, output_path=str(mem_out), stride=16, device="cpu"))
    run_predict(PredictConfig(raster, str(out_dir / "m.safetensors"), str(file_out), stride=16, device="cpu"))
    a, b = gdal.Open(str(mem_out)).ReadAsArray(), gdal.Open(str(file_out)).ReadAsArray()
    np.testing.assert_array_equal(a, b)
    loaded, _ = load_model(str(out_dir / "m.safetensors"))
    x = torch.randn(3, 5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), res.model.cpu()(x))
    # windows on the block grid: the class map follows the blocks (value 1 = bright, 2 = dark)
    truth = np.kron(np.where(cls == 1, 1, 2), np.ones((16, 16), int))
    assert (a == truth).mean() > 0.9


@pytest.fixture(scope="module")
def linear_target(tmp_path_factory):
    """2-band smooth raster and a target raster = 3·b1 − 2·b2 + 5 (a known per-pixel mapping)."""
    from geoml_plugin.core.sampledata import smooth_noise

    d = tmp_path_factory.mktemp("reg")
    rng = np.random.default_rng(1)
    img = np.stack([smooth_noise(rng, 96, 96, 3), smooth_noise(rng, 96, 96, 3)]).astype(np.float32)
    target = (3 * img[0] - 2 * img[1] + 5).astype(np.float32)
    target[:8, :8] = -9999.0  # nodata in the target is ignored
    return write_raster(d / "x.tif", img), write_raster(d / "y.tif", target, nodata=-9999.0), img


def test_pixel_regression_recovers_a_known_mapping(linear_target, out_dir):
    raster, target, img = linear_target
    res = run_finetune(FinetuneConfig(raster, target, "", str(out_dir / "reg.safetensors"), task="regression",
                                      patch_size=32, epochs=6, batch_size=8, max_raster_samples=60, device="cpu"))
    meta = read_metadata(res.model_path)
    assert meta.output == "dense" and meta.architecture == "unet" and meta.task == "regression"
    assert "full_res" not in meta.arch_args  # the full-resolution skip is for classes (it mapped NAIP worse)
    assert res.metrics["r2"] > 0.9, res.metrics
    out = out_dir / "pred.tif"
    run_predict(PredictConfig(raster, res.model_path, str(out), device="cpu"))
    pred = gdal.Open(str(out)).ReadAsArray()
    truth = 3 * img[0] - 2 * img[1] + 5
    inner = (slice(4, -4), slice(4, -4))
    assert np.corrcoef(pred[inner].ravel(), truth[inner].ravel())[0, 1] > 0.95


def test_intensity_jitter_is_a_mild_affine_change_and_only_for_classes(blocks, linear_target, out_dir, monkeypatch):
    from geoml_plugin.core.finetune import trainer

    x = torch.randn(16, 3, 8, 8)
    y = trainer.jitter_intensity(x, 0.1, torch.Generator().manual_seed(0))
    xc = x - x.mean((2, 3), keepdim=True)
    yc = y - y.mean((2, 3), keepdim=True)
    gain = (yc * xc).sum((2, 3)) / (xc * xc).sum((2, 3))  # per patch and band
    torch.testing.assert_close(yc, gain[..., None, None] * xc)  # an affine change of each band…
    torch.testing.assert_close(gain, gain[:, :1].expand_as(gain))  # …with one contrast gain per patch
    assert ((gain - 1).abs() <= 0.1 + 1e-6).all() and gain.std() > 0.01
    offset = (y - gain[..., None, None] * x).mean((2, 3))
    assert offset.abs().max() < 0.3 and offset.std() > 0.01
    torch.testing.assert_close(trainer.jitter_intensity(x, 0.0), x)

    calls = []
    real = trainer.jitter_intensity
    monkeypatch.setattr(trainer, "jitter_intensity", lambda *a, **k: calls.append(1) or real(*a, **k))
    raster, labels, _ = blocks
    run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "jit.safetensors"), epochs=1, **FAST))
    assert calls, "classes are trained with intensity jitter"
    calls.clear()
    raster, target, _ = linear_target
    run_finetune(FinetuneConfig(raster, target, "", str(out_dir / "nojit.safetensors"), task="regression",
                                patch_size=32, epochs=1, batch_size=8, max_raster_samples=20, device="cpu"))
    assert not calls, "values to regress must not be jittered"


def test_patch_regression_from_point_values_and_sparse_point_segmentation(blocks, tmp_path, out_dir):
    raster, _, cls = blocks
    rng = np.random.default_rng(4)
    pts = [(i * 16 + 8, j * 16 + 8, float(100 + 60 * cls[i, j] + rng.normal(0, 3))) for i in range(8) for j in range(8)]
    values = write_points(tmp_path / "values.gpkg", pts, field="brightness", ftype=ogr.OFTReal)
    res = run_finetune(FinetuneConfig(raster, values, "brightness", str(out_dir / "pr.safetensors"), task="regression",
                                      epochs=8, **FAST))
    meta = read_metadata(res.model_path)
    assert meta.output == "patch" and meta.target["name"] == "brightness" and 120 < meta.target["mean"] < 140
    assert res.metrics["r2"] > 0.7 and res.metrics["rmse"] < 20, res.metrics
    out = out_dir / "pr.tif"
    r = run_predict(PredictConfig(raster, res.model_path, str(out), stride=16, device="cpu"))
    assert 90 < r.value_range[0] and r.value_range[1] < 180
    # points as sparse segmentation labels: a dense model trained on the labelled pixels only
    _, labels, _ = blocks
    seg = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "sp.safetensors"), task="segmentation",
                                      epochs=2, **FAST))
    assert read_metadata(seg.model_path).output == "dense" and seg.metrics["samples"] == seg.n_val


def test_segmentation_from_polygons_and_prediction(scene, out_dir):
    res = run_finetune(FinetuneConfig(scene.image, scene.polygons, "class_name", str(out_dir / "seg.safetensors"),
                                      task="segmentation", patch_size=32, epochs=3, batch_size=16, device="cpu"))
    meta = read_metadata(res.model_path)
    assert meta.output == "dense" and meta.arch_args["backbone"] == "small_resnet"
    assert res.metrics["overall_accuracy"] > 0.6  # 4 classes: chance ≈ 0.25
    out = out_dir / "seg.tif"
    r = run_predict(PredictConfig(scene.image, res.model_path, str(out), device="cpu"))
    assert set(r.class_counts) == {"Water", "Forest", "Cropland", "Urban"}


def test_label_raster_gives_named_classes(scene, out_dir):
    res = run_finetune(FinetuneConfig(scene.image, scene.landcover, "", str(out_dir / "lc.safetensors"), epochs=2,
                                      max_raster_samples=80, **FAST))
    assert res.class_names == ["Water", "Forest", "Cropland", "Urban"]
    assert res.n_train + res.n_val == 80
    from geoml_plugin.core.raster.classes import make_classes

    # the label raster's colour table styles the classes
    assert [c.color for c in read_metadata(res.model_path).classes] == [c.color for c in make_classes(res.class_names)]


def test_a_label_raster_without_nodata_makes_0_a_class_and_the_log_says_so(tmp_path):
    from geoml_plugin.core.progress import Feedback
    from geoml_plugin.core.raster.io import raster_info
    from geoml_plugin.core.raster.labels import read_raster_labels

    lab = np.zeros((32, 32), np.uint8)
    lab[:8], lab[-8:] = 1, 2
    img = write_raster(tmp_path / "img.tif", np.ones((1, 32, 32), np.float32))
    for nodata, classes in ((None, ["0", "1", "2"]), (0, ["1", "2"])):
        log = []
        labels, raster = read_raster_labels(write_raster(tmp_path / f"lab_{nodata}.tif", lab, nodata=nodata),
                                            raster_info(img), feedback=Feedback(on_log=log.append))
        raster.close()
        assert labels.class_names == classes
        warned = any("no nodata value, so its pixels of value 0 are a class" in m for m in log)
        assert warned == (nodata is None), log


def test_class_colours_follow_common_names():
    from geoml_plugin.core.raster.classes import make_styled_classes

    water, forest, other, lake = make_styled_classes(["Water", "Forest", "Parking", "Lake"])
    assert water.color == "#1f78b4" and forest.color == "#1b7837"
    assert lake.color not in (water.color, other.color) and other.color not in (water.color, forest.color)


def test_labels_in_another_crs_or_grid_are_reprojected(blocks, tmp_path):
    from geoml_plugin.core.finetune.trainset import build_training_data
    from geoml_plugin.core.raster.io import RasterReader

    raster, labels, cls = blocks
    # the same points in WGS 84
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(32632)
    dst.ImportFromEPSG(4326)
    dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "wgs84.gpkg"))
    lay = ds.CreateLayer("labels", dst, ogr.wkbPoint)
    lay.CreateField(ogr.FieldDefn("label", ogr.OFTString))
    src_ds = ogr.Open(labels)  # keep the dataset alive while its layer is read
    for f in src_ds.GetLayer(0):
        g = f.GetGeometryRef().Clone()
        g.Transform(ct)
        h = ogr.Feature(lay.GetLayerDefn())
        h.SetField("label", f.GetField("label"))
        h.SetGeometry(g)
        lay.CreateFeature(h)
    ds = None
    # a class raster at 20 m (half the resolution) holding the block classes (1 = dark, 2 = bright)
    coarse = write_raster(tmp_path / "coarse.tif", np.kron(np.where(cls == 1, 2, 1), np.ones((8, 8))).astype(np.uint8),
                          gt=(GT[0], 20.0, 0.0, GT[3], 0.0, -20.0), nodata=0)
    with RasterReader(raster) as r:
        pts = build_training_data(str(tmp_path / "wgs84.gpkg"), "label", r, "classification", 16)
        grid = build_training_data(coarse, "", r, "classification", 16, max_raster_samples=200)
    assert len(pts) == 64 and not pts.labels.skipped
    rows, cols = (pts.labels.rows // 16).astype(int), (pts.labels.cols // 16).astype(int)
    assert [pts.class_names[v] for v in pts.y] == [["dark", "bright"][cls[r_, c_]] for r_, c_ in zip(rows, cols)]
    rows, cols = (grid.labels.rows // 16).astype(int), (grid.labels.cols // 16).astype(int)
    assert grid.class_names == ["1", "2"]
    assert (np.asarray(grid.y) == cls[rows, cols]).mean() > 0.97  # nearest-neighbour resampling on block edges


def test_n_band_imagenet_weights_from_the_local_cache(blocks, out_dir, tmp_path, monkeypatch):
    """5 bands from RGB ImageNet kernels: repeated R,G,B,R,G and scaled by 3/5."""
    import torchvision

    from geoml_plugin.core.finetune.weights import apply_imagenet, imagenet_checkpoint_path
    from geoml_plugin.core.models import build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path, url = imagenet_checkpoint_path("resnet18")
    assert path.startswith(str(tmp_path)) and os.path.basename(path) == os.path.basename(url)
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(3)
    fake = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(fake, path)
    model = build_model("resnet18", in_bands=5, num_outputs=2)
    assert "5 bands" in apply_imagenet(model, "resnet18", 5)
    w, w0 = model.backbone.conv1.weight.detach(), fake["conv1.weight"]
    for band, rgb in enumerate([0, 1, 2, 0, 1]):
        torch.testing.assert_close(w[:, band], w0[:, rgb] * 3 / 5)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight.detach(), fake["layer4.1.conv2.weight"])
    raster, labels, _ = blocks
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "rn.safetensors"), backbone="resnet18",
                                      weights="imagenet", epochs=1, patch_size=32, batch_size=16, device="cpu"))
    assert res.learning_rate == 1e-3
    assert read_metadata(res.model_path).provenance["weights"] == "imagenet"


def test_mobilenet_v2_starts_from_cached_imagenet_weights_for_segmentation_and_patch_classes(scene, blocks, out_dir,
                                                                                            tmp_path, monkeypatch):
    """The light pretrained backbone: torchvision's file in the cache starts a U-Net's MobileNetV2 encoder
    (4 bands: RGB kernels by name, the fourth the mean kernel) and a patch classifier (5 bands); the patch
    classifier trains with one 32-px cell of context and its map is scored window by window with it."""
    import torchvision

    from geoml_plugin.core.finetune.pretrained import cached_path
    from geoml_plugin.core.finetune.weights_catalog import find_entry

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = find_entry("imagenet", "mobilenet_v2")
    path = cached_path(entry)
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(4)
    fake = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch.save(fake, path)
    lines = []
    res = run_finetune(FinetuneConfig(scene.image, scene.polygons, "class_name", str(out_dir / "mn.safetensors"),
                                      task="segmentation", backbone="mobilenet_v2", weights="imagenet", epochs=1,
                                      patch_size=32, batch_size=16, device="cpu"),
                       Feedback(on_log=lines.append))
    assert any("Started from MobileNetV2, ImageNet" in s for s in lines)
    assert res.learning_rate == 1e-3
    model, meta = load_model(res.model_path)
    assert meta.architecture == "unet" and meta.arch_args["backbone"] == "mobilenet_v2"
    assert "full_res" not in meta.arch_args  # only small_resnet has a full-resolution stem map
    got = model.backbone.state_dict()["features.17.conv.2.weight"]
    assert 0 < float((got - fake["features.17.conv.2.weight"]).abs().max()) < 0.05  # trained, from ImageNet's
    out = run_predict(PredictConfig(scene.image, res.model_path, str(out_dir / "mn_map.tif"), device="cpu"))
    ds = gdal.Open(out.output_path)
    assert (ds.RasterXSize, ds.RasterYSize) == (128, 128)
    assert set(out.class_counts) <= {"Water", "Forest", "Cropland", "Urban"} and len(out.class_counts) >= 2
    ds = None

    raster, labels, _ = blocks
    lines = []
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "mnc.safetensors"), backbone="mobilenet_v2",
                                      weights="imagenet", epochs=1, patch_size=32, batch_size=16, device="cpu"))
    assert read_metadata(res.model_path).extra["window_context"] == 32
    out = run_predict(PredictConfig(raster, res.model_path, str(out_dir / "mnc_map.tif"), device="cpu"),
                      Feedback(on_log=lines.append))
    assert not out.fully_convolutional and out.window_step == 16  # automatic: half the patch
    assert any("scored window by window with the 32 px of context the model was trained with" in s for s in lines)


def test_missing_imagenet_weights_say_which_file_and_write_nothing(blocks, out_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    raster, labels, _ = blocks
    with pytest.raises(InputError, match=r"resnet34-b627a593\.pth.*offline"):
        run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "m.safetensors"), backbone="resnet34",
                                    weights="imagenet", **FAST))
    assert list(out_dir.iterdir()) == []


def test_transfer_reuses_the_backbone_of_an_earlier_model(blocks, out_dir):
    raster, labels, _ = blocks
    first = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "a.safetensors"), epochs=1, **FAST))
    lines = []
    second = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "b.safetensors"), epochs=2,
                                         weights=first.model_path, freeze_backbone=True, **FAST),
                          Feedback(on_log=lines.append))
    assert any("Started from the backbone of a.safetensors" in s for s in lines)
    a, b = first.model.state_dict(), second.model.state_dict()
    for k in a:
        if k.startswith("backbone."):
            torch.testing.assert_close(a[k], b[k])  # frozen: the transferred backbone is unchanged
    assert not torch.equal(a["head.3.weight"], b["head.3.weight"])


def test_classifiers_are_built_wider_and_transfer_keeps_the_source_widths(blocks, out_dir, tmp_path):
    """Patch classifiers record small_resnet's wider stages in the model file; a run started from an earlier model
    takes that model's widths (files written before widths were recorded: the network's default), also into a
    U-Net; segmentation from scratch keeps the default."""
    from geoml_plugin.core.finetune.job import CLASSIFIER_WIDTHS
    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model
    from geoml_plugin.core.models.resnets import SMALL_WIDTHS

    raster, labels, _ = blocks
    wide = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "w.safetensors"), epochs=1, **FAST))
    meta = read_metadata(wide.model_path)
    assert meta.arch_args["widths"] == list(CLASSIFIER_WIDTHS) != list(SMALL_WIDTHS)
    model, _ = load_model(wide.model_path)
    assert model.backbone.channels == list(CLASSIFIER_WIDTHS)
    # an earlier model with no widths in its file (as before): the new run keeps its default widths
    old_args = {k: v for k, v in meta.arch_args.items() if k != "widths"}
    old = build_model("small_resnet", **old_args)
    old_meta = ModelMetadata.from_dict({**read_metadata(wide.model_path).to_dict(), "arch_args": old_args})
    old_path = save_model(str(tmp_path / "old.safetensors"), old, old_meta)
    again = run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / "again.safetensors"), epochs=1,
                                        weights=old_path, **FAST))
    assert read_metadata(again.model_path).arch_args.get("widths") is None
    assert load_model(again.model_path)[0].backbone.channels == list(SMALL_WIDTHS)
    # the wide classifier's backbone starts a U-Net of the same widths
    ds = gdal.Open(str(raster))  # kept open while its band is read
    bright = ds.GetRasterBand(1).ReadAsArray() > 130
    ds = None
    seg_labels = write_raster(tmp_path / "seg.tif", bright.astype(np.float32)[None] + 1)
    seg = run_finetune(FinetuneConfig(raster, seg_labels, "", str(tmp_path / "seg.safetensors"), task="segmentation",
                                      epochs=1, weights=wide.model_path, **FAST))
    assert read_metadata(seg.model_path).arch_args["widths"] == list(CLASSIFIER_WIDTHS)
    assert seg.model.backbone.channels == list(CLASSIFIER_WIDTHS)
    scratch = run_finetune(FinetuneConfig(raster, seg_labels, "", str(tmp_path / "seg2.safetensors"),
                                          task="segmentation", epochs=1, **FAST))
    assert "widths" not in read_metadata(scratch.model_path).arch_args


def test_patch_classifiers_train_on_mixed_pairs_and_say_so(blocks, out_dir, tmp_path, monkeypatch):
    """Patch classifiers (with Augment) train with mixup: the trainer blends pairs of patches and the log says so;
    without Augment, and for segmentation, nothing is mixed."""
    from geoml_plugin.core.finetune import trainer as trainer_mod
    from geoml_plugin.core.finetune.job import PATCH_MIXUP

    seen = []  # per training step: (the run's mixup α, whether its loss blended two labels)
    loss = trainer_mod.Trainer.loss

    def spy(self, out, yb, mix=None):
        if self.model.training:
            seen.append((self.spec.mixup, mix is not None and 0 <= mix[0] <= 1 and len(mix[1]) == len(yb)))
        return loss(self, out, yb, mix)

    monkeypatch.setattr(trainer_mod.Trainer, "loss", spy)
    raster, labels, _ = blocks
    lines = []
    run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "m.safetensors"), epochs=1, **FAST),
                 Feedback(on_log=lines.append))
    assert PATCH_MIXUP > 0 and set(seen) == {(PATCH_MIXUP, True)}
    assert any(f"mixup (α {PATCH_MIXUP:g})" in s for s in lines)
    seen.clear()
    lines.clear()
    run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / "plain.safetensors"), epochs=1, augment=False,
                                **FAST), Feedback(on_log=lines.append))
    assert set(seen) == {(0.0, False)} and not any("mixup" in s for s in lines)
    seen.clear()
    ds = gdal.Open(str(raster))  # kept open while its band is read
    bright = ds.GetRasterBand(1).ReadAsArray() > 130
    ds = None
    seg_labels = write_raster(tmp_path / "seg.tif", bright.astype(np.float32)[None] + 1)
    run_finetune(FinetuneConfig(raster, seg_labels, "", str(tmp_path / "seg.safetensors"), task="segmentation",
                                epochs=1, **FAST))
    assert set(seen) == {(0.0, False)}


def test_classifiers_trained_with_mixup_get_a_longer_automatic_schedule(blocks, tmp_path, monkeypatch):
    """EPOCHS 0: a patch classifier trained with mixup (Augment) sees MIXUP_EPOCH_FACTOR × the automatic patches
    and epochs of one trained without; EPOCHS given by the user is kept as it is."""
    from geoml_plugin.core.finetune import job

    assert (job.auto_epochs(1020), job.auto_epochs(1020, job.MIXUP_EPOCH_FACTOR)) == (98, 127)  # EuroSAT's 80 %
    assert (job.auto_epochs(10), job.auto_epochs(10, job.MIXUP_EPOCH_FACTOR)) == (100, 130)  # the caps
    monkeypatch.setattr(job, "MAX_AUTO_EPOCHS", 2)  # short runs: the cap decides, 2 or round(2 × 1.3) = 3
    raster, labels, _ = blocks
    ran = {}
    for name, kw in {"mixup": {}, "plain": {"augment": False}, "given": {"epochs": 2}}.items():
        res = run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / f"{name}.safetensors"), **kw, **FAST))
        ran[name] = (res.epochs, len(res.history))
    assert ran == {"mixup": (3, 3), "plain": (2, 2), "given": (2, 2)}


def test_a_long_run_validates_every_few_epochs_and_after_the_last(blocks, tmp_path, monkeypatch):
    """At most about VALIDATION_PASSES validation passes, evenly spread, always after the last epoch, whose
    figures are the model's reported metrics (the same model: validation does not change training); the
    time left counts only the passes to come."""
    from geoml_plugin.core import remaining
    from geoml_plugin.core.finetune import trainer

    assert [trainer.validation_every(n) for n in (1, 25, 26, 98, 127)] == [1, 1, 2, 4, 6]
    monkeypatch.setattr(trainer, "VALIDATION_PASSES", 2)  # 5 epochs: after epochs 3 and 5
    raster, labels, _ = blocks
    logs = []
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / "m.safetensors"), epochs=5, **FAST),
                       Feedback(on_log=logs.append))
    assert [h["val_score"] is not None for h in res.history] == [False, False, True, False, True]
    assert res.metrics["overall_accuracy"] == pytest.approx(res.history[-1]["val_score"], abs=1e-5)
    assert res.metrics["evaluated_on"] == "validation"
    assert sum("val loss" in m for m in logs if m.startswith("epoch ")) == 2
    r = remaining.RemainingTime(epochs=5, steps_per_epoch=10, val_batches=4,
                                val_epochs=[e for e in range(5) if trainer.validates(e, 5)])
    r.val_seconds = 7.0
    r.step_seconds, r.steps_done, r.units_done = 10.0, 10, 10.0  # one epoch done at 1 s a step
    r.start_epoch(1)
    assert r.estimate() == pytest.approx(40.0 + 2 * 7.0)  # epochs 2–5 left; passes after epochs 3 and 5


def test_weights_of_another_backbone_or_band_count_are_refused(blocks, scene, out_dir, tmp_path):
    raster, labels, _ = blocks
    first = run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / "a.safetensors"), epochs=1, **FAST))
    with pytest.raises(ModelFileError, match="backbone 'small_resnet'.*uses 'resnet18'"):
        run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "m.safetensors"), backbone="resnet18",
                                    weights=first.model_path, **FAST))
    with pytest.raises(ModelFileError, match="trained on 5 band"):
        run_finetune(FinetuneConfig(scene.image, scene.points, "class_name", str(out_dir / "m.safetensors"),
                                    weights=first.model_path, **FAST))
    assert list(out_dir.iterdir()) == []


def test_weights_from_a_model_without_a_fine_tune_backbone_get_a_usable_hint(scene, sample_model, out_dir):
    """The hint must not suggest a BACKBONE that does not exist (here the sample model's 'pixel_linear')."""
    with pytest.raises(ModelFileError, match="no backbone Fine-tune can reuse") as err:
        run_finetune(FinetuneConfig(scene.image, scene.points, "class_name", str(out_dir / "m.safetensors"),
                                    weights=sample_model, **FAST))
    assert "BACKBONE=pixel_linear" not in str(err.value)
    assert list(out_dir.iterdir()) == []


def _bad(cfg_kwargs, match, out_dir, exc=InputError):
    with pytest.raises(exc, match=match):
        run_finetune(FinetuneConfig(output_model=str(out_dir / "m.safetensors"),
                                    output_report=str(out_dir / "r.html"), **{**FAST, **cfg_kwargs}))
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


def test_bad_labels_are_refused_with_clear_messages(blocks, tmp_path, out_dir):
    raster, labels, _ = blocks
    one = write_points(tmp_path / "one.gpkg", [(8 + 16 * i, 8, "water") for i in range(6)])
    _bad(dict(input_path=raster, labels=one, label_field="label"), "only one class", out_dir)
    few = write_points(tmp_path / "few.gpkg", [(8 + 16 * i, 8, "a") for i in range(6)] + [(8, 40, "b")])
    _bad(dict(input_path=raster, labels=few, label_field="label"), "Class 'b' has only 1 labelled", out_dir)
    _bad(dict(input_path=raster, labels=labels, label_field="klass"), "no field 'klass'", out_dir)
    nulls = write_points(tmp_path / "nulls.gpkg", [(8, 8, "a"), (8, 40, "b"), (40, 8, None), (40, 40, "a")])
    _bad(dict(input_path=raster, labels=nulls, label_field="label"), "1 label.* no value in field 'label'", out_dir)
    outside = write_points(tmp_path / "out.gpkg", [(-50, -50, "a"), (-60, 5000, "b")])
    _bad(dict(input_path=raster, labels=outside, label_field="label"), "No usable labels.*outside the raster", out_dir)
    nan = write_points(tmp_path / "nan.gpkg", [(8, 8, 1.0), (8, 40, float("nan")), (40, 8, 2.0)], ftype=ogr.OFTReal)
    _bad(dict(input_path=raster, labels=nan, label_field="label", task="regression"), "no value in field", out_dir)


def test_outputs_over_the_input_raster_or_labels_are_refused(blocks, tmp_path):
    """The model or report written over the raster or the labels would destroy the analyst's data."""
    import shutil

    raster, labels, _ = blocks
    r, lab = shutil.copy(raster, tmp_path / "r.tif"), shutil.copy(labels, tmp_path / "l.gpkg")
    before = {p: open(p, "rb").read() for p in (r, lab)}
    with pytest.raises(InputError, match="labels"):
        run_finetune(FinetuneConfig(str(r), f"{lab}|layername=labels", "label", str(lab), epochs=1, **FAST))
    with pytest.raises(InputError, match="input raster"):
        run_finetune(FinetuneConfig(str(r), str(lab), "label", str(tmp_path / "m.safetensors"),
                                    output_report=str(r), epochs=1, **FAST))
    with pytest.raises(InputError, match="labels"):  # the metrics JSON beside the report
        geojson = tmp_path / "pts.json"
        gdal.VectorTranslate(str(geojson), str(lab), format="GeoJSON")
        run_finetune(FinetuneConfig(str(r), str(geojson), "label", str(tmp_path / "m.safetensors"),
                                    output_report=str(tmp_path / "pts.html"), epochs=1, **FAST))
    assert {p: open(p, "rb").read() for p in (r, lab)} == before
    assert not (tmp_path / "m.safetensors").exists() and leftovers(tmp_path) == []


def test_bad_parameters_are_refused_before_training(blocks, tmp_path, out_dir):
    raster, labels, _ = blocks
    _bad(dict(input_path=raster, labels=labels, label_field="label", patch_size=256), "larger than the raster", out_dir)
    empty_target = write_raster(tmp_path / "t.tif", np.full((128, 128), -9999.0, np.float32), nodata=-9999.0)
    _bad(dict(input_path=raster, labels=empty_target, task="regression"), "no labelled pixels", out_dir)
    _bad(dict(input_path=raster, labels=labels, label_field="label", backbone="vgg"), "Unknown backbone", out_dir)
    _bad(dict(input_path=raster, labels=labels, label_field="label", weights=str(tmp_path / "nope.safetensors")),
         "WEIGHTS must be", out_dir)
    _bad(dict(input_path=raster, labels=labels, label_field="label", weights=str(tmp_path)),
         "is a folder, not a model file", out_dir)


def test_cancel_mid_epoch_leaves_no_model_and_no_report(blocks, out_dir):
    raster, labels, _ = blocks
    seen = []

    def on_progress(f, msg):
        seen.append(msg)

    fb = Feedback(on_progress, None, lambda: any(m.startswith("epoch 2/") for m in seen))
    with pytest.raises(JobCancelled):
        run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "m.safetensors"), epochs=5,
                                    output_report=str(out_dir / "r.html"), **FAST), fb)
    assert list(out_dir.iterdir()) == []


@pytest.mark.gpu
def test_cuda_training_with_mixed_precision_and_oom_retry(blocks, out_dir, monkeypatch):
    from geoml_plugin.core.models.resnets import PatchNet

    raster, labels, _ = blocks
    calls = {"n": 0}
    forward = PatchNet.forward

    def flaky(self, x):
        calls["n"] += 1
        if self.training and x.shape[0] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x)

    monkeypatch.setattr(PatchNet, "forward", flaky)
    lines = []
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(out_dir / "g.safetensors"), epochs=2,
                                      patch_size=16, batch_size=32, device="cuda"), Feedback(on_log=lines.append))
    assert any("out of memory; retrying" in s for s in lines)
    assert res.batch_size == 8 and res.device.startswith("cuda")


def test_training_keeps_triton_out_because_it_crashes_the_qgis_desktop():
    """torch.optim imports torch._dynamo, which would load triton (segfault beside Mesa's LLVM in QGIS)."""
    import subprocess
    import sys

    code = ("import sys, torch; from geoml_plugin.core.deps_check import import_dynamo_without_triton as f; f(); "
            "m = torch.nn.Linear(2, 2); torch.optim.AdamW(m.parameters()); "
            "print('torch._dynamo' in sys.modules, 'triton' in sys.modules, sys.modules.get('triton', 0) is None)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "False", "False"]


def test_a_continuous_label_raster_is_refused_for_classes_with_a_pointer_to_regression(tmp_path, scene):
    """Issue 21 point 4: heights are not classes (core check, so Processing and scripts say it too)."""
    from geoml_plugin.core.finetune.job import check_config
    from geoml_plugin.core.raster.labels import check_class_raster

    rng = np.random.default_rng(1)
    dtm = write_raster(tmp_path / "dtm.tif", rng.normal(15, 3, (1, 30, 30)).astype(np.float32), nodata=-9999.0)
    cfg = FinetuneConfig(input_path=scene.image, labels=dtm, output_model=str(tmp_path / "m.safetensors"))
    with pytest.raises(InputError, match=r"holds continuous values \(fractional values.*Task = regression"):
        check_config(cfg)
    many = write_raster(tmp_path / "int_heights.tif", rng.integers(0, 2000, (1, 40, 40)).astype(np.int16))
    with pytest.raises(InputError, match=r"holds continuous values \(\d+ different values"):
        check_class_raster(many)
    classes = write_raster(tmp_path / "classes.tif", rng.integers(1, 5, (1, 30, 30)).astype(np.float32))
    check_class_raster(classes)  # whole numbers in a float raster are classes
    cfg.task = "regression"
    check_config(cfg)
    assert not (tmp_path / "m.safetensors").exists()


def test_confusion_matrix_shows_whole_class_names():
    """Issue 21: 'HerbaceousVegetation' was cut to 18 characters in the report's confusion matrix."""
    import re

    from geoml_plugin.core.finetune.report import confusion_svg

    names = ["AnnualCrop", "HerbaceousVegetation", "SeaLake"]
    svg = confusion_svg([[5, 1, 0], [0, 6, 0], [0, 0, 7]], names)
    assert svg.count(">HerbaceousVegetation</text>") == 2  # row and column label
    left = min(float(x) for x in re.findall(r'<rect x="([\d.]+)"', svg))
    assert left - 6 >= len("HerbaceousVegetation") * 6.5  # room for the row label at 11 px


def test_a_patch_size_out_of_range_names_the_range_and_the_automatic_choice(tmp_path, scene):
    """The message says what to enter, automatic included (the default since 96-px dense patches)."""
    from geoml_plugin.core.finetune.job import check_config

    cfg = FinetuneConfig(input_path=scene.image, labels=scene.points, output_model=str(tmp_path / "m.safetensors"),
                         patch_size=4)
    with pytest.raises(InputError) as err:
        check_config(cfg)
    assert "Patch size 4 is out of range" in err.value.message
    assert "8 to 1024 pixels, or automatic (64 px; 96 px for segmentation" in err.value.hint
    assert not (tmp_path / "m.safetensors").exists()

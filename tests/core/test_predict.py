import numpy as np
import pytest
import torch
from osgeo import gdal

from geoml_plugin.core.errors import InputError, JobCancelled, ModelFileError
from geoml_plugin.core.modelfile import ModelMetadata, save_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.predict import PredictConfig, predict_raster, run_predict
from geoml_plugin.core.progress import Feedback
from geoml_plugin.core.raster.classes import make_classes
from geoml_plugin.core.raster.io import category_names_of, raster_info
from tests.conftest import leftovers, write_raster


def test_sample_model_maps_the_scene(scene, sample_model, out_dir):
    out, conf = out_dir / "pred.tif", out_dir / "conf.tif"
    res = run_predict(PredictConfig(scene.image, sample_model, str(out), str(conf), device="cpu"))
    pred = gdal.Open(str(out)).ReadAsArray()
    truth = gdal.Open(scene.landcover).ReadAsArray()
    assert (pred == truth)[truth > 0].mean() > 0.95
    assert (pred[truth == 0] == 0).all()  # nodata stays nodata
    src, dst = raster_info(scene.image), raster_info(str(out))
    assert dst.geotransform == src.geotransform and dst.crs_wkt == src.crs_wkt
    assert (dst.width, dst.height) == (src.width, src.height)
    assert category_names_of(str(out)) == ["", "Water", "Forest", "Cropland", "Urban"]
    c = gdal.Open(str(conf)).ReadAsArray()
    assert ((c[truth > 0] > 0.25) & (c[truth > 0] <= 1.0)).all()
    assert res.valid_pixels == int((truth > 0).sum())
    assert sum(res.class_counts.values()) == res.valid_pixels
    assert (out_dir / "pred.qml").exists()


class Conv3Stack(torch.nn.Module):
    """Translation-equivariant model with a 7-px receptive field."""

    def __init__(self, c, k):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(c, 8, 3, padding=1), torch.nn.Tanh(),
                                       torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Tanh(),
                                       torch.nn.Conv2d(8, k, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def test_dense_tiling_is_seamless(scene, out_dir):
    """Tiled output equals one forward pass over the whole raster: no seams."""
    torch.manual_seed(0)
    model = Conv3Stack(4, 1).eval()
    meta = ModelMetadata(architecture="test", task="regression", in_bands=4, output="dense", patch_size=16,
                     norm_mean=[1000] * 4, norm_std=[500] * 4, target={"name": "v", "mean": 2.0, "std": 3.0})
    out = out_dir / "reg.tif"
    res = predict_raster(model, meta, PredictConfig(scene.image, output_path=str(out), tile_size=24, overlap=4,
                                                    batch_size=3, device="cpu"))
    assert res.tiles > 25
    tiled = gdal.Open(str(out)).ReadAsArray()
    img = gdal.Open(scene.image).ReadAsArray().astype(np.float32)
    valid = (img != 0).all(axis=0)
    x = (img - 1000) / 500
    x[:, ~valid] = 0
    with torch.no_grad():
        full = model(torch.from_numpy(x)[None])[0, 0].numpy() * 3.0 + 2.0
    # pixels ≥ 3 px from the raster edge see no padding difference
    inner = (slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(tiled[inner][valid[inner]], full[inner][valid[inner]], rtol=1e-4, atol=1e-4)
    assert (tiled[~valid] == -9999.0).all()


def test_confidence_asked_of_a_regression_model_is_not_written_and_the_log_says_so(scene, out_dir):
    model = Conv3Stack(4, 1).eval()
    meta = ModelMetadata(architecture="test", task="regression", in_bands=4, output="dense", patch_size=16,
                     norm_mean=[1000] * 4, norm_std=[500] * 4, target={"name": "v"})
    conf = out_dir / "conf.tif"
    log = []
    res = predict_raster(model, meta, PredictConfig(scene.image, output_path=str(out_dir / "reg.tif"),
                                                    confidence_path=str(conf), device="cpu"), Feedback(on_log=log.append))
    assert res.confidence_path is None and not conf.exists()
    assert any(m.startswith("No confidence raster is written for a regression model") and str(conf) in m for m in log)


def _patch_model(tmp_path, in_bands=4, classes=("A", "B"), band_indices=()):
    torch.manual_seed(0)
    meta = ModelMetadata(architecture="small_cnn", arch_args={"in_bands": in_bands, "num_outputs": len(classes),
                     "widths": [4, 4, 4, 4]}, task="classification", output="patch", in_bands=in_bands,
                     patch_size=16, classes=make_classes(classes), norm_mean=[1000] * in_bands,
                     norm_std=[500] * in_bands, band_indices=list(band_indices))
    model = build_model(meta.architecture, **meta.arch_args)
    return save_model(str(tmp_path / "patch.safetensors"), model, meta)


def test_patch_classifier_makes_dense_map_at_stride(scene, out_dir, tmp_path):
    model = _patch_model(tmp_path)
    out = out_dir / "cls.tif"
    res = run_predict(PredictConfig(scene.image, model, str(out), str(out_dir / "c.tif"), stride=8, device="cpu"))
    pred = gdal.Open(str(out)).ReadAsArray()
    assert pred.shape == (128, 128)
    assert set(np.unique(pred)) <= {0, 1, 2}
    # constant inside each 8×8 output cell
    cells = pred[:120, :120].reshape(15, 8, 15, 8)
    valid = gdal.Open(scene.landcover).ReadAsArray()[:120, :120].reshape(15, 8, 15, 8) > 0
    full = valid.all(axis=(1, 3))
    assert (cells.max(axis=(1, 3)) == cells.min(axis=(1, 3)))[full].all()
    assert res.task == "classification"


def test_band_count_mismatch_is_refused_before_writing(tmp_path, out_dir):
    model = _patch_model(tmp_path, in_bands=3)
    img = write_raster(tmp_path / "two.tif", np.ones((2, 40, 40), np.uint8))
    with pytest.raises(InputError, match="expects 3 band"):
        run_predict(PredictConfig(img, model, str(out_dir / "x.tif")))
    assert list(out_dir.iterdir()) == []


def test_bands_the_model_does_not_use_are_named_in_the_log(tmp_path, out_dir):
    """A 3-band model on a 4-band raster runs on its training bands 1–3, and says band 4 is left out."""
    model = _patch_model(tmp_path, in_bands=3, band_indices=[1, 2, 3])
    img = write_raster(tmp_path / "four.tif", np.full((4, 40, 40), 1000, np.uint16))
    log = []
    run_predict(PredictConfig(img, model, str(out_dir / "x.tif"), stride=8, device="cpu"), Feedback(on_log=log.append))
    assert "The model uses bands 1, 2, 3 of the raster's 4; band 4 is not used." in log
    log.clear()  # bands chosen by the user: nothing to point out
    run_predict(PredictConfig(img, model, str(out_dir / "y.tif"), stride=8, device="cpu", bands="2,3,4"),
                Feedback(on_log=log.append))
    assert not any("not used" in m for m in log)


def test_all_nodata_raster_is_refused_and_leaves_nothing(tmp_path, out_dir):
    model = _patch_model(tmp_path)
    img = write_raster(tmp_path / "empty.tif", np.zeros((4, 40, 40), np.uint16), nodata=0)
    with pytest.raises(InputError, match="no valid pixels"):
        run_predict(PredictConfig(img, model, str(out_dir / "x.tif"), str(out_dir / "c.tif")))
    assert list(out_dir.iterdir()) == []


def test_raster_smaller_than_patch_is_refused(tmp_path, out_dir):
    model = _patch_model(tmp_path)
    img = write_raster(tmp_path / "tiny.tif", np.ones((4, 8, 8), np.uint16))
    with pytest.raises(InputError, match="smaller than the model's patch"):
        run_predict(PredictConfig(img, model, str(out_dir / "x.tif")))
    assert list(out_dir.iterdir()) == []


def test_output_over_an_input_is_refused_and_the_input_kept(tmp_path):
    """Writing the prediction over the input raster (or the model) would destroy the analyst's data."""
    import hashlib

    model = _patch_model(tmp_path)
    img = write_raster(tmp_path / "scene.tif", np.full((4, 40, 40), 1000, np.uint16))
    digest = {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (img, model)}
    with pytest.raises(InputError, match="input raster"):
        run_predict(PredictConfig(img, model, img))
    with pytest.raises(InputError, match="input raster"):
        run_predict(PredictConfig(img, model, str(tmp_path / "x.tif"), str(tmp_path / "." / "scene.tif")))
    with pytest.raises(InputError, match="model file"):
        run_predict(PredictConfig(img, model, model))
    assert {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (img, model)} == digest
    assert not (tmp_path / "x.tif").exists() and leftovers(tmp_path) == []


def test_non_model_file_is_refused(scene, tmp_path, out_dir):
    p = tmp_path / "weights.pth"
    torch.save({"x": torch.ones(1)}, p)
    with pytest.raises(ModelFileError):
        run_predict(PredictConfig(scene.image, str(p), str(out_dir / "x.tif")))
    assert list(out_dir.iterdir()) == []


def test_cancel_mid_run_leaves_no_file(scene, sample_model, out_dir):
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(JobCancelled):
        run_predict(PredictConfig(scene.image, sample_model, str(out_dir / "x.tif"), str(out_dir / "c.tif"),
                                  tile_size=24, overlap=4), Feedback(is_cancelled=cancelled))
    assert list(out_dir.iterdir()) == []
    assert leftovers(out_dir) == []


def test_unknown_cuda_request_is_a_clear_error(scene, sample_model, out_dir):
    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    with pytest.raises(Exception, match="CUDA GPU was requested"):
        run_predict(PredictConfig(scene.image, sample_model, str(out_dir / "x.tif"), device="cuda"))


def test_window_prediction_is_georeferenced(scene, sample_model, out_dir):
    out = out_dir / "win.tif"
    run_predict(PredictConfig(scene.image, sample_model, str(out), window=(32, 16, 40, 50), device="cpu"))
    info = raster_info(str(out))
    src = raster_info(scene.image)
    assert (info.width, info.height) == (40, 50)
    assert info.geotransform[0] == src.geotransform[0] + 32 * src.geotransform[1]
    assert info.geotransform[3] == src.geotransform[3] + 16 * src.geotransform[5]


@pytest.mark.gpu
def test_cuda_prediction_matches_cpu(scene, sample_model, out_dir):
    cpu, gpu = out_dir / "cpu.tif", out_dir / "gpu.tif"
    run_predict(PredictConfig(scene.image, sample_model, str(cpu), device="cpu"))
    res = run_predict(PredictConfig(scene.image, sample_model, str(gpu), device="cuda"))
    assert res.device.startswith("cuda")
    a, b = gdal.Open(str(cpu)).ReadAsArray(), gdal.Open(str(gpu)).ReadAsArray()
    assert (a == b).mean() > 0.999  # fp16 autocast may flip a rare near-tie


def test_views_average_flips_and_rotations_and_turn_dense_outputs_back():
    from geoml_plugin.core.predict import predict_views

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    # a dense "classifier" that returns its input as logits: every view turned back is the same map
    same = predict_views(lambda t: t, x, 8, classifier=True)
    torch.testing.assert_close(same, torch.log_softmax(x, 1), atol=1e-5, rtol=1e-5)
    # a patch classifier that sees orientation: 8 views = mean probability over the 8 transforms
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 4)).eval()
    with torch.no_grad():
        got = predict_views(net, x, 8).exp()
        views = [x, x.flip(-1)]
        want = torch.stack([torch.softmax(net(torch.rot90(v, r, (-2, -1))), 1) for v in views for r in range(4)]).mean(0)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(got, torch.softmax(net(x), 1), atol=1e-3)  # it does average something
        torch.testing.assert_close(predict_views(net, x, 1), net(x))
    with pytest.raises(InputError, match="1, 2, 4 or 8"):
        predict_views(net, x, 3)


def test_patch_classifier_with_views_maps_the_scene(scene, sample_model, out_dir):
    out = out_dir / "pred8.tif"
    run_predict(PredictConfig(scene.image, sample_model, str(out), device="cpu", views=8, stride=8))
    ds = gdal.Open(str(out))
    pred, truth = ds.ReadAsArray(), gdal.Open(scene.landcover).ReadAsArray()
    assert (pred == truth)[truth > 0].mean() > 0.9
    assert ds.GetMetadataItem("GEOML_VIEWS") == "8"
    with pytest.raises(InputError, match="1, 2, 4 or 8"):
        run_predict(PredictConfig(scene.image, sample_model, str(out_dir / "x.tif"), device="cpu", views=5))
    assert not (out_dir / "x.tif").exists()


def _fitted_unet(scene, task):
    """A small U-Net (small_resnet encoder, 16-px 'patches', receptive field far beyond any overlap), fitted for
    a few seeded steps to the scene, so that its maps have structure to lose at tile borders."""
    torch.manual_seed(0)
    k = 4 if task == "segmentation" else 1
    model = build_model("unet", backbone="small_resnet", in_bands=4, num_outputs=k)
    img = gdal.Open(scene.image).ReadAsArray().astype(np.float32)
    valid = (img != 0).all(axis=0)
    x = (img - 1000) / 500
    x[:, ~valid] = 0
    xt = torch.from_numpy(x)[None]
    if task == "segmentation":
        y = torch.from_numpy(gdal.Open(scene.landcover).ReadAsArray().astype(np.int64) - 1).clamp_min(0)[None]
        kw = dict(classes=make_classes(["a", "b", "c", "d"]))
    else:
        y = torch.from_numpy(gdal.Open(scene.canopy_height).ReadAsArray().astype(np.float32)) / 10
        kw = dict(target={"name": "h", "mean": 0.0, "std": 1.0})
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        out = model(xt)
        if task == "segmentation":
            loss = torch.nn.functional.cross_entropy(out, y)
        else:
            loss = ((out[0, 0] - y)[torch.from_numpy(valid)] ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    meta = ModelMetadata(architecture="unet", arch_args={"backbone": "small_resnet", "in_bands": 4, "num_outputs": k},
                     task=task, output="dense", in_bands=4, patch_size=16, norm_mean=[1000] * 4, norm_std=[500] * 4,
                     **kw)
    with torch.no_grad():
        full = model(xt)[0]
    inner = np.zeros(valid.shape, bool)
    inner[16:-16, 16:-16] = True  # one pass and tiles pad the raster's own edge differently
    return model, meta, full, valid, inner & valid


def test_unet_tiles_match_one_pass_over_the_raster(scene, out_dir):
    """Default tiles (8 patches, half a patch cropped, origins on the U-Net's 16-px pooling grid) give nearly
    the classes and confidence of one pass; tiles of 4 patches cropped by a quarter patch changed 2.5 % of the
    classes inside the raster. Georeference and nodata are the input's."""
    model, meta, full, valid, inner = _fitted_unet(scene, "segmentation")
    out, conf = out_dir / "seg.tif", out_dir / "seg_conf.tif"
    res = predict_raster(model, meta, PredictConfig(scene.image, output_path=str(out), confidence_path=str(conf),
                                                    device="cpu"))
    assert res.tiles > 1 and (res.tile_size, res.overlap) == (128, 8)
    prob = torch.softmax(full, 0).numpy()
    cls, c = gdal.Open(str(out)).ReadAsArray(), gdal.Open(str(conf)).ReadAsArray()
    changed = (prob.argmax(0) + 1 != cls)[inner].mean()
    assert changed < 0.012, changed
    assert np.abs(c - prob.max(0))[inner].mean() < 0.012
    assert (cls[~valid] == 0).all() and (c[~valid] == -1).all() and (cls[valid] > 0).all()
    src, ds = gdal.Open(scene.image), gdal.Open(str(out))
    assert ds.GetGeoTransform() == src.GetGeoTransform() and ds.GetProjection() == src.GetProjection()
    assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)


def test_unet_regression_tiles_match_one_pass_within_tolerance(scene, out_dir):
    model, meta, full, valid, inner = _fitted_unet(scene, "regression")
    out = out_dir / "reg.tif"
    predict_raster(model, meta, PredictConfig(scene.image, output_path=str(out), device="cpu"))
    vals = gdal.Open(str(out)).ReadAsArray()
    assert np.abs(vals - full[0].numpy())[inner].mean() < 0.06  # 0.15 with the former tiles; values' std 0.94
    assert (vals[~valid] == -9999.0).all()


def test_overlap_must_leave_a_core():
    from geoml_plugin.core.predict import dense_geometry

    assert dense_geometry(32) == (256, 16, 4)  # 8-patch tiles, batched to the pixels of 16 4-patch tiles
    assert dense_geometry(128) == (512, 32, 16)
    assert dense_geometry(16, tile_size=24) == (24, 4, 16)
    with pytest.raises(InputError, match="twice the overlap"):
        dense_geometry(32, tile_size=64, overlap=32)
    with pytest.raises(InputError):
        dense_geometry(32, overlap=-1)


@pytest.mark.parametrize("patch", [300, 512, 1024])
def test_dense_models_trained_on_large_patches_predict_with_the_defaults(patch):
    """Fine-tuning accepts patches up to 1024 px; before, a 512 px default tile could not hold a 1024 px model's
    quarter-patch crop on both sides (an error asking for a smaller overlap) and was smaller than the patch."""
    from geoml_plugin.core.predict import dense_geometry
    from geoml_plugin.core.raster.tiling import dense_tiles

    tile, overlap, per_batch = dense_geometry(patch)
    assert tile >= 2 * patch and overlap == patch // 4 and per_batch >= 1
    tiles = dense_tiles(3 * patch, 2 * patch, tile, overlap, align=32)
    covered = np.zeros((2 * patch, 3 * patch), int)
    for t in tiles:
        covered[t.core.y:t.core.y + t.core.h, t.core.x:t.core.x + t.core.w] += 1
    assert (covered == 1).all()

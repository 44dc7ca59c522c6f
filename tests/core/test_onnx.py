"""ONNX export (every model kind the tests build) and applying ONNX models with onnxruntime, also without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from osgeo import gdal

from geoml_plugin.core.errors import InputError, ModelFileError
from geoml_plugin.core.modelfile import ModelMetadata, load_model, save_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.onnx_export import DEEPNESS_STD, export_onnx
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.raster.classes import make_classes
from geoml_plugin.core.raster.io import category_names_of
from geoml_plugin.core.raster.tiling import window_tiles
from geoml_plugin.core.window_scores import fully_convolutional, interpolate
from tests.conftest import ROOT, write_raster

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

def _wkt():
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    return srs.ExportToWkt()


# name: (architecture, arch_args, task, output, patch)
KINDS = {
    "small_cnn_patch": ("small_cnn", dict(in_bands=4, num_outputs=2, widths=[4, 4, 4, 4]), "classification", "patch",
                        16),
    "small_resnet_patch": ("small_resnet", dict(in_bands=4, num_outputs=3), "classification", "patch", 32),
    # what fine-tuning makes now: a centre-weighted pool (64 px: 4 × 4 cells, so the weights are not uniform)
    "small_resnet_patch_centre": ("small_resnet", dict(in_bands=4, num_outputs=3, centre_pool=0.25), "classification",
                                  "patch", 64),
    "resnet18_patch": ("resnet18", dict(in_bands=4, num_outputs=3), "classification", "patch", 64),
    "small_resnet_patch_regression": ("small_resnet", dict(in_bands=4, num_outputs=1), "regression", "patch", 32),
    "fewshot_pixelnorm": ("meta_classifier", dict(in_bands=4, num_classes=3, widths=[8, 8, 16, 16], stem_stride=2,
                                                   pool_blocks=2, norm="pixel", normalize=True), "classification",
                          "patch", 32),
    "fewshot_groupnorm": ("meta_classifier", dict(in_bands=4, num_classes=2, widths=[8, 8, 8], norm="group"),
                          "classification", "patch", 32),
    "pixel_linear": ("pixel_linear", dict(in_bands=4, out_channels=3), "segmentation", "dense", 16),
    "small_fcn": ("small_fcn", dict(in_bands=4, num_classes=3, width=8), "segmentation", "dense", 16),
    "unet_segmentation": ("unet", dict(backbone="small_resnet", in_bands=4, num_outputs=4), "segmentation", "dense",
                          16),
    "unet_regression": ("unet", dict(backbone="small_resnet", in_bands=4, num_outputs=1, full_res=True), "regression",
                        "dense", 16),
}


def _model_file(tmp_path, kind: str) -> str:
    arch, args, task, output, patch = KINDS[kind]
    torch.manual_seed(0)
    model = build_model(arch, **args)
    if arch != "resnet18":  # a deep network's logits would saturate the softmax
        for p in model.parameters():  # untrained weights, spread so that outputs differ between pixels
            p.data.add_(torch.randn_like(p) * 0.05)
    k = args.get("num_outputs", args.get("num_classes", args.get("out_channels")))
    kw = dict(target={"name": "height", "units": "m", "mean": 5.0, "std": 2.0}) if task == "regression" else \
        dict(classes=make_classes([f"class {i}" for i in range(k)]))
    meta = ModelMetadata(architecture=arch, arch_args=args, task=task, output=output, in_bands=4, patch_size=patch,
                     norm_mean=[1000.0, 900.0, 800.0, 700.0], norm_std=[500.0, 400.0, 300.0, 200.0],
                     pixel_size=[10.0, 10.0], crs_wkt=_wkt(), **kw)
    return save_model(str(tmp_path / f"{kind}.safetensors"), model, meta)


def _raw(shape, seed=0):
    g = np.random.default_rng(seed)
    return (g.normal(size=shape) * 400 + 900).astype(np.float32)


def _metadata(path) -> dict:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "resnet18_patch" else k
                                  for k in sorted(KINDS)])
def test_export_of_every_model_kind_equals_pytorch(tmp_path, kind):
    """onnxruntime's output equals GeoML's own computation in PyTorch within 1e-4: dense models = softmax /
    de-normalised output of the network on normalised pixels; patch models = GeoML's window scores (soft-maxed)
    interpolated to pixels by ``window_scores.interpolate``. Batch, height and width are dynamic."""
    path = _model_file(tmp_path, kind)
    out = str(tmp_path / f"{kind}.onnx")
    res = export_onnx(path, out)
    assert res.max_difference <= 1e-4
    model, meta = load_model(path)
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert [d if isinstance(d, int) else "dyn" for d in sess.get_inputs()[0].shape] == ["dyn", 4, "dyn", "dyn"]
    assert onnx.load(out).opset_import[0].version == 17
    mean = np.asarray(meta.norm_mean, np.float32)[:, None, None]
    std = np.asarray(meta.norm_std, np.float32)[:, None, None]
    P = meta.patch_size
    for b, h, w in ((1, 2 * P + 16, 2 * P + 16), (2, 2 * P + 5, 3 * P + 3)):
        x = _raw((b, 4, h, w), seed=h)
        got = sess.run(None, {"input": x})[0]
        z = torch.from_numpy((x - mean) / std)
        with torch.no_grad():
            if meta.output == "dense":
                ref = model(z)
                ref = torch.softmax(ref, 1) if meta.is_classifier else ref * 2.0 + 5.0
                ref = ref.numpy()
            else:  # GeoML's _predict_patches on one tile covering the input
                step = res.step
                scorer = fully_convolutional(model, P, step)
                shift = scorer.shift if scorer is not None else 0
                (t,) = window_tiles(w, h, P, step, core=4096, shift=shift)
                r = t.read
                zp = torch.nn.functional.pad(z, (-r.x, r.x + r.w - w, -r.y, r.y + r.h - h))
                if scorer is not None:
                    scores = scorer.to("cpu")(zp)
                else:  # window by window, as predict._window_by_window
                    win = zp.unfold(2, P, step).unfold(3, P, step)[:, :, :t.ny, :t.nx]
                    flat = win.permute(0, 2, 3, 1, 4, 5).reshape(-1, 4, P, P)
                    scores = model(flat).reshape(b, t.ny, t.nx, -1).permute(0, 3, 1, 2)
                scores = torch.softmax(scores, 1) if meta.is_classifier else scores * 2.0 + 5.0
                ref = np.stack([interpolate(s, t.first, step, (w, h)).numpy() for s in scores])
        assert got.shape == ref.shape == (b, len(meta.classes) if meta.is_classifier else 1, h, w)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_metadata_has_deepness_keys_and_types_and_geoml_json(tmp_path):
    path = _model_file(tmp_path, "small_resnet_patch")
    out = str(tmp_path / "m.onnx")
    export_onnx(path, out)
    md = _metadata(out)
    dec = {k: json.loads(v) for k, v in md.items()}
    assert dec["model_type"] == "Segmentor"
    assert dec["class_names"] == {"0": "class 0", "1": "class 1", "2": "class 2"}
    assert isinstance(dec["resolution"], float) and dec["resolution"] == 1000.0  # 10 m pixels in cm/px
    assert isinstance(dec["tiles_size"], int) and isinstance(dec["tiles_overlap"], int)
    assert 0 < dec["tiles_overlap"] < 100
    assert dec["standardization_mean"] == [0.0] * 4 and dec["standardization_std"] == [DEEPNESS_STD] * 4
    g = dec["geoml"]
    assert g["format"] == "geoml-onnx"
    m = g["meta"]
    assert m["in_bands"] == 4 and m["norm_mean"] == [1000.0, 900.0, 800.0, 700.0] and m["patch_size"] == 32
    assert [c["name"] for c in m["classes"]] == ["class 0", "class 1", "class 2"]
    assert all(c["color"].startswith("#") for c in m["classes"]) and "UTM zone 32N" in m["crs_wkt"]
    assert g["export"]["source_output"] == "patch" and g["export"]["step"] == 4
    reg = str(tmp_path / "r.onnx")
    export_onnx(_model_file(tmp_path, "unet_regression"), reg)
    dec = {k: json.loads(v) for k, v in _metadata(reg).items()}
    assert dec["model_type"] == "Regressor" and "class_names" not in dec
    assert dec["geoml"]["meta"]["target"]["units"] == "m"


def test_deepness_scaling_hands_the_graph_raw_values(tmp_path):
    """What Deepness feeds the graph, (x/255 - mean) / std with the file's metadata, is x itself."""
    out = str(tmp_path / "m.onnx")
    export_onnx(_model_file(tmp_path, "pixel_linear"), out)
    md = {k: json.loads(v) for k, v in _metadata(out).items()}
    x = np.arange(0, 256, dtype=np.float32)
    fed = (x * np.float32(1.0 / 255.0) - np.float32(md["standardization_mean"][0])) / np.float32(
        md["standardization_std"][0])
    np.testing.assert_allclose(fed, x, rtol=1e-5, atol=1e-3)


def _scene_raster(tmp_path, seed=3, size=96):
    g = np.random.default_rng(seed)
    img = np.empty((4, size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    for b in range(4):
        img[b] = (800 + 300 * np.sin(xx / (7 + b)) + 200 * np.cos(yy / (5 + b)) + g.normal(0, 60, (size, size))
                  ).clip(1, None)
    img[:, :6, :10] = 0  # nodata corner
    return write_raster(tmp_path / "img.tif", img, nodata=0), img


def _margin(prob):
    s = np.sort(prob, 0)
    return s[-1] - s[-2]


@pytest.mark.parametrize("kind", ["small_resnet_patch", "small_resnet_patch_centre", "fewshot_pixelnorm",
                                  "small_cnn_patch", "unet_segmentation", "unet_regression",
                                  "small_resnet_patch_regression"])
def test_round_trip_onnx_map_equals_pytorch_map(tmp_path, kind):
    """GeoML export → GeoML apply through onnxruntime gives the PyTorch map: the same classes except ties
    (winning margin under 1e-3), regression within 1e-3 of the value range; nodata, category names and the
    style file as for the safetensors model. Pixels within a patch of the raster's edge are left out: there
    GeoML reads windows inside the raster and the export zero-pads."""
    img_path, img = _scene_raster(tmp_path, size=max(96, 3 * KINDS[kind][4]))
    path = _model_file(tmp_path, kind)
    onnx_path = str(tmp_path / "m.onnx")
    export_onnx(path, onnx_path)
    a, b = tmp_path / "torch.tif", tmp_path / "onnx.tif"
    ca, cb = tmp_path / "tc.tif", tmp_path / "oc.tif"
    ra = run_predict(PredictConfig(img_path, path, str(a), str(ca), device="cpu"))
    rb = run_predict(PredictConfig(img_path, onnx_path, str(b), str(cb), device="cpu"))
    assert rb.device == "cpu (onnxruntime)"
    va, vb = gdal.Open(str(a)).ReadAsArray(), gdal.Open(str(b)).ReadAsArray()
    valid = (img != 0).all(0)
    P = KINDS[kind][4]
    inner = np.zeros_like(valid)
    inner[P:-P, P:-P] = True
    inner &= valid
    if ra.task == "regression":
        assert (vb[~valid] == -9999.0).all()
        lo, hi = np.percentile(va[valid], [0, 100])
        assert np.abs(va - vb)[inner].max() <= 1e-3 * (hi - lo)
    else:
        assert (vb[~valid] == 0).all() and (vb[valid] > 0).all()
        assert category_names_of(str(b)) == category_names_of(str(a))
        conf_a = gdal.Open(str(ca)).ReadAsArray()
        conf_b = gdal.Open(str(cb)).ReadAsArray()
        differ = (va != vb) & inner
        # a class may differ only where two classes tie: the winners' probabilities then agree
        assert differ.mean() < 0.001, differ.mean()
        assert np.abs(conf_a - conf_b)[inner].max() < 1e-3
    assert (tmp_path / "onnx.qml").exists()
    assert rb.valid_pixels == ra.valid_pixels


def _deepness_model(path, fixed=True, metadata=None, bands=3, layout="nchw"):
    """A hand-made Deepness segmentor: a 1×1 convolution (weights below) and a softmax, built with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)[:, :bands, None, None]
    dims = [1, bands, 64, 64] if fixed else ["batch", bands, "height", "width"]
    if layout == "nhwc":
        dims = [1, 64, 64, bands]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "deepness_toy", [inp], [out], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(path))
    return str(path)


DEEPNESS_MD = {"model_type": json.dumps("Segmentor"), "class_names": json.dumps({0: "red", 1: "green", 2: "blue"}),
               "resolution": json.dumps(50), "tiles_size": json.dumps(64), "tiles_overlap": json.dumps(25),
               "standardization_mean": json.dumps([0.5, 0.5, 0.5]), "standardization_std": json.dumps([0.25] * 3)}


def test_hand_made_deepness_segmentor_is_applied(tmp_path):
    g = np.random.default_rng(5)
    img = g.integers(1, 256, (3, 100, 90)).astype(np.uint8)
    img[:, 50:60, 40:45] = 0
    src = write_raster(tmp_path / "rgb.tif", img, nodata=0)
    model = _deepness_model(tmp_path / "toy.onnx", metadata=DEEPNESS_MD)
    out, conf = tmp_path / "cls.tif", tmp_path / "conf.tif"
    res = run_predict(PredictConfig(src, model, str(out), str(conf), device="cpu"))
    assert res.tile_size == 64
    cls = gdal.Open(str(out)).ReadAsArray()
    valid = (img != 0).all(0)
    z = (img.astype(np.float32) / 255 - 0.5) / 0.25
    want = z.argmax(0) + 1
    assert (cls[valid] == want[valid]).all() and (cls[~valid] == 0).all()
    assert category_names_of(str(out)) == ["", "red", "green", "blue"]
    e = np.exp(z - z.max(0))
    np.testing.assert_allclose(gdal.Open(str(conf)).ReadAsArray()[valid], (e.max(0) / e.sum(0))[valid], atol=1e-5)


def test_onnx_model_with_other_band_count_is_refused(tmp_path):
    src = write_raster(tmp_path / "four.tif", np.ones((4, 40, 40), np.uint8))
    model = _deepness_model(tmp_path / "toy.onnx", metadata=DEEPNESS_MD)
    with pytest.raises(InputError, match="expects 3 band"):
        run_predict(PredictConfig(src, model, str(tmp_path / "x.tif"), device="cpu"))
    assert not (tmp_path / "x.tif").exists()


def test_a_patch_model_mapped_with_cut_out_context_is_not_exported(tmp_path):
    """MobileNetV2 patch maps score each window with its training context (``predict``); a one-pass graph
    would give another map, so export refuses it with the reason and writes nothing."""
    meta = ModelMetadata(architecture="mobilenet_v2", arch_args={"in_bands": 3, "num_outputs": 2},
                         task="classification", output="patch", in_bands=3, patch_size=32,
                         classes=make_classes(["a", "b"]), norm_mean=[0.0] * 3, norm_std=[1.0] * 3,
                         extra={"window_context": 32})
    path = save_model(str(tmp_path / "mn.safetensors"), build_model("mobilenet_v2", in_bands=3, num_outputs=2), meta)
    with pytest.raises(InputError, match="cannot be exported.*32 px of context") as err:
        export_onnx(path, str(tmp_path / "mn.onnx"))
    assert "geoml:predict" in err.value.hint
    assert sorted(os.listdir(tmp_path)) == ["mn.safetensors"]


def test_corrupt_onnx_unknown_layout_and_missing_metadata_get_clear_messages(tmp_path):
    src = write_raster(tmp_path / "rgb.tif", np.ones((3, 40, 40), np.uint8))
    bad = tmp_path / "corrupt.onnx"
    good = _deepness_model(tmp_path / "ok.onnx", metadata=DEEPNESS_MD)
    bad.write_bytes(open(good, "rb").read()[:200] + b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="onnxruntime cannot load 'corrupt.onnx'"):
        run_predict(PredictConfig(src, str(bad), str(tmp_path / "a.tif"), device="cpu"))
    nhwc = _deepness_model(tmp_path / "nhwc.onnx", metadata=DEEPNESS_MD, layout="nhwc")
    with pytest.raises(ModelFileError, match=r"not the \(batch, bands, height, width\) layout"):
        run_predict(PredictConfig(src, nhwc, str(tmp_path / "b.tif"), device="cpu"))
    bare = _deepness_model(tmp_path / "bare.onnx", metadata={})
    with pytest.raises(ModelFileError, match="no metadata") as e:
        run_predict(PredictConfig(src, bare, str(tmp_path / "c.tif"), device="cpu"))
    assert "model_type" in e.value.hint and "class_names" in e.value.hint
    assert not any(p.name.endswith(".tif") for p in tmp_path.iterdir() if p.name != "rgb.tif")


NO_TORCH = textwrap.dedent("""
    import importlib.abc, json, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
                raise ImportError("torch is made unimportable by the test")
    sys.meta_path.insert(0, NoTorch())
    from geoml_plugin.core.predict import PredictConfig, run_predict
    img, model, out, conf = sys.argv[1:5]
    r = run_predict(PredictConfig(img, model, out, conf or None, device="auto"))
    print(json.dumps({"torch": "torch" in sys.modules, "device": r.device, "valid": r.valid_pixels,
                      "counts": r.class_counts}))
""")


@pytest.mark.parametrize("kind", ["small_resnet_patch", "unet_regression"])
def test_onnx_predict_works_where_torch_cannot_be_imported(tmp_path, kind):
    img_path, img = _scene_raster(tmp_path)
    path = _model_file(tmp_path, kind)
    onnx_path = str(tmp_path / "m.onnx")
    export_onnx(path, onnx_path)
    ref = tmp_path / "torch.tif"
    run_predict(PredictConfig(img_path, onnx_path, str(ref), device="cpu"))
    out, conf = tmp_path / "nt.tif", tmp_path / "nt_conf.tif"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", NO_TORCH, img_path, onnx_path, str(out),
                        str(conf) if KINDS[kind][2] != "regression" else ""],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["torch"] is False and res["device"] == "cpu (onnxruntime)"
    a, b = gdal.Open(str(ref)).ReadAsArray(), gdal.Open(str(out)).ReadAsArray()
    np.testing.assert_array_equal(a, b)
    valid = (img != 0).all(0)
    assert res["valid"] == int(valid.sum())
    assert (tmp_path / "nt.qml").exists()
    if KINDS[kind][2] == "regression":
        assert (b[~valid] == -9999.0).all()
        assert gdal.Open(str(out)).GetRasterBand(1).GetNoDataValue() == -9999.0
    else:
        assert (b[~valid] == 0).all() and conf.exists()
        assert category_names_of(str(out)) == ["", "class 0", "class 1", "class 2"]
        assert sum(res["counts"].values()) == res["valid"]


def test_onnx_tiles_of_a_patch_model_match_one_pass_of_geoml(tmp_path, monkeypatch):
    """Over many ONNX tiles (128 px, cropped by the exported overlap) a patch regressor's map equals GeoML's map
    made in one tile (no seams) within 1e-3 of the value range, away from the raster's edge: the exported
    tiles_overlap is enough context for every kept pixel."""
    import geoml_plugin.core.predict as core_predict

    img_path, img = _scene_raster(tmp_path, size=300)
    path = _model_file(tmp_path, "small_resnet_patch_regression")
    onnx_path = str(tmp_path / "m.onnx")
    res = export_onnx(path, onnx_path)
    monkeypatch.setattr(core_predict, "_PATCH_TILE", 4096)
    run_predict(PredictConfig(img_path, path, str(tmp_path / "one.tif"), device="cpu"))
    rb = run_predict(PredictConfig(img_path, onnx_path, str(tmp_path / "tiles.tif"), device="cpu", tile_size=160))
    assert rb.tiles >= 9 and rb.overlap == res.overlap
    a, b = gdal.Open(str(tmp_path / "one.tif")).ReadAsArray(), gdal.Open(str(tmp_path / "tiles.tif")).ReadAsArray()
    valid = (img != 0).all(0)
    inner = np.zeros_like(valid)
    inner[32:-32, 32:-32] = True
    inner &= valid
    assert np.abs(a - b)[inner].max() <= 1e-3 * (a[valid].max() - a[valid].min())


@pytest.mark.parametrize("out_bands", [1, 3])
def test_translator_export_equals_pytorch_and_round_trips_through_predict(tmp_path, out_bands):
    """A GAN translator (U-Net generator, per-band target units) exports as a Regressor with one output band per
    target band; onnxruntime equals the generator's de-normalised output, and geoml:predict gives the same map."""
    from tests.gan_helpers import tiny_translator_model

    path, gen = tiny_translator_model(tmp_path / "tr.safetensors", in_bands=2, out_bands=out_bands)
    out = str(tmp_path / "tr.onnx")
    res = export_onnx(path, out)
    assert res.model_type == "Regressor" and res.max_difference <= 1e-4
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    x = (100 + 20 * np.random.default_rng(0).standard_normal((1, 2, 38, 46))).astype(np.float32)
    with torch.no_grad():
        ref = gen(torch.from_numpy((x - 100) / 20)).numpy() * 2.0 + 10.0
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-4, rtol=0)
    img = write_raster(tmp_path / "in.tif", (100 + 20 * np.random.default_rng(1).standard_normal((2, 70, 60))
                                              ).astype(np.float32))
    run_predict(PredictConfig(img, path, str(tmp_path / "a.tif"), device="cpu"))
    run_predict(PredictConfig(img, out, str(tmp_path / "b.tif"), device="cpu"))
    a, b = gdal.Open(str(tmp_path / "a.tif")).ReadAsArray(), gdal.Open(str(tmp_path / "b.tif")).ReadAsArray()
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-3 * (a.max() - a.min())


def test_a_graph_needing_a_custom_operator_library_is_refused_not_loaded(tmp_path):
    """An ONNX file is data: an operator from a custom domain is never looked up in a library; the file is
    refused with onnxruntime's reason."""
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "h", "w"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Boom", ["x"], ["y"], domain="com.example.custom")], "custom",
                              [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example.custom", 1)])
    model.ir_version = 8
    for k, v in DEEPNESS_MD.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    src = write_raster(tmp_path / "rgb.tif", np.ones((3, 40, 40), np.uint8))
    with pytest.raises(ModelFileError, match="onnxruntime cannot load 'custom.onnx'") as e:
        run_predict(PredictConfig(src, str(path), str(tmp_path / "o.tif"), device="cpu"))
    assert "custom operator libraries are never loaded" in e.value.hint

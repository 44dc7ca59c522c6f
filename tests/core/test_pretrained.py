"""Pretrained weights: the catalogue's facts, safe loading, key mapping into every backbone, band-aware first
layer, and the scaling stored in the model file and applied by prediction."""
import dataclasses
import hashlib
import os
import re

import numpy as np
import pytest
import torch

from geoml_plugin.core.errors import InputError, ModelFileError
from geoml_plugin.core.finetune import weights_catalog
from geoml_plugin.core.finetune.backbones import BACKBONES
from geoml_plugin.core.finetune.pretrained import (
    apply_entry,
    band_key,
    first_layer,
    match_bands,
    safe_load,
)
from geoml_plugin.core.finetune.weights_catalog import CATALOGUE, find_entry
from geoml_plugin.core.models import build_model
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)
from tests.weights_server import torchgeo_state, torchvision_state

S2_L2A = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]  # no B10


# -- the catalogue --------------------------------------------------------------------------------------------
def test_every_catalogue_entry_is_complete_and_consistent():
    names = [e.name for e in CATALOGUE]
    assert len(names) == len(set(names))
    for e in CATALOGUE:
        assert e.arch in BACKBONES and e.arch != "small_resnet"
        assert e.url.startswith("https://") and e.title and e.licence and e.paper and e.source and e.scaling
        # the checksum is the published file name's hash prefix (torch.hub's check_hash convention)
        assert re.search(rf"-{e.hash_prefix}\.pth$", e.url) and len(e.hash_prefix) == 8
        assert e.size_mb > 0 and len(e.bands) in (3, 7, 11, 13)
        if e.scale_mean is not None:
            assert len(e.scale_mean) == len(e.scale_std) == len(e.bands) and min(e.scale_std) > 0
    expected = {"resnet18_imagenet", "resnet34_imagenet", "resnet50_imagenet", "resnet18_sentinel2_all_moco",
                "resnet50_sentinel2_all_moco", "resnet50_sentinel2_all_dino", "resnet18_sentinel2_rgb_moco",
                "resnet18_sentinel2_rgb_seco", "resnet18_landsat_oli_tirs_toa_moco"}
    assert expected <= set(names)
    assert find_entry("imagenet", "resnet50").url.endswith("resnet50-11ad3fa6.pth")  # torchvision's DEFAULT (V2)


def test_imagenet_entries_are_torchvisions_own_urls():
    import torchvision

    for arch, enum in (("resnet18", "ResNet18_Weights"), ("resnet34", "ResNet34_Weights"),
                       ("resnet50", "ResNet50_Weights"), ("mobilenet_v2", "MobileNet_V2_Weights")):
        tv = getattr(torchvision.models, enum).DEFAULT
        e = find_entry("imagenet", arch)
        assert e.url == tv.url and e.size_mb == tv.meta["_file_size"]
    v1 = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    e = find_entry("mobilenet_v2_imagenet_v1")
    assert e.url == v1.url and e.size_mb == v1.meta["_file_size"] and e.arch == "mobilenet_v2"


def test_seco_scaling_reproduces_secos_own_chain():
    """DN → ÷10000 → ×255 (seco_downloader) → quantile stretch → ÷255 → ImageNet normalisation (seco_dataset)."""
    e = find_entry("resnet18_sentinel2_rgb_seco")
    dn = np.array([[500.0, 1200.0, 3000.0]])  # B4, B3, B2 digital numbers
    lo, hi = np.array([0.0, 2.0, 3.0]), np.array([129.0, 103.0, 88.0])
    v = dn / 10000 * 255
    q = (v - lo) / (hi - lo) * 255 / 255
    ref = (q - np.array(weights_catalog.IMAGENET_MEAN)) / np.array(weights_catalog.IMAGENET_STD)
    ours = (dn - np.array(e.scale_mean)) / np.array(e.scale_std)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


# -- safe loading ---------------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelFileError, match="needs full unpickling, which could run code"):
        safe_load(str(path))
    assert not marker.exists()


# -- key mapping ---------------------------------------------------------------------------------------------
def _entry(base, **kw):
    return dataclasses.replace(find_entry(base), **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weight files in the layouts GeoML reads, per architecture."""
    d = tmp_path_factory.mktemp("weights")
    out = {}
    for arch in ("resnet18", "resnet34", "resnet50", "mobilenet_v2"):
        tv = torchvision_state(arch)
        p = d / f"{arch}_tv.pth"
        torch.save(tv, p)
        out[arch, "torchvision"] = (str(p), tv)
    tg = torchgeo_state("resnet18", 13)
    p = d / "resnet18_tg.pth"
    torch.save(tg, p)
    out["resnet18", "torchgeo"] = (str(p), tg)
    # a Lightning checkpoint of a MoCo run: wrapped and prefixed, with a projection head
    moco = {f"module.encoder_q.{k}": v for k, v in tg.items()}
    moco["module.encoder_q.fc.0.weight"] = torch.zeros(128, 512)
    p = d / "resnet18_moco.ckpt"
    torch.save({"state_dict": moco, "epoch": 99}, p)
    out["resnet18", "lightning"] = (str(p), tg)
    from safetensors.torch import save_file

    p = d / "resnet18_tg.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in tg.items()}, str(p))
    out["resnet18", "safetensors"] = (str(p), tg)
    return out


def _assert_body_equal(model, source):
    got = model.backbone.state_dict()
    checked = 0
    for k, v in source.items():
        if k.startswith(("fc.", "classifier.")) or k == model.backbone.first_conv:
            continue
        torch.testing.assert_close(got[k], v, msg=k)
        checked += 1
    assert checked == len(got) - 1  # every tensor but the first convolution came from the file


@pytest.mark.parametrize("arch", BACKBONES)
def test_every_fine_tune_backbone_has_a_label_a_builder_and_the_shared_interface(arch):
    """The dialog's and Processing's list, the model-file checks and the builders name the same backbones, and
    the job's torch-free table of reductions agrees with the networks."""
    from geoml_plugin.core.finetune.backbones import BACKBONE_LABELS
    from geoml_plugin.core.models.arch_args import ARCH_ARGS
    from geoml_plugin.core.models.resnets import make_backbone

    assert BACKBONE_LABELS[arch] and set(BACKBONE_LABELS) == set(BACKBONES)
    assert arch in ARCH_ARGS and arch in ARCH_ARGS["unet"]["backbone"][0].choices
    net = build_model(arch, in_bands=2, num_outputs=3).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 32, 32)).shape == (1, 3)
    bb = make_backbone(arch, 2)
    assert bb.state_dict()[bb.first_conv].shape[1] == 2
    maps = bb.feature_maps(torch.zeros(1, 2, 64, 64))
    assert [m.shape[1] for m in maps] == list(bb.channels)
    assert [64 // m.shape[-1] for m in maps] == list(bb.reductions)
    from geoml_plugin.core.finetune.job import REDUCTIONS  # torch-free copy: the context of patch models

    assert REDUCTIONS[arch] == bb.reductions[-1]


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_torchvision_files_load_into_every_backbone_and_band_count(files, arch, bands):
    path, src = files[arch, "torchvision"]
    entry = find_entry("imagenet", arch)
    names = ["Red", "Green", "Blue", "nir"][:bands] if bands > 1 else ["Band 1"]
    model = build_model(arch, in_bands=bands, num_outputs=3)
    line = apply_entry(model, entry, path, match_bands(entry, names))
    assert entry.title in line
    _assert_body_equal(model, src)
    first = model.backbone.first_conv  # conv1.weight; features.0.0.weight for MobileNetV2
    w = model.backbone.state_dict()[first]
    assert w.shape[1] == bands
    if bands > 1:  # named bands: R, G, B kernels; nir: the mean kernel
        for b in range(min(bands, 3)):
            torch.testing.assert_close(w[:, b], src[first][:, b])
        if bands == 4:
            torch.testing.assert_close(w[:, 3], src[first].mean(dim=1))
    else:  # one unnamed band: RGB kernels summed (as before)
        torch.testing.assert_close(w[:, 0], src[first].sum(dim=1))


@pytest.mark.parametrize("layout", ["torchgeo", "lightning", "safetensors"])
def test_torchgeo_layouts_map_sentinel2_bands_by_name(files, layout):
    """A Sentinel-2 L2A raster (12 bands, no B10) on 13-band SSL4EO-S12 weights: each band its own kernel."""
    path, src = files["resnet18", layout]
    entry = find_entry("resnet18_sentinel2_all_moco")
    descriptions = [f"{b} ({i})" for i, b in enumerate(S2_L2A)]  # e.g. "B8A (8)"
    match = match_bands(entry, descriptions)
    assert match.how == "from the band descriptions" and match.names == S2_L2A
    model = build_model("resnet18", in_bands=12, num_outputs=2)
    apply_entry(model, entry, path, match)
    _assert_body_equal(model, src)
    w, w0 = model.backbone.conv1.weight.detach(), src["conv1.weight"]
    for b, name in enumerate(S2_L2A):
        torch.testing.assert_close(w[:, b], w0[:, list(entry.bands).index(name)])  # numerically the source kernel


def test_unet_encoders_take_the_weights_too(files):
    path, src = files["resnet18", "torchgeo"]
    entry = find_entry("resnet18_sentinel2_all_moco")
    model = build_model("unet", backbone="resnet18", in_bands=3, num_outputs=2)
    match = match_bands(entry, ["B04", "B03", "B02"])
    apply_entry(model, entry, path, match)
    _assert_body_equal(model, src)
    torch.testing.assert_close(model.backbone.conv1.weight.detach(), src["conv1.weight"][:, [3, 2, 1]])


def test_a_mobilenet_v2_unet_encoder_takes_imagenet_weights_and_maps_any_tile_size(files):
    path, src = files["mobilenet_v2", "torchvision"]
    entry = find_entry("imagenet", "mobilenet_v2")
    model = build_model("unet", backbone="mobilenet_v2", in_bands=4, num_outputs=5)
    apply_entry(model, entry, path, match_bands(entry, ["red", "green", "blue", "nir"]))
    _assert_body_equal(model, src)
    w = model.backbone.state_dict()["features.0.0.weight"]
    torch.testing.assert_close(w[:, :3], src["features.0.0.weight"])
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 4, 100, 90)).shape == (1, 5, 100, 90)


def test_weights_that_do_not_fit_the_backbone_are_refused(files):
    path, _ = files["resnet18", "torchvision"]
    model = build_model("resnet34", in_bands=3, num_outputs=2)
    with pytest.raises(ModelFileError, match="do not fit this backbone; missing: layer1.2"):
        apply_entry(model, find_entry("imagenet", "resnet34"), path, match_bands(find_entry("imagenet", "resnet34"),
                                                                                ["R", "G", "B"]))


# -- bands ----------------------------------------------------------------------------------------------------
def test_band_names_and_the_analysts_mapping():
    s2 = find_entry("resnet50_sentinel2_all_moco")
    assert [band_key(n) for n in ("B01", "b1", "B8a", "B08A", "SR_B04")] == ["B1", "B1", "B8A", "B8A", "SR_B4"]
    m = match_bands(s2, ["Red", "nir", "B8A (865 nm)"])
    assert m.index == [3, None, 8] and m.names == ["B04", "", "B8A"]
    m = match_bands(s2, ["Band 1", "Band 2"], ["B04", "-"])
    assert m.index == [3, None] and m.how == "as given (WEIGHT_BANDS)"
    with pytest.raises(InputError, match="'B13' is not a band of the weights"):
        match_bands(s2, ["Band 1"], ["B13"])
    with pytest.raises(InputError, match="WEIGHT_BANDS names 2 band"):
        match_bands(s2, ["Band 1"], ["B04", "B03"])
    rgb = find_entry("resnet18_sentinel2_rgb_moco")
    assert match_bands(rgb, ["Band 1", "Band 2", "Band 3"]).how.startswith("by position")
    assert match_bands(rgb, ["Band 1", "Band 2"]).index is None  # unknown: kernels spread as before
    oli = find_entry("resnet18_landsat_oli_sr_moco")
    assert match_bands(oli, ["SR_B4", "SR_B3", "SR_B2"]).index == [3, 2, 1]


def test_first_layer_copies_mapped_kernels_and_gives_unknown_bands_the_mean():
    w = torch.randn(8, 4, 3, 3)
    out = first_layer(w, [2, None, 0])
    assert torch.equal(out[:, 0], w[:, 2]) and torch.equal(out[:, 2], w[:, 0])
    torch.testing.assert_close(out[:, 1], w.mean(dim=1))


# -- scaling: training and prediction ---------------------------------------------------------------------------
def test_prediction_reproduces_the_training_scaling(tmp_path, monkeypatch):
    """Sentinel-2 weights expect reflectance ÷ 10000: the patches trained on and the windows predicted on are
    both the raw values ÷ 10000 for the named bands (an unknown band keeps the raster's statistics)."""
    from osgeo import gdal

    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from geoml_plugin.core.finetune.trainset import build_training_data
    from geoml_plugin.core.modelfile import load_model
    from geoml_plugin.core.predict import _Runner
    from geoml_plugin.core.progress import Feedback
    from geoml_plugin.core.raster.io import RasterReader
    from tests.conftest import write_raster
    from tests.core.test_finetune import write_points

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tg = torchgeo_state("resnet18", 13)
    entry = _entry("resnet18_sentinel2_all_moco", name="test_s2", url="https://example.invalid/test_s2-00000000.pth",
                   hash_prefix="00000000")
    monkeypatch.setattr(weights_catalog, "CATALOGUE", CATALOGUE + (entry,))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(tg, cache / entry.filename)  # cached: no download

    rng = np.random.default_rng(0)
    img = rng.integers(200, 3000, (3, 64, 64)).astype(np.uint16)
    img[:, :, 32:] += 2000
    raster = write_raster(tmp_path / "s2.tif", img)
    ds = gdal.Open(raster, gdal.GA_Update)
    for i, name in enumerate(["B04", "B08", "cloud probability"]):
        ds.GetRasterBand(i + 1).SetDescription(name)
    ds = None
    pts = [(r, c, "east" if c >= 32 else "west") for r in (12, 28, 44) for c in (10, 22, 42, 54)]
    labels = write_points(tmp_path / "p.gpkg", pts)
    lines = []
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / "m.safetensors"), backbone="resnet18",
                                      weights="test_s2", patch_size=16, epochs=1, batch_size=4, device="cpu",
                                      validation_fraction=0.0, augment=False), Feedback(on_log=lines.append))
    model, meta = load_model(res.model_path)
    assert meta.norm_mean[:2] == [0.0, 0.0] and meta.norm_std[:2] == [10000.0, 10000.0]
    band3 = img[2].astype(np.float64)
    assert meta.norm_mean[2] == pytest.approx(band3.mean(), rel=1e-3)  # unknown band: the raster's statistics
    assert meta.extra["pretrained"]["band_match"]["bands"] == ["B04", "B08", ""]
    assert any("÷ 10000" in s for s in lines)
    # training patches: raw ÷ 10000
    with RasterReader(raster) as reader:
        from geoml_plugin.core.finetune.pretrained import match_bands as mb
        from geoml_plugin.core.finetune.pretrained import scaling

        match = mb(entry, ["B04", "B08", "cloud probability"])
        data = build_training_data(labels, "label", reader, "classification", 16,
                                   norm=lambda m, s: scaling(entry, match, m, s))
    r, c = int(data.labels.rows[0]), int(data.labels.cols[0])
    raw = img[:, r - 8:r + 8, c - 8:c + 8].astype(np.float32)
    np.testing.assert_allclose(data.x[0, :2], raw[:2] / 10000, rtol=1e-6)
    # prediction windows: the same values
    runner = _Runner(model, meta, torch.device("cpu"), half=False)
    x = runner.normalise(raw.copy(), np.ones(raw.shape[1:], bool))
    np.testing.assert_allclose(x, data.x[0], rtol=1e-5, atol=1e-6)


def test_sha256_prefix_of_a_cached_file_is_verified(tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.pretrained import cached_path, verify_cached

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    data = b"weights"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    good = _entry("resnet18_imagenet", url=f"https://example.invalid/w-{prefix}.pth", hash_prefix=prefix)
    os.makedirs(os.path.dirname(cached_path(good)))
    open(cached_path(good), "wb").write(data)
    assert verify_cached(good)[0]
    bad = _entry("resnet18_imagenet", url=f"https://example.invalid/w-{prefix}.pth", hash_prefix="deadbeef")
    assert not verify_cached(bad)[0]


def test_the_cache_folder_is_torchs_without_importing_torch(tmp_path, monkeypatch):
    """Dialogs open without torch: the cache folder is found by torch.hub.get_dir's rule."""
    import sys

    from geoml_plugin.core.finetune.pretrained import cache_dir

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        for var in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        with_torch = cache_dir()
        assert with_torch == os.path.join(torch.hub.get_dir(), "checkpoints")
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "torch")
            assert cache_dir() == with_torch


def test_a_frozen_pretrained_backbone_stays_as_loaded(tmp_path, monkeypatch):
    """FREEZE_BACKBONE with catalogue weights: only the head trains; the backbone's weights and batch-norm
    statistics are those of the file after training."""
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from tests.conftest import write_raster
    from tests.core.test_finetune import write_points

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    src = torchvision_state("resnet18", seed=5)
    entry = find_entry("imagenet", "resnet18")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(src, cache / entry.filename)
    img = np.random.default_rng(1).normal(100, 20, (3, 64, 64)).astype(np.float32)
    raster = write_raster(tmp_path / "r.tif", img)
    labels = write_points(tmp_path / "p.gpkg", [(r, c, "ab"[(r + c) // 16 % 2]) for r in (12, 28, 44)
                                                for c in (12, 28, 44)])
    res = run_finetune(FinetuneConfig(raster, labels, "label", str(tmp_path / "m.safetensors"), backbone="resnet18",
                                      weights="imagenet", freeze_backbone=True, patch_size=16, epochs=2,
                                      batch_size=4, device="cpu", validation_fraction=0.0))
    assert res.learning_rate == 3e-3
    got = res.model.backbone.state_dict()
    for k in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.bn2.running_mean", "bn1.running_var"):
        torch.testing.assert_close(got[k], src[k])

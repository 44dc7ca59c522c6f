"""geoml:traingan core job: model files, reports, learning, clean refusals."""
import os

import numpy as np
import pytest
import torch
from osgeo import gdal

from geoml_plugin.core.errors import InputError, JobCancelled
from geoml_plugin.core.gan.latent_field import FieldDecoder
from geoml_plugin.core.gan.train import GanTrainConfig, output_paths, report_path_for, run_traingan
from geoml_plugin.core.modelfile import load_model, read_metadata
from geoml_plugin.core.progress import Feedback
from tests.conftest import leftovers, write_raster
from tests.gan_helpers import TINY_UNET, one_torch_thread, smooth_field  # noqa: F401

TINY = dict(generator_widths=[16, 8, 8], critic_widths=[8, 16], latent_channels=8, device="cpu")


def _train(tmp_path, src, name="m", **kw):
    args = dict(TINY, tile_size=32, iterations=12, batch_size=4)
    args.update(kw)
    return run_traingan(GanTrainConfig(src, str(tmp_path / f"{name}.safetensors"), **args))


def test_unconditional_training_saves_generator_with_units_grid_and_report(scene, tmp_path):
    dem = gdal.Open(scene.dem).ReadAsArray()
    res = _train(tmp_path, scene.dem, report_path=str(tmp_path / "report.png"))
    meta = read_metadata(res.model_path)
    assert (meta.task, meta.architecture, meta.output, res.architecture) == ("generation", "tile_generator", "image",
                                                                            "dcgan_sn")
    t = meta.target
    assert t["units"] == "m" and t["bands"] == 1 and t["kind"] == "elevation"
    assert t["mean"][0] == pytest.approx(dem.mean(), rel=0.02) and t["std"][0] == pytest.approx(dem.std(), rel=0.05)
    assert meta.pixel_size == [10.0, 10.0] and "UTM zone 32N" in meta.crs_wkt
    assert meta.extra["pixel_size_m"] == pytest.approx(10.0, rel=0.002)
    assert meta.provenance["seed"] == 0 and meta.provenance["iterations"] == 12
    assert {"value_w1", "gradient_w1", "value_w1_real_vs_real"} <= set(meta.metrics)
    assert set(res.losses) == {"D", "G"} and len(res.losses["D"]) == 12
    assert all(np.isfinite(v) for v in res.losses["G"])
    g, _ = load_model(res.model_path)
    assert g(torch.zeros(1, 8, 3, 3)).shape == (1, 1, 12, 12)
    png = gdal.Open(str(tmp_path / "report.png"))
    assert png.RasterXSize > 200 and png.RasterCount >= 3
    csv_lines = (tmp_path / "report_losses.csv").read_text().splitlines()
    assert csv_lines[0] == "iteration,D,G" and len(csv_lines) == 13
    # exactly the files the Train GAN dialog asks about replacing
    cfg = GanTrainConfig(scene.dem, res.model_path, report_path=str(tmp_path / "report.png"))
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in output_paths(cfg))


def test_output_paths_name_the_model_report_and_loss_table():
    cfg = GanTrainConfig("dem.tif", "/d/g.safetensors")
    assert output_paths(cfg) == ["/d/g.safetensors"]
    cfg.report_path = report_path_for(cfg.output_model)
    assert output_paths(cfg) == ["/d/g.safetensors", "/d/g_report.png", "/d/g_report_losses.csv"]


def test_report_without_matplotlib_is_still_a_png(tmp_path):
    from geoml_plugin.core.gan.report import tile_to_rgb, write_report

    rng = np.random.default_rng(0)
    rows = [[tile_to_rgb(rng.normal(size=(1, 16, 16))) for _ in range(3)], [tile_to_rgb(rng.normal(size=(3, 16, 16)))]]
    write_report(str(tmp_path / "r.png"), rows, ["a", "b"], {"L1": list(np.linspace(1, 0.1, 50))}, use_matplotlib=False)
    ds = gdal.Open(str(tmp_path / "r.png"))
    assert ds.GetDriver().ShortName == "PNG" and ds.RasterCount == 3
    img = ds.ReadAsArray()
    assert img.std() > 10  # tiles and a curve, not a blank image
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bands", [2, 4])
def test_tile_generator_trains_on_two_and_four_band_rasters(tmp_path, bands):
    """The report shows 1 or 3 bands of N: training on 2- or 4-band imagery must not fail at the very end."""
    rng = np.random.default_rng(3)
    arr = np.stack([smooth_field(rng, 48, 48, 4.0) * 40 + 120 for _ in range(bands)]).clip(0, 255).astype(np.uint8)
    src = write_raster(tmp_path / f"img{bands}.tif", arr)
    if bands == 4:  # GDAL writes 4 Byte bands as RGBA; make band 4 image data, not an alpha band left out by default
        ds = gdal.Open(src, gdal.GA_Update)
        ds.GetRasterBand(4).SetColorInterpretation(gdal.GCI_Undefined)
        ds = None
    res = _train(tmp_path, src, iterations=2, batch_size=2, report_path=str(tmp_path / "r.png"))
    assert read_metadata(res.model_path).target["bands"] == bands
    assert gdal.Open(str(tmp_path / "r.png")).RasterCount >= 3


def test_seeded_training_is_deterministic(scene, tmp_path):
    a = _train(tmp_path, scene.dem, "a", iterations=4, seed=3)
    b = _train(tmp_path, scene.dem, "b", iterations=4, seed=3)
    c = _train(tmp_path, scene.dem, "c", iterations=4, seed=4)
    ta, tb, tc = (FieldDecoder(load_model(r.model_path)[0]).decode(5, 0, 0, 16, 16) for r in (a, b, c))
    np.testing.assert_array_equal(ta, tb)
    assert not np.allclose(ta, tc)
    assert a.losses == b.losses


def _synthetic_pair(tmp_path, size=96, nodata_rows=0):
    """INPUT 2 bands; TARGET a local non-linear function of them (learnable, not linear)."""
    rng = np.random.default_rng(0)
    a, b = smooth_field(rng, size, size, 3), smooth_field(rng, size, size, 2)
    x = np.stack([100 + 20 * a, 50 + 10 * b]).astype(np.float32)
    y = (5 + 3 * np.tanh(2 * a) * b + np.abs(a)).astype(np.float32)
    if nodata_rows:
        y[:nodata_rows] = -9999.0
    return (write_raster(tmp_path / "x.tif", x), write_raster(tmp_path / "y.tif", y, nodata=-9999.0))


@pytest.mark.parametrize("arch", ["pix2pix", "unet_l1"])
def test_conditional_training_drives_l1_well_below_untrained(tmp_path, arch):
    x, y = _synthetic_pair(tmp_path, nodata_rows=10)
    res = _train(tmp_path, x, target_path=y, architecture=arch, generator_widths=TINY_UNET, iterations=120,
                 batch_size=8, learning_rate=3e-3, report_path=str(tmp_path / "r.png"))
    m = res.metrics
    assert m["l1_final"] < 0.35 * m["l1_untrained"], m
    meta = read_metadata(res.model_path)
    assert (meta.task, meta.architecture, meta.in_bands) == ("translation", "unet_translator", 2)
    assert meta.norm_mean[0] == pytest.approx(100, abs=3) and meta.target["bands"] == 1
    assert ("D" in res.losses) == (arch == "pix2pix")


def test_target_on_another_grid_is_resampled_and_non_overlapping_target_refused(tmp_path):
    x, y = _synthetic_pair(tmp_path)
    arr = gdal.Open(y).ReadAsArray()
    coarse = write_raster(tmp_path / "coarse.tif", arr[::2, ::2], gt=(500000.0, 20.0, 0.0, 5100000.0, 0.0, -20.0))
    res = _train(tmp_path, x, target_path=coarse, generator_widths=TINY_UNET, iterations=3)
    assert read_metadata(res.model_path).task == "translation"
    far = write_raster(tmp_path / "far.tif", arr, gt=(600000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0))
    with pytest.raises(InputError, match="does not overlap the INPUT"):
        _train(tmp_path, x, "far", target_path=far, generator_widths=TINY_UNET)
    assert not (tmp_path / "far.safetensors").exists()


def test_bad_input_messages(tmp_path, scene):
    empty = write_raster(tmp_path / "empty.tif", np.full((64, 64), -9999.0, np.float32), nodata=-9999.0)
    with pytest.raises(InputError, match="no valid pixels"):
        _train(tmp_path, empty)
    small = write_raster(tmp_path / "small.tif", np.ones((40, 50), np.float32))
    with pytest.raises(InputError, match="larger than the raster"):
        _train(tmp_path, small, tile_size=64)
    holes = np.ones((64, 64), np.float32)
    holes[::20, :] = -9999.0
    with pytest.raises(InputError, match="No 32×32 px tile"):
        _train(tmp_path, write_raster(tmp_path / "holes.tif", holes, nodata=-9999.0))
    with pytest.raises(InputError, match="give a TARGET"):
        _train(tmp_path, scene.dem, architecture="pix2pix")
    with pytest.raises(InputError, match="multiple of 16"):
        _train(tmp_path, scene.dem, tile_size=50)
    assert not any(f.endswith(".safetensors") for f in os.listdir(tmp_path))


def test_cancel_writes_nothing(tmp_path, scene):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(JobCancelled):
        run_traingan(GanTrainConfig(scene.dem, str(tmp_path / "m.safetensors"), report_path=str(tmp_path / "r.png"),
                                    tile_size=32, iterations=50, batch_size=2, **TINY), Feedback(is_cancelled=cancelled))
    assert os.listdir(tmp_path) == []


def test_large_raster_sampler_finds_tiles_in_a_small_valid_area(tmp_path):
    """Rasters too big for memory are read window by window: a small valid island in a sea of nodata
    (a DEM clipped to a coastline) must not make a training batch fail at random."""
    from geoml_plugin.core.gan.data import TileSampler
    from geoml_plugin.core.raster.io import RasterReader

    arr = np.full((400, 400), -9999.0, np.float32)
    arr[200:260, 120:180] = np.random.default_rng(0).uniform(1, 2, (60, 60))  # 0.6 % of tile positions valid
    src = write_raster(tmp_path / "island.tif", arr, nodata=-9999.0)
    with RasterReader(src) as reader:
        sampler = TileSampler(reader, 32, None, [1.5], [0.3], augment=False, in_memory=False)
        rng = np.random.default_rng(1)
        for _ in range(4):
            batch = sampler.sample(32, rng)
            assert np.all(np.abs(batch.x * 0.3 + 1.5 - 1.5) <= 0.5 + 1e-5)  # every crop from the island


def test_a_model_that_cannot_be_saved_leaves_no_report(tmp_path, scene, monkeypatch):
    from geoml_plugin.core.gan import train as gan_train

    (tmp_path / "m.safetensors").write_bytes(b"earlier")  # the model of an earlier run, not replaced

    def save_model(path, model, meta):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gan_train, "save_model", save_model)
    with pytest.raises(OSError, match="No space"):
        _train(tmp_path, scene.dem, iterations=4, batch_size=2, report_path=str(tmp_path / "r.png"))
    assert os.listdir(tmp_path) == ["m.safetensors"]  # before: r.png and r_losses.csv stayed
    assert (tmp_path / "m.safetensors").read_bytes() == b"earlier"
    # an earlier run's report is put back, not deleted
    (tmp_path / "r.png").write_bytes(b"earlier png")
    (tmp_path / "r_losses.csv").write_text("earlier csv")
    with pytest.raises(OSError, match="No space"):
        _train(tmp_path, scene.dem, iterations=4, batch_size=2, report_path=str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes() == b"earlier png"
    assert (tmp_path / "r_losses.csv").read_text() == "earlier csv"


def test_a_report_not_named_png_is_refused_before_training(tmp_path, scene):
    with pytest.raises(InputError, match="report is a PNG image, but 'report.html'"):
        _train(tmp_path, scene.dem, report_path=str(tmp_path / "report.html"))  # before: PNG bytes in an .html
    assert os.listdir(tmp_path) == []


def test_outputs_over_the_input_are_refused_and_the_input_kept(tmp_path, scene):
    import shutil

    dem = shutil.copy(scene.dem, tmp_path / "dem.tif")
    before = open(dem, "rb").read()
    with pytest.raises(InputError, match="is the input raster"):
        run_traingan(GanTrainConfig(str(dem), str(dem), **dict(TINY, tile_size=32, iterations=2, batch_size=2)))
    with pytest.raises(InputError, match="is the input raster"):
        _train(tmp_path, str(dem), report_path=str(dem))
    # the loss table beside the report is an output too (a raster named like it would be replaced)
    table = shutil.copy(scene.dem, tmp_path / "r_losses.csv")
    with pytest.raises(InputError, match="is the input raster"):
        _train(tmp_path, str(table), report_path=str(tmp_path / "r.png"))
    assert open(dem, "rb").read() == before
    assert open(table, "rb").read() == before


@pytest.mark.parametrize("arch", ["dcgan_sn", "pix2pix"])
def test_gan_training_killed_part_way_resumes_to_the_generator_of_an_uninterrupted_run(scene, tmp_path, monkeypatch,
                                                                                        arch):
    """``checkpoint_dir`` + ``resume``: a checkpoint every 4 iterations (both networks, the running average, both
    optimisers, the tile sampler's and torch's random states); a run killed in iteration 7 goes on after
    iteration 4 and saves the generator of an uninterrupted run; another run's checkpoint is refused."""
    import json

    from geoml_plugin.core.gan import trainers
    from geoml_plugin.core.modelfile import load_state

    for d in ("ck_full", "ck"):
        (tmp_path / d).mkdir()
    extra = dict(checkpoint_every=4, iterations=10)
    src = scene.dem
    if arch == "pix2pix":
        extra.update(target_path=scene.dem, architecture="pix2pix", generator_widths=TINY_UNET)
        src = scene.image
    full = _train(tmp_path, src, "full", checkpoint_dir=str(tmp_path / "ck_full"), **extra)
    update = trainers._EmaMixin._update_ema
    calls = {"n": 0}

    def killed_in_iteration_7(self):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("killed")
        return update(self)

    monkeypatch.setattr(trainers._EmaMixin, "_update_ema", killed_in_iteration_7)
    with pytest.raises(RuntimeError, match="killed"):
        _train(tmp_path, src, "resumed", checkpoint_dir=str(tmp_path / "ck"), resume=True, **extra)
    monkeypatch.setattr(trainers._EmaMixin, "_update_ema", update)
    assert not (tmp_path / "resumed.safetensors").exists()
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["iteration"] == 4
    logs = []
    res = run_traingan(GanTrainConfig(src, str(tmp_path / "resumed.safetensors"),
                                      **dict(TINY, tile_size=32, batch_size=4, checkpoint_dir=str(tmp_path / "ck"),
                                             resume=True, **extra)), Feedback(on_log=logs.append))
    assert any("Resumed from the checkpoint after iteration 4" in m for m in logs)
    assert res.losses == full.losses
    a, b = load_state(full.model_path), load_state(res.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match=r"different run \(batch_size differ\)"):
        _train(tmp_path, src, "other", checkpoint_dir=str(tmp_path / "ck"), resume=True, batch_size=2, **extra)

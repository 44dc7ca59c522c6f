"""geoml:generate core job: georeference, units, seeds, seams, CRS handling, translation, refusals."""
import os

import numpy as np
import pytest
import torch
from osgeo import gdal

from geoml_plugin.core.errors import InputError, ModelFileError
from geoml_plugin.core.gan.generate import GenerateConfig, TileSource, run_generate
from geoml_plugin.core.gan.latent_field import FieldDecoder
from geoml_plugin.core.gan.tile_session import TileSession
from geoml_plugin.core.modelfile import load_model
from geoml_plugin.core.raster.georef import ground_metres_per_unit, transform_point
from geoml_plugin.core.raster.io import raster_info
from tests.conftest import leftovers, write_raster
from tests.gan_helpers import one_torch_thread, tiny_generator_model, tiny_translator_model, wkt  # noqa: F401

UTM32 = wkt(32632)
WGS84 = wkt(4326)


@pytest.fixture()
def gen_model(tmp_path):
    return tiny_generator_model(tmp_path / "gen.safetensors")


def _read(path):
    ds = gdal.Open(str(path))
    return ds.ReadAsArray(), ds


def test_tile_is_centred_on_a_point_given_in_another_crs_in_metres(gen_model, tmp_path):
    out = tmp_path / "tile.tif"
    res = run_generate(GenerateConfig(gen_model, str(out), center=(9.05, 46.02), center_crs_wkt=WGS84, seed=7,
                                      tiles=(2, 1), tile_size=32, device="cpu"))
    arr, ds = _read(out)
    info = raster_info(str(out))
    assert (info.width, info.height) == (64, 32) and (res.width, res.height) == (64, 32)
    assert info.pixel_size == (10.0, 10.0)
    assert "UTM zone 32N" in info.crs_wkt
    cx, cy = transform_point(9.05, 46.02, WGS84, UTM32)
    x0, y0, x1, y1 = info.extent
    assert abs((x0 + x1) / 2 - cx) <= 5.0 and abs((y0 + y1) / 2 - cy) <= 5.0  # within half a pixel
    # units: the generator's z-scores times the training std plus mean (metres)
    g, _ = load_model(gen_model)
    col0, row0 = round(x0 / 10), round(-y1 / 10)
    expected = FieldDecoder(g).decode(7, col0, row0, 64, 32)[0] * 100.0 + 500.0
    np.testing.assert_allclose(arr, expected, rtol=1e-5, atol=1e-3)
    md = ds.GetMetadata()
    assert md["GEOML_SEED"] == "7" and md["GEOML_MODEL"] == "gen.safetensors" and md["GEOML_UNITS"] == "m"
    assert ds.GetRasterBand(1).GetNoDataValue() == -9999.0
    assert (tmp_path / "tile.qml").exists() and "singlebandpseudocolor" in (tmp_path / "tile.qml").read_text()
    assert leftovers(tmp_path) == []


def test_same_seed_same_tile_other_seed_other_tile(gen_model, tmp_path):
    cfg = dict(center=(500000.0, 5100000.0), tile_size=32, device="cpu")
    a = _read(run_generate(GenerateConfig(gen_model, str(tmp_path / "a.tif"), seed=1, **cfg)).output_path)[0]
    b = _read(run_generate(GenerateConfig(gen_model, str(tmp_path / "b.tif"), seed=1, **cfg)).output_path)[0]
    c = _read(run_generate(GenerateConfig(gen_model, str(tmp_path / "c.tif"), seed=2, **cfg)).output_path)[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05 * a.std()


def test_neighbouring_outputs_join_without_seams(gen_model, tmp_path):
    """A tile generated next to another continues it: its edge rows match a single larger output."""
    cfg = dict(tile_size=32, seed=4, device="cpu")
    left = _read(run_generate(GenerateConfig(gen_model, str(tmp_path / "l.tif"), center=(500160.0, 5100160.0), **cfg)).output_path)[0]
    right = _read(run_generate(GenerateConfig(gen_model, str(tmp_path / "r.tif"), center=(500480.0, 5100160.0), **cfg)).output_path)[0]
    both = _read(run_generate(GenerateConfig(gen_model, str(tmp_path / "b.tif"), center=(500320.0, 5100160.0),
                                             tiles=(2, 1), **cfg)).output_path)[0]
    np.testing.assert_allclose(np.concatenate([left, right], axis=1), both, atol=1e-3)
    step_at_seam = np.abs(left[:, -1] - right[:, 0]).mean()
    typical_step = np.abs(np.diff(both, axis=1)).mean()
    assert step_at_seam < 3 * typical_step


def test_extent_and_coarser_pixel_size_keep_the_relief_in_units(gen_model, tmp_path):
    ext = (500000.0, 5100000.0, 500640.0, 5100320.0)
    fine = run_generate(GenerateConfig(gen_model, str(tmp_path / "f.tif"), extent=ext, seed=3, device="cpu"))
    coarse = run_generate(GenerateConfig(gen_model, str(tmp_path / "c.tif"), extent=ext, seed=3, pixel_size=20.0,
                                         device="cpu"))
    assert (fine.width, fine.height) == (64, 32) and (coarse.width, coarse.height) == (32, 16)
    assert raster_info(coarse.output_path).extent == pytest.approx(ext)
    f, c = _read(fine.output_path)[0], _read(coarse.output_path)[0]
    # resampled from the model's scale: the 20 m raster is the 2×2 average of the 10 m one
    np.testing.assert_allclose(c, f.reshape(16, 2, 32, 2).mean(axis=(1, 3)), atol=0.05 * f.std())


def test_other_output_crs_uses_the_models_ground_pixel_size(gen_model, tmp_path):
    res = run_generate(GenerateConfig(gen_model, str(tmp_path / "m.tif"), center=(9.0, 46.0), center_crs_wkt=WGS84,
                                      crs_wkt=wkt(3857), tile_size=32, device="cpu"))
    info = raster_info(res.output_path)
    assert "Pseudo-Mercator" in info.crs_wkt
    cx, cy = transform_point(9.0, 46.0, WGS84, wkt(3857))
    ground = info.pixel_size[0] * ground_metres_per_unit(info.crs_wkt, cx, cy)
    assert ground == pytest.approx(10.0 * 1.0004, rel=1e-3)
    assert info.pixel_size[0] == pytest.approx(10.0 / np.cos(np.radians(46.0)), rel=0.01)


def test_refusals_with_clear_messages(gen_model, sample_model, scene, tmp_path):
    out = str(tmp_path / "x.tif")
    with pytest.raises(ModelFileError, match="not a GAN model: it cannot generate tiles"):
        run_generate(GenerateConfig(sample_model, out, center=(500000.0, 5100000.0)))
    with pytest.raises(InputError, match="outside the area where WGS 84 / UTM zone 32N"):
        run_generate(GenerateConfig(gen_model, out, center=(-100.0, 40.0), center_crs_wkt=WGS84))
    with pytest.raises(InputError, match="outside the Earth"):
        run_generate(GenerateConfig(gen_model, out, center=(500000.0, 1e9)))
    with pytest.raises(InputError, match="not a longitude/latitude"):
        run_generate(GenerateConfig(gen_model, out, center=(500000.0, 5100000.0), center_crs_wkt=WGS84))
    with pytest.raises(InputError, match="CENTER point or an EXTENT"):
        run_generate(GenerateConfig(gen_model, out))
    with pytest.raises(InputError, match="does not translate an INPUT"):
        run_generate(GenerateConfig(gen_model, out, input_path=scene.dem))
    assert list(tmp_path.glob("x*")) == [] and leftovers(tmp_path) == []


def test_model_in_a_local_crs_generates_in_its_own_coordinates(tmp_path):
    local = 'LOCAL_CS["unnamed",UNIT["unknown",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    model = tiny_generator_model(tmp_path / "local.safetensors", pixel=90.0, crs_wkt=local)
    res = run_generate(GenerateConfig(model, str(tmp_path / "l.tif"), center=(670000.0, 4890000.0), tile_size=32,
                                      style="hillshade", device="cpu"))
    info = raster_info(res.output_path)
    assert info.pixel_size == (90.0, 90.0)
    assert abs((info.extent[0] + info.extent[2]) / 2 - 670000.0) <= 45
    with pytest.raises(InputError, match="no position on Earth"):
        run_generate(GenerateConfig(model, str(tmp_path / "m.tif"), center=(9.0, 46.0), center_crs_wkt=WGS84))


def test_translation_covers_the_input_and_is_seamless(tmp_path):
    model_path, net = tiny_translator_model(tmp_path / "tr.safetensors")
    rng = np.random.default_rng(0)
    x = (100 + 20 * rng.standard_normal((2, 300, 260))).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", x)
    res = run_generate(GenerateConfig(model_path, str(tmp_path / "out.tif"), input_path=src, device="cpu"))
    out, _ = _read(res.output_path)
    assert out.shape == (300, 260) and res.task == "translation"
    assert raster_info(res.output_path).geotransform == raster_info(src).geotransform
    with torch.no_grad():
        full = net(torch.from_numpy((x - 100.0) / 20.0)[None])[0, 0].numpy() * 2.0 + 10.0
    inner = (slice(24, -24), slice(24, -24))  # tiles overlap by 64 px: the whole interior matches one pass
    np.testing.assert_allclose(out[inner], full[inner], atol=1e-3)
    with pytest.raises(InputError, match="give the INPUT raster"):
        run_generate(GenerateConfig(model_path, str(tmp_path / "o2.tif"), center=(500000.0, 5100000.0)))


def test_an_all_nodata_input_to_translate_is_refused_in_translation_words(tmp_path):
    model_path, _ = tiny_translator_model(tmp_path / "tr.safetensors")
    src = write_raster(tmp_path / "empty.tif", np.full((2, 40, 40), -9999.0, np.float32), nodata=-9999.0)
    with pytest.raises(InputError, match=r"no valid pixels \(everything is nodata\) in the area to translate"):
        run_generate(GenerateConfig(model_path, str(tmp_path / "out.tif"), input_path=src, device="cpu"))
    assert not (tmp_path / "out.tif").exists() and leftovers(tmp_path) == []


def test_translation_of_a_raster_smaller_than_the_patch_mirrors_it_and_keeps_georeference_and_nodata(tmp_path):
    """A U-Net is fully convolutional: a raster under the 32 px patch is translated (before: refused)."""
    from geoml_plugin.core.gan.generate import TRANSLATE_OVERLAP as O
    from geoml_plugin.core.gan.generate import TRANSLATE_TILE as T

    model_path, net = tiny_translator_model(tmp_path / "tr.safetensors")
    x = (100 + 20 * np.random.default_rng(2).standard_normal((2, 20, 27))).astype(np.float32)
    x[:, 3, 5] = -9999.0
    src = write_raster(tmp_path / "small.tif", x, gt=(500010.0, 10.0, 0.0, 5100020.0, 0.0, -10.0), nodata=-9999.0)
    res = run_generate(GenerateConfig(model_path, str(tmp_path / "out.tif"), input_path=src, device="cpu"))
    out, ds = _read(res.output_path)
    assert out.shape == (20, 27) and (res.width, res.height) == (27, 20)
    info = raster_info(res.output_path)
    assert info.geotransform == raster_info(src).geotransform and info.crs_wkt == raster_info(src).crs_wkt
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    assert out[3, 5] == nodata and (out != nodata).sum() == 20 * 27 - 1  # nodata stays nodata, the rest is mapped
    z = (x - 100.0) / 20.0
    z[:, 3, 5] = 0.0  # nodata → the training mean
    one_tile = np.pad(z, ((0, 0), (O, T - O - 20), (O, T - O - 27)), mode="reflect")  # the tile the job reads
    with torch.no_grad():
        want = net(torch.from_numpy(one_tile)[None])[0, 0].numpy()[O:O + 20, O:O + 27] * 2.0 + 10.0
    ok = out != nodata
    np.testing.assert_allclose(out[ok], want[ok], atol=1e-3)


def test_translation_with_scene_normalisation_uses_the_inputs_statistics(tmp_path):
    model_path, _ = tiny_translator_model(tmp_path / "tr.safetensors")
    rng = np.random.default_rng(1)
    x = (100 + 20 * rng.standard_normal((2, 64, 64))).astype(np.float32)
    a = write_raster(tmp_path / "a.tif", x)
    b = write_raster(tmp_path / "b.tif", x * 1.5 + 30)  # the same scene seen by a brighter sensor
    cfg = dict(device="cpu", scene_normalisation=True)
    ya = _read(run_generate(GenerateConfig(model_path, str(tmp_path / "ya.tif"), input_path=a, **cfg)).output_path)[0]
    yb = _read(run_generate(GenerateConfig(model_path, str(tmp_path / "yb.tif"), input_path=b, **cfg)).output_path)[0]
    np.testing.assert_allclose(ya, yb, atol=1e-2)
    yb_plain = _read(run_generate(GenerateConfig(model_path, str(tmp_path / "yp.tif"), input_path=b,
                                                 device="cpu")).output_path)[0]
    assert np.abs(yb_plain - ya).mean() > 0.1


def test_tile_session_click_then_grow_joins_seamlessly(gen_model, tmp_path):
    src = TileSource(gen_model, "cpu")
    session = TileSession(src, UTM32, 500123.0, 5100456.0, seed=5, tile=32, folder=str(tmp_path / "tiles"))
    first = session.start()
    x0, y0, x1, y1 = session.extent
    assert abs((x0 + x1) / 2 - 500123.0) <= 5 and abs((y0 + y1) / 2 - 5100456.0) <= 5
    tile0 = gdal.Open(session.tiles[(0, 0)]).ReadAsArray()
    assert session.contains(500123.0, 5100456.0) and not session.contains(501000.0, 5100456.0)
    assert session.ring() and len(session.ring()) == 8
    mosaic = session.grow()
    assert len(session.tiles) == 9 and mosaic != first
    assert os.path.exists(first)  # a layer may still show it until it is switched
    session.discard_old_mosaics()
    assert not os.path.exists(first) and os.path.exists(mosaic)
    m = gdal.Open(mosaic).ReadAsArray()
    assert m.shape == (96, 96)
    np.testing.assert_array_equal(m[32:64, 32:64], tile0)  # what was there stays
    g, _ = load_model(gen_model)
    b = session.plan(-1, -1)
    one_pass = FieldDecoder(g).decode(5, b.col0, b.row0, 96, 96)[0] * 100 + 500
    np.testing.assert_allclose(m, one_pass, atol=1e-3)  # nine tiles = one seamless field
    assert len(session.ring()) == 16  # the next ring
    qml = session.write_style("hillshade")
    assert 'type="hillshade"' in open(qml).read()


def test_a_point_where_the_crs_has_no_scale_is_refused(gen_model, tmp_path):
    """At a pole a degree of longitude spans no ground: a message, not a division by zero."""
    with pytest.raises(InputError, match="pixel size"):
        run_generate(GenerateConfig(gen_model, str(tmp_path / "p.tif"), center=(9.0, 90.0), center_crs_wkt=WGS84,
                                    crs_wkt=WGS84, tile_size=32, device="cpu"))
    assert list(tmp_path.glob("p*")) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("crs, x, y, match", [
    (WGS84, 500.0, 300.0, "not a longitude/latitude"),  # a click far off the map in a lon/lat project
    (WGS84, 9.0, 90.0, "pixel size"),  # a click on the pole
    (wkt(3857), 1e9, 1e9, "outside the Earth"),
    (wkt(32633), -2e6, 5e6, "outside the area where"),  # UTM 33N, a click over the Atlantic
])
def test_tile_session_refuses_a_click_where_the_map_crs_is_not_valid(gen_model, tmp_path, crs, x, y, match):
    src = TileSource(gen_model, "cpu")
    with pytest.raises(InputError, match=match):
        TileSession(src, crs, x, y, seed=1, tile=32, folder=str(tmp_path / "tiles")).start()
    assert not (tmp_path / "tiles").exists() or os.listdir(tmp_path / "tiles") == []


def test_tile_session_in_a_folder_that_cannot_be_made_gives_a_message(gen_model, tmp_path):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    with pytest.raises(InputError, match="tiles folder"):
        TileSession(TileSource(gen_model, "cpu"), UTM32, 500123.0, 5100456.0, seed=1, tile=32,
                    folder=str(a_file / "tiles"))


def test_two_sessions_in_one_folder_do_not_overwrite_each_others_tiles(gen_model, tmp_path):
    """Clicking the same place with another model (same seed, same pixel size) must not change the first tiles."""
    other = tiny_generator_model(tmp_path / "other.safetensors", seed=9, mean=800.0)
    folder = str(tmp_path / "tiles")
    a = TileSession(TileSource(gen_model, "cpu"), UTM32, 500123.0, 5100456.0, seed=3, tile=32, folder=folder)
    a.start()
    before = gdal.Open(a.tiles[(0, 0)]).ReadAsArray()
    b = TileSession(TileSource(other, "cpu"), UTM32, 500123.0, 5100456.0, seed=3, tile=32, folder=folder)
    b.start()
    assert b.tiles[(0, 0)] != a.tiles[(0, 0)]
    np.testing.assert_array_equal(gdal.Open(a.tiles[(0, 0)]).ReadAsArray(), before)
    np.testing.assert_array_equal(gdal.Open(a.mosaic_path).ReadAsArray(), before)


def test_a_grow_cancelled_part_way_removes_the_tiles_of_the_unfinished_ring(gen_model, tmp_path):
    from geoml_plugin.core.errors import JobCancelled
    from geoml_plugin.core.progress import Feedback

    folder = tmp_path / "tiles"
    session = TileSession(TileSource(gen_model, "cpu"), UTM32, 500123.0, 5100456.0, seed=5, tile=32,
                          folder=str(folder))
    mosaic = session.start()
    before = sorted(os.listdir(folder))
    calls = []
    fb = Feedback(on_progress=lambda f, m: calls.append(f), is_cancelled=lambda: len(calls) >= 3)
    with pytest.raises(JobCancelled):
        session.grow(fb)
    assert sorted(os.listdir(folder)) == before  # no tile that no mosaic shows is left behind
    assert list(session.tiles) == [(0, 0)] and session.mosaic_path == mosaic and len(session.ring()) == 8
    session.grow()  # and it can grow again
    assert len(session.tiles) == 9


def test_an_output_over_the_model_file_is_refused_and_the_model_kept(gen_model):
    before = open(gen_model, "rb").read()
    with pytest.raises(InputError, match="is the model file"):
        run_generate(GenerateConfig(gen_model, gen_model, center=(9.05, 46.02), center_crs_wkt=WGS84, seed=7,
                                    tile_size=32, device="cpu"))
    assert open(gen_model, "rb").read() == before

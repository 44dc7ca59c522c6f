"""Fault injection for meta-training, GAN generation and translation, and the interactive tile session: a full
disk at each write or rename, or a cancel at each progress report, gives a clear error naming the file, leaves no
partial file, keeps the earlier outputs as they were, and (tile session) leaves the session usable."""
import os
import shutil
import types
from functools import partial

import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.core.errors import GeoMLError, JobCancelled, OutputError
from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain
from geoml_plugin.core.gan.generate import GenerateConfig, TileSource, run_generate
from geoml_plugin.core.gan.tile_session import TileSession
from geoml_plugin.core.progress import Feedback
from geoml_plugin.core.raster.io import RasterWriter
from tests.conftest import leftovers, write_raster
from tests.core.test_write_faults import disk_full, earlier_files, nth_call_fails, snapshot
from tests.gan_helpers import one_torch_thread, tiny_generator_model, tiny_translator_model, wkt  # noqa: F401

TINY_META = dict(label_field="class_name", ways=3, shots=2, query=3, patch_size=16, meta_batch=2, val_episodes=8,
                 device="cpu", iterations=2)
RASTER_STEPS = ["WriteArray", "finalise", "qml", "replace1", "replace2"]
UTM32 = wkt(32632)


def no_space_left(monkeypatch):
    """The output folder's disk has no free space (GDAL's errors do not say so)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda p: types.SimpleNamespace(total=2**30, used=2**30, free=0))


def inject(monkeypatch, where):
    """A full disk at one step of writing a raster (as in test_write_faults)."""
    if where == "WriteArray":
        monkeypatch.setattr(gdal.Band, "WriteArray", disk_full)
    elif where == "finalise":
        monkeypatch.setattr(RasterWriter, "_describe", disk_full)
    elif where == "qml":
        monkeypatch.setattr(os, "chmod", disk_full)
    else:
        monkeypatch.setattr(os, "replace", nth_call_fails(os.replace, int(where[-1])))


def cancelled_at_each_report(job, folder, before, most=40) -> int:
    """Run ``job(feedback)`` cancelled at its 1st, 2nd … cancel check until it completes; after each cancel the
    folder must be as before. Returns how many runs were cancelled."""
    for k in range(1, most):
        checks = []

        def cancelled(checks=checks, k=k):
            checks.append(1)
            return len(checks) >= k

        try:
            job(Feedback(is_cancelled=cancelled))
        except JobCancelled as exc:
            assert isinstance(exc, GeoMLError) and "no output was written" in str(exc)
            assert leftovers(folder) == [], k
            assert snapshot(folder) == before, k
        else:
            assert snapshot(folder) != before  # the complete run did write
            return k - 1
    raise AssertionError(f"still cancelled after {most} checks")


# meta-training -------------------------------------------------------------------------------------------------

def _metatrain(scene, out_dir, feedback=None):
    return run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=str(out_dir / "m.safetensors"),
                                         **TINY_META), feedback)


@pytest.mark.parametrize("where", ["save_file", "chmod", "replace"])
def test_metatrain_on_a_full_disk_keeps_the_earlier_model(scene, out_dir, monkeypatch, where):
    import safetensors.torch

    before = earlier_files(out_dir, ["m.safetensors"])
    if where == "save_file":
        monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    else:
        monkeypatch.setattr(os, where, disk_full)
    with pytest.raises(OutputError, match=r"Cannot write '.*m\.safetensors': the disk is full"):
        _metatrain(scene, out_dir)
    assert leftovers(out_dir) == []
    assert snapshot(out_dir) == before


def test_metatrain_cancelled_at_every_progress_report_keeps_the_earlier_model(scene, out_dir):
    before = earlier_files(out_dir, ["m.safetensors"])
    n = cancelled_at_each_report(lambda fb: _metatrain(scene, out_dir, fb), out_dir, before)
    assert n >= 5  # reading patches, 2 iterations, prototypes, saving


# GAN generate ------------------------------------------------------------------------------------------------

@pytest.fixture()
def gen_model(tmp_path):
    return tiny_generator_model(tmp_path / "gen.safetensors")


def _generate(gen_model, out_dir, feedback=None, **kw):
    cfg = dict(center=(500000.0, 5100000.0), tile_size=32, seed=3, device="cpu", **kw)
    return run_generate(GenerateConfig(gen_model, str(out_dir / "o.tif"), **cfg), feedback)


@pytest.mark.parametrize("pixel_size", [None, 20.0])  # at the model's scale; generated finer and resampled
def test_generate_cancelled_at_every_progress_report_keeps_the_earlier_outputs(gen_model, out_dir, pixel_size):
    before = earlier_files(out_dir, ["o.tif", "o.qml", "o.tif.aux.xml"])
    n = cancelled_at_each_report(lambda fb: _generate(gen_model, out_dir, fb, tiles=(20, 1), pixel_size=pixel_size),
                                 out_dir, before)
    assert n >= (2 if pixel_size is None else 3)  # 512 px blocks: 640 px wide at 10 m; 1282 at the model's 10 m


# raster-to-raster translation --------------------------------------------------------------------------------

@pytest.fixture()
def translation(tmp_path):
    model, _ = tiny_translator_model(tmp_path / "tr.safetensors")
    x = (100 + 20 * np.random.default_rng(0).standard_normal((2, 40, 40))).astype(np.float32)
    return model, write_raster(tmp_path / "in.tif", x)


def _translate(translation, out_dir, feedback=None):
    model, src = translation
    return run_generate(GenerateConfig(model, str(out_dir / "o.tif"), input_path=src, device="cpu"), feedback)


@pytest.mark.parametrize("job", ["generate", "translate"])
@pytest.mark.parametrize("where", RASTER_STEPS)
def test_generate_or_translate_on_a_full_disk_keeps_the_earlier_raster_and_its_sidecars(request, out_dir, monkeypatch,
                                                                                         where, job):
    run = (partial(_generate, request.getfixturevalue("gen_model")) if job == "generate"
           else partial(_translate, request.getfixturevalue("translation")))
    before = earlier_files(out_dir, ["o.tif", "o.qml", "o.tif.aux.xml"])
    inject(monkeypatch, where)
    with pytest.raises(OutputError, match=r"Cannot write '.*o\.tif': the disk is full"):
        run(out_dir)
    assert leftovers(out_dir) == []
    assert snapshot(out_dir) == before


def test_translate_cancelled_at_every_progress_report_keeps_the_earlier_outputs(translation, out_dir):
    before = earlier_files(out_dir, ["o.tif", "o.qml", "o.tif.aux.xml"])
    assert cancelled_at_each_report(lambda fb: _translate(translation, out_dir, fb), out_dir, before) >= 1


# GDAL's own write errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("free", [0, 2**30])
def test_a_gdal_write_error_on_a_full_disk_is_said_to_be_a_full_disk(gen_model, out_dir, monkeypatch, free):
    """On a full disk GDAL says only e.g. 'TIFFWriteDirectoryTagData:IO error writing tag data' (seen writing a
    tile on a full tmpfs): the message says the disk is full when the folder has no free space left, and keeps
    GDAL's words otherwise."""
    def gdal_io_error(*args, **kwargs):
        raise RuntimeError("TIFFWriteDirectoryTagData:IO error writing tag data")

    before = earlier_files(out_dir, ["o.tif", "o.qml"])
    monkeypatch.setattr(RasterWriter, "_describe", gdal_io_error)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: types.SimpleNamespace(total=2**31, used=2**31 - free,
                                                                              free=free))
    cause = "the disk is full" if free == 0 else r"TIFFWriteDirectoryTagData:IO error writing tag data\. Nothing"
    with pytest.raises(OutputError, match=rf"Cannot write '.*o\.tif': {cause}"):
        _generate(gen_model, out_dir)
    assert leftovers(out_dir) == [] and snapshot(out_dir) == before


# the interactive tile session --------------------------------------------------------------------------------

def vrt_on_a_full_disk(path, *args, **kwargs):
    """``gdal.BuildVRT`` as on a full disk (GDAL 3.6 on a full tmpfs): the dataset is made, but writing its XML
    fails: FlushCache raises, closing it only prints the error, and an empty file is left at ``path``."""
    open(path, "wb").close()

    class Unwritten:
        def FlushCache(self):
            raise RuntimeError(f"Failed to write whole XML document ({path}).")

    return Unwritten()


def fails_for(real, ending):
    """``real`` (os.replace), except that renaming onto a name ending in ``ending`` finds the disk full."""
    def wrapped(src, dst, *args, **kwargs):
        if str(dst).endswith(ending):
            disk_full()
        return real(src, dst, *args, **kwargs)

    return wrapped


def _session(gen_model, folder):
    return TileSession(TileSource(gen_model, "cpu"), UTM32, 500123.0, 5100456.0, seed=5, tile=32, folder=str(folder))


def assert_usable(session, tiles_before, mosaic_before):
    """The session is as before the failed change: same tiles and mosaic, which GDAL opens and which lists only
    complete tiles; and it can still change."""
    assert sorted(session.tiles) == tiles_before and session.mosaic_path == mosaic_before
    ds = gdal.Open(session.mosaic_path)
    listed = sorted(ds.GetFileList()[1:])
    assert listed == sorted(session.tiles.values()) and all(gdal.Open(t).ReadAsArray().size for t in listed)
    ds = None
    session.add(2, 0)  # a tile beyond the ring, which the failed grow did not make
    assert len(gdal.Open(session.rebuild_mosaic()).GetFileList()) == len(tiles_before) + 2  # the .vrt + tiles


@pytest.mark.parametrize("where", ["tile", "mosaic", "mosaic rename"])
def test_a_session_that_cannot_start_on_a_full_disk_says_so_and_leaves_nothing(gen_model, out_dir, monkeypatch,
                                                                                where):
    if where == "tile":
        monkeypatch.setattr(gdal.Band, "WriteArray", disk_full)
    elif where == "mosaic":
        monkeypatch.setattr(gdal, "BuildVRT", vrt_on_a_full_disk)
        no_space_left(monkeypatch)
    else:
        monkeypatch.setattr(os, "replace", fails_for(os.replace, ".vrt"))
    session = _session(gen_model, out_dir)
    name = r"c-?\d+_r-?\d+\.tif" if where == "tile" else r"mosaic_v1\.vrt"
    with pytest.raises(OutputError, match=rf"Cannot write '.*geoml_s5_{session.token}_{name}': the disk is full"):
        session.start()
    assert os.listdir(out_dir) == []  # no tile that no mosaic shows, no empty mosaic
    assert session.tiles == {} and session.mosaic_path is None


@pytest.mark.parametrize("where", ["tile 1", "tile 5", "tile 8", "mosaic", "mosaic rename"])
def test_a_grow_on_a_full_disk_keeps_the_session_as_it_was(gen_model, out_dir, monkeypatch, where):
    session = _session(gen_model, out_dir)
    mosaic = session.start()
    before = snapshot(out_dir)
    with monkeypatch.context() as m:
        if where.startswith("tile"):  # one WriteArray per tile
            m.setattr(gdal.Band, "WriteArray", nth_call_fails(gdal.Band.WriteArray, int(where[-1])))
        elif where == "mosaic":
            m.setattr(gdal, "BuildVRT", vrt_on_a_full_disk)
            no_space_left(m)
        else:
            m.setattr(os, "replace", fails_for(os.replace, ".vrt"))
        name = r"c-?\d+_r-?\d+\.tif" if where.startswith("tile") else r"mosaic_v2\.vrt"
        with pytest.raises(OutputError, match=rf"Cannot write '.*geoml_s5_{session.token}_{name}': the disk is full"):
            session.grow()
    assert leftovers(out_dir) == []
    assert snapshot(out_dir) == before
    assert_usable(session, [(0, 0)], mosaic)


def test_a_grow_cancelled_at_every_progress_report_keeps_the_session_as_it_was(gen_model, out_dir):
    session = _session(gen_model, out_dir)
    mosaic = session.start()
    before = snapshot(out_dir)
    n = cancelled_at_each_report(session.grow, out_dir, before)
    assert n == 8  # after each of the ring's 8 tiles
    assert len(session.tiles) == 9 and session.mosaic_path != mosaic
    assert os.path.exists(mosaic)  # until discarded


@pytest.mark.parametrize("where", ["chmod", "replace"])
def test_a_style_that_cannot_be_written_keeps_the_earlier_style(gen_model, out_dir, monkeypatch, where):
    session = _session(gen_model, out_dir)
    session.start()
    qml = session.write_style("hillshade")
    with open(qml, "a") as fh:
        fh.write("<!-- earlier -->")
    before = snapshot(out_dir)
    monkeypatch.setattr(os, where, disk_full)
    with pytest.raises(OutputError, match=rf"Cannot write '.*geoml_s5_{session.token}_hillshade\.qml': "
                                          "the disk is full"):
        session.write_style("hillshade")
    assert leftovers(out_dir) == [] and not [f for f in os.listdir(out_dir) if f.startswith(".")]
    assert snapshot(out_dir) == before


def test_an_old_mosaic_that_cannot_be_deleted_yet_is_left_for_later_not_an_error(gen_model, out_dir, monkeypatch):
    """Deleting superseded mosaics is tidying up after the layer switched (e.g. Windows refuses to delete a file
    a reader still holds): before, the first refusal was raised as a raw PermissionError (the panel said showing
    the grown tiles failed) and the other old mosaics were not even tried."""
    session = _session(gen_model, out_dir)
    first = session.start()
    second = session.grow()
    current = session.grow()
    real_remove = os.remove

    def in_use(path):
        if path == first:
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real_remove(path)

    with monkeypatch.context() as m:
        m.setattr(os, "remove", in_use)
        session.discard_old_mosaics()
    assert os.path.exists(first) and not os.path.exists(second)
    assert gdal.Open(current).RasterXSize == 5 * 32
    session.discard_old_mosaics()  # tried again next time
    assert not os.path.exists(first) and os.path.exists(current)


def test_a_tile_that_cannot_be_removed_after_a_failed_grow_does_not_hide_the_failure(gen_model, out_dir,
                                                                                       monkeypatch):
    """The user must read why Grow failed (the full disk), not a later refusal to delete a tile while tidying up;
    every other tile of the failed ring is still removed."""
    session = _session(gen_model, out_dir)
    session.start()
    real_remove, refused = os.remove, []

    def remove(path):
        if not refused and path.endswith(".tif") and ".part" not in path:  # a complete tile of the ring
            refused.append(path)
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real_remove(path)

    with monkeypatch.context() as m:
        m.setattr(gdal.Band, "WriteArray", nth_call_fails(gdal.Band.WriteArray, 5))
        m.setattr(os, "remove", remove)
        with pytest.raises(OutputError, match="the disk is full"):
            session.grow()
    left = sorted(f for f in os.listdir(out_dir) if f.endswith(".tif"))
    assert refused and left == sorted([os.path.basename(session.tiles[(0, 0)]), os.path.basename(refused[0])])
    assert sorted(session.tiles) == [(0, 0)]


def test_undo_last_change_takes_back_only_a_grow_that_succeeded_and_is_not_shown_yet(gen_model, out_dir,
                                                                                     monkeypatch):
    session = _session(gen_model, out_dir)
    mosaic = session.start()
    session.discard_old_mosaics()  # the panel shows the first tile
    before = snapshot(out_dir)
    session.grow()
    session.undo_last_change()  # the layers could not switch to the grown mosaic
    assert snapshot(out_dir) == before and leftovers(out_dir) == []
    assert_usable(session, [(0, 0)], mosaic)
    other = _session(gen_model, out_dir / "other")
    first = other.start()
    with monkeypatch.context() as m:  # a grow that fails is rolled back by itself: nothing more to take back
        m.setattr(gdal.Band, "WriteArray", disk_full)
        with pytest.raises(OutputError):
            other.grow()
    other.undo_last_change()  # not the start before it
    assert list(other.tiles) == [(0, 0)] and os.path.exists(other.tiles[(0, 0)]) and other.mosaic_path == first

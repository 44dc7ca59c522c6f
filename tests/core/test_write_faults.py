"""Fault injection: a full disk or a cancel at any point leaves no partial output, and earlier files as they were."""
import os

import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.core import outputs
from geoml_plugin.core.errors import GeoMLError, JobCancelled, OutputError
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.progress import Feedback
from geoml_plugin.core.raster.io import RasterWriter
from tests.conftest import leftovers, write_raster


def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def nth_call_fails(real, n):
    """``real``, except that its ``n``-th call (1-based) raises 'No space left on device'."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            disk_full()
        return real(*args, **kwargs)

    return wrapped


def earlier_files(folder, names):
    """Files of an earlier run at the output paths: their bytes, to compare after a failed run."""
    for name in names:
        if name.endswith(".tif"):
            write_raster(folder / name, np.full((1, 4, 4), 7, np.uint8))
        else:
            (folder / name).write_text(f"earlier {name}")
    return snapshot(folder)


def snapshot(folder):
    return {f: (folder / f).read_bytes() for f in sorted(os.listdir(folder))}


def _write(path, qml="NEW STYLE"):
    with RasterWriter(str(path), 300, 300, 1, np.uint8, (0, 1, 0, 0, 0, -1), "", nodata=0,
                      category_names=["none", "a", "b"], qml=qml) as w:
        w.write(np.ones((300, 300), np.uint8), 0, 0)


@pytest.mark.parametrize("where", ["WriteArray", "finalise", "qml", "replace1", "replace2", "replace3"])
def test_a_full_disk_while_writing_a_raster_keeps_the_earlier_raster_and_its_sidecars(out_dir, monkeypatch, where):
    before = earlier_files(out_dir, ["o.tif", "o.qml", "o.tif.aux.xml"])
    if where == "WriteArray":
        monkeypatch.setattr(gdal.Band, "WriteArray", disk_full)
    elif where == "finalise":  # completing the file (categories, flush); patching gdal.Dataset.FlushCache here
        monkeypatch.setattr(RasterWriter, "_describe", disk_full)  # was not always seen by the writer (flaky)
    elif where == "qml":  # the style is written after the raster was renamed into place (before: an old .qml
        monkeypatch.setattr(os, "chmod", disk_full)  # stayed beside the new raster, which the error said failed)
    else:
        monkeypatch.setattr(os, "replace", nth_call_fails(os.replace, int(where[-1])))
    with pytest.raises(OutputError, match=r"Cannot write '.*o\.tif': the disk is full"):
        _write(out_dir / "o.tif")
    assert leftovers(out_dir) == []
    assert snapshot(out_dir) == before


def test_text_outputs_fail_with_a_clear_error_and_keep_the_earlier_file(out_dir, monkeypatch):
    (out_dir / "r.json").write_text("earlier")
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OutputError, match=r"Cannot write '.*r\.json': the disk is full"):
        outputs.write_text_atomic(str(out_dir / "r.json"), "new")
    assert os.listdir(out_dir) == ["r.json"] and (out_dir / "r.json").read_text() == "earlier"


def test_permission_denied_is_said_as_such(out_dir, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(OutputError, match="permission denied"):
        outputs.write_text_atomic(str(out_dir / "r.json"), "new")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_predict_with_confidence_keeps_both_earlier_rasters_on_a_full_disk(scene, sample_model, out_dir, monkeypatch,
                                                                        n):
    """The class raster and its confidence raster are replaced together or not at all (before: a full disk
    while closing the confidence raster left the new class raster beside the earlier confidence)."""
    before = earlier_files(out_dir, ["c.tif", "c.qml", "p.tif", "p.qml"])
    monkeypatch.setattr(gdal.Dataset, "FlushCache", nth_call_fails(gdal.Dataset.FlushCache, n))
    try:
        run_predict(PredictConfig(scene.image, sample_model, str(out_dir / "c.tif"), str(out_dir / "p.tif"),
                                  stride=8, device="cpu"))
    except OutputError:
        assert snapshot(out_dir) == before
    else:  # fewer flushes than n: a complete run
        assert snapshot(out_dir) != before
    assert leftovers(out_dir) == []


def test_predict_cancelled_at_every_progress_report_keeps_the_earlier_outputs(scene, sample_model, out_dir):
    before = earlier_files(out_dir, ["c.tif", "c.qml", "p.tif", "p.qml"])
    for k in range(1, 8):
        def cancelled(calls=[], k=k):  # noqa: B006 (one list per k)
            calls.append(1)
            return len(calls) >= k

        try:
            run_predict(PredictConfig(scene.image, sample_model, str(out_dir / "c.tif"), str(out_dir / "p.tif"),
                                      stride=8, device="cpu", tile_size=64), Feedback(is_cancelled=cancelled))
        except JobCancelled:
            assert snapshot(out_dir) == before, k
            assert leftovers(out_dir) == []
        else:
            break
    assert isinstance(JobCancelled(), GeoMLError)


def test_a_model_that_cannot_be_saved_is_a_clear_error_and_keeps_the_earlier_model(out_dir, monkeypatch):
    import safetensors.torch
    import torch

    from geoml_plugin.core.modelfile import ModelMetadata, save_model

    (out_dir / "m.safetensors").write_bytes(b"earlier")
    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    meta = ModelMetadata(architecture="x", task="regression", in_bands=1)
    with pytest.raises(OutputError, match=r"Cannot write '.*m\.safetensors': the disk is full"):
        save_model(str(out_dir / "m.safetensors"), {"w": torch.zeros(2)}, meta)
    assert snapshot(out_dir) == {"m.safetensors": b"earlier"}


@pytest.mark.parametrize("fail", ["model", "html"])
def test_finetune_that_fails_saving_keeps_the_earlier_report(out_dir, monkeypatch, fail):
    """Before: the earlier run's report (HTML + JSON) was deleted when the model or the HTML could not be saved."""
    import types

    import safetensors.torch
    import torch

    from geoml_plugin.core.finetune import job as finetune
    from geoml_plugin.core.finetune import report
    from geoml_plugin.core.finetune.job import FinetuneConfig
    from geoml_plugin.core.modelfile import ModelMetadata

    before = earlier_files(out_dir, ["r.html", "r.json", "m.safetensors"])
    if fail == "model":
        monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
        monkeypatch.setattr(report, "render_html", lambda *a: "<html/>")
    else:
        monkeypatch.setattr(report, "render_html", lambda *a: disk_full())
    meta = ModelMetadata(architecture="x", task="regression", in_bands=1)
    result = types.SimpleNamespace(model_path="m", task="regression", metrics={}, history=[])
    cfg = FinetuneConfig("in.tif", "labels.gpkg", output_model=str(out_dir / "m.safetensors"),
                         output_report=str(out_dir / "r.html"))
    with pytest.raises((OutputError, OSError)):
        finetune._write_outputs(cfg, {"w": torch.zeros(2)}, meta, result)
    assert leftovers(out_dir) == []
    assert snapshot(out_dir) == before

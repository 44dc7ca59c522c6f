"""Jobs under torchrun: 2 gloo processes on 127.0.0.1 (``python -m torch.distributed.run``, one thread each).

Sharded prediction writes the one-process output exactly (classes, confidence, values; a COG passes GDAL's
validation); DDP fine-tuning trains, only rank 0 writes, and the model maps; a crash on one rank stops both
with its message and leaves no file.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.core import distributed
from geoml_plugin.core.errors import InputError
from geoml_plugin.core.finetune.job import FinetuneConfig, output_paths, run_finetune
from geoml_plugin.core.modelfile import ModelMetadata, read_metadata, save_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.predict import PredictConfig, dense_batches, run_predict
from geoml_plugin.core.predict_many import batch_outputs, run_predict_many
from geoml_plugin.core.raster.classes import make_classes
from geoml_plugin.core.raster.io import category_names_of, raster_info
from tests.conftest import ROOT, leftovers, tiny_regression_model, write_raster
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

DRIVER = Path(__file__).with_name("dist_driver.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path, jobs: list, nproc: int = 2, nodes: int = 1, args=(), **extra) -> tuple:
    """(exit status, results per rank, output): ``jobs`` run by ``nproc`` gloo processes under torchrun, or by
    ``nodes`` torchrun agents ("nodes" on 127.0.0.1, c10d rendezvous) of ``nproc`` processes each."""
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(jobs=jobs, results=str(results), **extra)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), LOGLEVEL="ERROR")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *args]
    if nodes == 1 and not any(a.startswith("--max-restarts") for a in args):
        run += ["--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    else:
        run += [f"--nnodes={nodes}", "--rdzv-backend=c10d",  # restarts go through a new rendezvous round f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
                "--rdzv-id=geoml-test", "--local-addr=127.0.0.1"]
    agents = [subprocess.Popen(run + [str(DRIVER), str(spec)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=str(ROOT)) for _ in range(nodes)]
    try:
        outputs = [a.communicate(timeout=300) for a in agents]
    finally:
        for a in agents:  # a hang must not leave the agents (and their workers) behind
            if a.poll() is None:
                a.terminate()
    ranks = [json.loads((results / f"result-{r}.json").read_text()) for r in range(nproc * nodes)
             if (results / f"result-{r}.json").exists()]
    rc = max(abs(a.returncode) for a in agents)
    return rc, ranks, "".join(o[0][-2000:] + o[1][-5000:] for o in outputs)


def _patch_model(folder) -> str:
    import torch

    torch.manual_seed(0)
    meta = ModelMetadata(architecture="small_cnn", arch_args={"in_bands": 4, "num_outputs": 3, "widths": [4, 4, 4, 4]},
                     task="classification", output="patch", in_bands=4, patch_size=16,
                     classes=make_classes(("A", "B", "C")), norm_mean=[1000] * 4, norm_std=[500] * 4)
    return save_model(str(folder / "patch.safetensors"), build_model(meta.architecture, **meta.arch_args), meta)


def _read(path):
    return gdal.Open(str(path)).ReadAsArray()


# -- sharded prediction ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sharded(scene, sample_model, tmp_path_factory):
    """The same jobs by one process (here) and by two (torchrun): (one-process folder, two-process folder,
    results per rank, the jobs)."""
    tmp = tmp_path_factory.mktemp("sharded")
    rng = np.random.default_rng(3)
    big = rng.integers(500, 2000, (4, 520, 600)).astype(np.uint16)
    big[:, :40, :90] = 0  # nodata corner
    big_path = write_raster(tmp / "big.tif", big, nodata=0)
    patch, reg = _patch_model(tmp), tiny_regression_model(tmp / "reg.safetensors")
    jobs = [
        # a dense classifier over many 3-tile batches, with its confidence raster
        dict(input_path=scene.image, model_path=sample_model, output_path="lda.tif", confidence_path="lda_conf.tif",
             tile_size=24, overlap=4, batch_size=3),
        # a patch classifier (4 tiles of 512 px) with its confidence raster, sieved by rank 0 once assembled
        dict(input_path=big_path, model_path=patch, output_path="patch.tif", confidence_path="patch_conf.tif",
             stride=8, min_region=30),
        # pixel regression to a Cloud-Optimized GeoTIFF
        dict(input_path=big_path, model_path=reg, output_path="reg_cog.tif", tile_size=64, overlap=8, batch_size=2,
             cog=True),
    ]
    one, two = tmp / "one", tmp / "two"
    one.mkdir()
    two.mkdir()
    singles = []
    for job in jobs:
        cfg = dict(job, device="cpu", output_path=str(one / job["output_path"]))
        if job.get("confidence_path"):
            cfg["confidence_path"] = str(one / job["confidence_path"])
        singles.append(run_predict(PredictConfig(**cfg)))
    launch = []
    for job in jobs:
        cfg = dict(job, device="cpu", output_path=str(two / job["output_path"]))
        if job.get("confidence_path"):
            cfg["confidence_path"] = str(two / job["confidence_path"])
        launch.append({"job": "predict", "config": cfg})
    # batch mapping: a folder of two rasters, each shared between the processes
    scenes = tmp / "scenes"
    scenes.mkdir()
    for name, arr in (("a.tif", big[:, :200, :260]), ("b.tif", big[:, 150:, 200:])):
        write_raster(scenes / name, arr, nodata=0)
    (two / "many").mkdir()
    launch.append({"job": "predict_many", "config": dict(input_path="", model_path=patch, stride=8, device="cpu"),
                   "inputs": str(scenes), "output_folder": str(two / "many"), "confidence": True})
    rc, ranks, log = torchrun(tmp, launch)
    assert rc == 0, log
    return one, two, singles, ranks, jobs


def test_sharded_prediction_writes_the_one_process_output_exactly(sharded):
    one, two, singles, ranks, jobs = sharded
    assert [r["rank"] for r in ranks] == [0, 1]
    for job, single, *per_rank in zip(jobs, singles, *(r["jobs"] for r in ranks)):
        name = job["output_path"]
        np.testing.assert_array_equal(_read(two / name), _read(one / name), err_msg=name)
        a, b = raster_info(str(two / name)), raster_info(str(one / name))
        assert (a.geotransform, a.crs_wkt, a.nodata, a.dtype) == (b.geotransform, b.crs_wkt, b.nodata, b.dtype)
        if job.get("confidence_path"):
            np.testing.assert_array_equal(_read(two / job["confidence_path"]), _read(one / job["confidence_path"]))
        for r in per_rank:  # every rank returns the result of the whole job
            assert r["valid_pixels"] == single.valid_pixels and r["class_counts"] == single.class_counts
            assert r["value_range"] == list(single.value_range) and r["tiles"] == single.tiles
            assert r["model_pixels"] == single.model_pixels  # dense models: the model work of both ranks
    assert singles[1].tiles == 4 and singles[0].tiles > 20  # both ranks had tiles to do
    assert category_names_of(str(two / "lda.tif")) == category_names_of(str(one / "lda.tif"))
    assert (two / "lda.qml").read_text() == (one / "lda.qml").read_text()
    assert (two / "reg_cog.qml").read_text() == (one / "reg_cog.qml").read_text()  # same value range → style
    assert leftovers(two) == [] and sorted(os.listdir(two)) == sorted(os.listdir(one) + ["many"])


def test_a_folder_of_rasters_maps_each_to_its_own_output(sharded, tmp_path):
    """Batch mapping in one process and under torchrun (each scene sharded): the outputs of single runs."""
    two = sharded[1]
    scenes = two.parent / "scenes"
    patch = str(two.parent / "patch.safetensors")
    base = PredictConfig("", patch, stride=8, device="cpu")
    res = run_predict_many(base, str(scenes), str(tmp_path), confidence=True)
    assert [os.path.basename(r.output_path) for r in res] == ["a.tif", "b.tif"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".tif")) == [
        "a.tif", "a_confidence.tif", "b.tif", "b_confidence.tif"]
    for name in ("a", "b"):
        single = tmp_path / f"{name}_single.tif"
        run_predict(PredictConfig(str(scenes / f"{name}.tif"), patch, str(single), stride=8, device="cpu"))
        np.testing.assert_array_equal(_read(tmp_path / f"{name}.tif"), _read(single))
        np.testing.assert_array_equal(_read(two / "many" / f"{name}.tif"), _read(single))
        np.testing.assert_array_equal(_read(two / "many" / f"{name}_confidence.tif"),
                                      _read(tmp_path / f"{name}_confidence.tif"))
    assert [r["jobs"][-1]["outputs"] for r in sharded[3]] == [[str(two / "many" / "a.tif"),
                                                               str(two / "many" / "b.tif")]] * 2


def test_batch_mapping_refuses_clashing_names_and_an_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write_raster(tmp_path / "x" / "s.tif", np.ones((1, 8, 8), np.uint8))
    b = write_raster(tmp_path / "y" / "s.tif", np.ones((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match="would both be written to s.tif"):
        batch_outputs([a, b], str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no raster"):
        batch_outputs(str(tmp_path / "empty"), str(tmp_path))
    with pytest.raises(InputError, match="input raster"):  # mapping a folder into itself would replace its inputs
        batch_outputs(str(tmp_path / "x"), str(tmp_path / "x"))
    assert os.listdir(tmp_path / "x") == ["s.tif"]


def test_two_nodes_on_localhost_write_the_one_process_output(sharded, scene, sample_model, tmp_path):
    """Two torchrun agents (--nnodes 2, c10d rendezvous on 127.0.0.1), one process each, as on two machines."""
    one = sharded[0]
    cfg = dict(input_path=scene.image, model_path=sample_model, output_path=str(tmp_path / "lda.tif"),
               confidence_path=str(tmp_path / "lda_conf.tif"), tile_size=24, overlap=4, batch_size=3, device="cpu")
    rc, ranks, log = torchrun(tmp_path, [{"job": "predict", "config": cfg}], nproc=1, nodes=2)
    assert rc == 0, log
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    np.testing.assert_array_equal(_read(tmp_path / "lda.tif"), _read(one / "lda.tif"))
    np.testing.assert_array_equal(_read(tmp_path / "lda_conf.tif"), _read(one / "lda_conf.tif"))
    assert leftovers(tmp_path) == []


def test_cog_output_passes_gdal_validation_with_overviews(sharded):
    _, two, _, _, _ = sharded
    path = str(two / "reg_cog.tif")
    try:
        from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate
    except ImportError:
        validate = None
    if validate is not None:
        warnings, errors, _ = validate(path, full_check=True)
        assert errors == [] and warnings == []
    info = gdal.Info(path, format="json")
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert len(info["bands"][0]["overviews"]) >= 1
    assert info["bands"][0]["block"] == [512, 512]


def test_dense_batches_are_fixed_by_the_geometry():
    """Both processes of a sharded run form the same batches as one process: runs of equal tiles."""
    from geoml_plugin.core.raster.tiling import dense_tiles

    tiles = dense_tiles(100, 70, 32, 4, trim=True)
    groups = dense_batches(tiles, 3)
    assert [i for g in groups for i in g] == list(range(len(tiles)))
    for g in groups:
        assert len(g) <= 3 and len({(tiles[i].read.w, tiles[i].read.h) for i in g}) == 1


def test_a_crash_on_one_rank_stops_both_with_its_message_and_leaves_no_file(scene, sample_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cfg = dict(input_path=scene.image, model_path=sample_model, output_path=str(out / "x.tif"),
               confidence_path=str(out / "c.tif"), tile_size=24, overlap=4, batch_size=3, device="cpu")
    rc, ranks, log = torchrun(tmp_path, [{"job": "predict", "config": cfg}], fail_rank=1, fail_after=2)
    assert rc != 0
    errors = {r["rank"]: r["jobs"][0] for r in ranks}
    assert errors[1] == {"error": "injected crash while writing a tile", "error_type": "RuntimeError"}, log
    assert errors[0]["error_type"] == "PeerFailed"
    assert errors[0]["error"] == "Rank 1 of 2 failed: RuntimeError: injected crash while writing a tile"
    assert os.listdir(out) == []  # no output, no part, no sidecar


def test_ctrl_c_stops_every_rank_and_leaves_no_file(scene, sample_model, tmp_path):
    """SIGINT to torchrun (Ctrl-C) reaches the workers part way through: no output, no part, no sidecar."""
    import signal
    import time

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "results").mkdir()
    cfg = dict(input_path=scene.image, model_path=sample_model, output_path=str(out / "x.tif"),
               confidence_path=str(out / "c.tif"), tile_size=24, overlap=4, batch_size=1, device="cpu")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(jobs=[{"job": "predict", "config": cfg}], results=str(tmp_path / "results"),
                                    sleep_per_tile=0.5)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), LOGLEVEL="ERROR")
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                              "--master-addr=127.0.0.1", f"--master-port={_free_port()}", str(DRIVER), str(spec)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        end = time.monotonic() + 120
        # rank 0's two temporary outputs and the two parts of each rank
        while len(leftovers(out)) < 6 and time.monotonic() < end and agent.poll() is None:
            time.sleep(0.2)
        assert len(leftovers(out)) == 6, os.listdir(out)
        time.sleep(1.0)
        agent.send_signal(signal.SIGINT)
        agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0
    assert os.listdir(out) == []
    for f in (tmp_path / "results").glob("result-*.json"):  # a rank that got to report it: stopped, not done
        assert json.loads(f.read_text())["jobs"][0]["error_type"] in ("KeyboardInterrupt", "PeerFailed", "JobCancelled",
                                                                         "LauncherStopped")


def test_one_process_is_not_distributed(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.launch_env() is None and not distributed.is_distributed()
    with distributed.session("cpu") as s:
        assert s is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with distributed.session("cpu") as s:  # torchrun with one process: as without it
        assert s is None


def test_few_shot_mapping_and_generation_refuse_several_processes(monkeypatch, tmp_path):
    """Jobs that run in one process say so under torchrun with 2 processes, before anything is written."""
    from geoml_plugin.core.fewshot.job import FewShotConfig, run_fewshot
    from geoml_plugin.core.gan.generate import GenerateConfig, run_generate

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match="Few-shot mapping runs in one process; this one is one of 2"):
        run_fewshot(FewShotConfig(model_path="m.safetensors", input_path="a.tif", output_path=str(out)))
    with pytest.raises(InputError, match="Generating with a GAN model runs in one process") as err:
        run_generate(GenerateConfig(model_path="g.safetensors", output_path=str(out)))
    assert "without torchrun" in err.value.hint
    assert not out.exists()


# -- DDP fine-tuning ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    from tests.core.test_finetune import write_points

    d = tmp_path_factory.mktemp("blocks")
    rng = np.random.default_rng(0)
    n = 8
    cls = rng.integers(0, 2, (n, n))
    img = np.kron(100 + 60 * cls, np.ones((16, 16)))[None].repeat(5, 0).astype(np.float32)
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    raster = write_raster(d / "blocks.tif", img)
    labels = write_points(d / "blocks.gpkg", [(i * 16 + 8, j * 16 + 8, ["dark", "bright"][cls[i, j]])
                                              for i in range(n) for j in range(n)])
    return raster, labels, cls


def test_ddp_fine_tuning_trains_only_rank_0_writes_and_the_model_maps(blocks, tmp_path):
    raster, labels, cls = blocks
    out = tmp_path / "out"
    out.mkdir()
    cfg = dict(input_path=raster, labels=labels, label_field="label", output_model=str(out / "m.safetensors"),
               output_report=str(out / "m_report.html"), epochs=6, patch_size=16, batch_size=16, device="cpu")
    rc, ranks, log = torchrun(tmp_path, [{"job": "finetune", "config": cfg}])
    assert rc == 0, log
    r0, r1 = (r["jobs"][0] for r in ranks)
    # only rank 0 saved the model and the report; every file of a one-process run is there, nothing else
    assert ranks[0]["saved"] == [cfg["output_report"], cfg["output_model"]] and ranks[1]["saved"] == []
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in output_paths(FinetuneConfig(**cfg)))
    # validation metrics are all-reduced: both ranks report the metrics of the whole validation set
    assert r0["metrics"] == r1["metrics"] and r0["history"][-1]["val_loss"] == r1["history"][-1]["val_loss"]
    assert r0["batch_size"] == 16 and r0["metrics"]["evaluated_on"] == "validation"
    meta = read_metadata(cfg["output_model"])
    assert meta.extra["training"]["world_size"] == 2
    # the same global batch in one process: the same held-out samples, accuracy within 0.1 (augmentation
    # draws and per-rank BatchNorm statistics differ; both are far above chance, 0.5)
    single = run_finetune(FinetuneConfig(**dict(cfg, output_model=str(tmp_path / "one.safetensors"),
                                                output_report=None)))
    assert r0["metrics"]["samples"] == single.metrics["samples"] and r0["n_train"] == single.n_train
    assert r0["metrics"]["overall_accuracy"] >= 0.9 and single.metrics["overall_accuracy"] >= 0.9
    assert abs(r0["metrics"]["overall_accuracy"] - single.metrics["overall_accuracy"]) <= 0.1
    # the model file loads and maps the blocks
    run_predict(PredictConfig(raster, cfg["output_model"], str(tmp_path / "map.tif"), stride=16, device="cpu"))
    truth = np.kron(np.where(cls == 1, 1, 2), np.ones((16, 16), int))
    # chance is 0.5; one process maps 0.93 of the pixels here, 2 ranks 0.86 (measured; the likely cause: each
    # rank's BatchNorm sees only its 8 patches on the CPU, where there is no SyncBatchNorm). 6 epochs: with mixup
    # (the patch classifiers' default since session 20) 4 epochs gave 2 ranks 0.76, one process still 0.93.
    assert (_read(tmp_path / "map.tif") == truth).mean() > 0.8


@pytest.mark.slow
def test_a_crash_during_ddp_training_stops_both_ranks_and_writes_nothing(blocks, tmp_path):
    raster, labels, _ = blocks
    out = tmp_path / "out"
    out.mkdir()
    cfg = dict(input_path=raster, labels=labels, label_field="label", output_model=str(out / "m.safetensors"),
               output_report=str(out / "m_report.html"), epochs=3, patch_size=16, batch_size=16, device="cpu")
    rc, ranks, log = torchrun(tmp_path, [{"job": "finetune", "config": cfg}], fail_rank=1, fail_after=1)
    assert rc != 0
    errors = {r["rank"]: r["jobs"][0] for r in ranks}
    assert errors[1]["error"] == "injected crash in an epoch", log
    # rank 0 was inside DDP's gradient all-reduce with rank 1: it stops with rank 1's message
    assert errors[0] == {"error": "Rank 1 of 2 failed: RuntimeError: injected crash in an epoch",
                         "error_type": "PeerFailed"}
    assert os.listdir(out) == []
    assert all(r["saved"] == [] for r in ranks)


def test_a_batch_too_small_for_the_processes_is_refused(monkeypatch, blocks, tmp_path):
    """Checked before any work, with the rule: BATCH_SIZE is the batch of all processes together."""
    from geoml_plugin.core.errors import InputError
    from geoml_plugin.core.finetune import job

    class FakeSession:  # only what _finetune reads before refusing
        world_size, rank, is_main = 4, 0, True

        def feedback(self, fb):
            from geoml_plugin.core.progress import ensure_feedback

            return ensure_feedback(fb)

    raster, labels, _ = blocks
    cfg = FinetuneConfig(raster, labels, "label", str(tmp_path / "m.safetensors"), batch_size=6, device="cpu")
    with pytest.raises(InputError, match="BATCH_SIZE is the batch of all processes together: use at least 8"):
        job._finetune(cfg, None, FakeSession())
    assert not (tmp_path / "m.safetensors").exists()


# -- checkpoints and resume --------------------------------------------------------------------------------

def test_a_run_killed_after_epoch_2_resumes_to_the_weights_of_an_uninterrupted_run(blocks, tmp_path, monkeypatch):
    import torch

    from geoml_plugin.core.finetune.trainer import Trainer
    from geoml_plugin.core.modelfile import load_model, load_state

    raster, labels, _ = blocks
    (tmp_path / "ck_full").mkdir()
    (tmp_path / "ck").mkdir()
    base = dict(input_path=raster, labels=labels, label_field="label", epochs=4, patch_size=16, batch_size=16,
                device="cpu")
    full = run_finetune(FinetuneConfig(**base, output_model=str(tmp_path / "full.safetensors"),
                                       checkpoint_dir=str(tmp_path / "ck_full")))
    epoch = Trainer._epoch
    calls = {"n": 0}

    def killed_in_epoch_3(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_epoch", killed_in_epoch_3)
    resumed_path = tmp_path / "resumed.safetensors"
    cfg = FinetuneConfig(**base, output_model=str(resumed_path), checkpoint_dir=str(tmp_path / "ck"), resume=True)
    with pytest.raises(RuntimeError, match="killed"):
        run_finetune(cfg)
    monkeypatch.setattr(Trainer, "_epoch", epoch)
    assert not resumed_path.exists()
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert state["epoch"] == 2 and sorted(os.listdir(tmp_path / "ck")) == ["checkpoint.json", "epoch-0002.safetensors"]
    with open(tmp_path / "ck" / "epoch-0002.safetensors", "rb") as fh:
        assert fh.read(2) != b"\x80\x02"  # safetensors, not a pickle
    res = run_finetune(cfg)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in full.history]
    a, b = load_state(str(tmp_path / "full.safetensors")), load_state(str(resumed_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # deterministic on one CPU thread
    load_model(str(resumed_path))
    # a checkpoint of another run is not resumed
    with pytest.raises(InputError, match=r"different run \(batch_size differ\)"):
        run_finetune(FinetuneConfig(**dict(base, batch_size=8), output_model=str(tmp_path / "other.safetensors"),
                                    checkpoint_dir=str(tmp_path / "ck"), resume=True))


@pytest.mark.slow
def test_torchrun_restarts_a_crashed_ddp_run_and_it_resumes_from_its_checkpoint(blocks, tmp_path):
    """``torchrun --max-restarts 1``: rank 1 crashes in epoch 2; the restarted workers resume after epoch 1."""
    raster, labels, _ = blocks
    out, ck = tmp_path / "out", tmp_path / "ck"
    out.mkdir()
    ck.mkdir()
    cfg = dict(input_path=raster, labels=labels, label_field="label", output_model=str(out / "m.safetensors"),
               epochs=3, patch_size=16, batch_size=16, device="cpu", checkpoint_dir=str(ck), resume=True)
    rc, ranks, log = torchrun(tmp_path, [{"job": "finetune", "config": cfg}], args=["--max-restarts=1"],
                              fail_rank=1, fail_after=1, fail_first_attempt_only=True)
    assert rc == 0, log
    assert [r["restart"] for r in ranks] == [1, 1]  # the results are those of the restarted workers
    history = ranks[0]["jobs"][0]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert ranks[0]["saved"] == [cfg["output_model"]] and ranks[1]["saved"] == []
    assert read_metadata(cfg["output_model"]).extra["training"]["world_size"] == 2
    assert json.loads((ck / "checkpoint.json").read_text())["epoch"] == 3
    assert sorted(os.listdir(out)) == ["m.safetensors"]


# -- meta-training and GAN training ---------------------------------------------------------------------------

META = dict(label_field="class_name", ways=3, shots=2, query=3, patch_size=16, meta_batch=2, val_episodes=8,
            iterations=6, val_every=3, augment=False, device="cpu")


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml"])
def test_two_processes_meta_train_the_network_one_process_trains_and_only_rank_0_writes(scene, tmp_path, algorithm):
    """META_BATCH is the episodes of all processes together: 2 processes sharing 2 episodes per update take the
    updates one process takes (same episodes; augmentation off, so the batches are the same), all-reduce the
    meta-validation, keep identical weights, and only rank 0 writes the model."""
    import torch

    from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain
    from geoml_plugin.core.modelfile import load_model

    out = tmp_path / "out"
    out.mkdir()
    cfg = dict(META, rasters=[scene.image], labels=scene.points, output_model=str(out / "meta.safetensors"),
               algorithm=algorithm, inner_steps=2)
    rc, ranks, log = torchrun(tmp_path, [{"job": "metatrain", "config": cfg}])
    assert rc == 0, log
    r0, r1 = (r["jobs"][0] for r in ranks)
    assert ranks[0]["saved"] == [cfg["output_model"]] and ranks[1]["saved"] == [] and os.listdir(out) == ["meta.safetensors"]
    if algorithm == "protonet":  # the digest is taken before the training classes' prototypes (protonet only)
        assert ranks[0]["digests"] == ranks[1]["digests"] and len(ranks[0]["digests"]) == 1
    assert r0 == r1  # meta-validation all-reduced: the same figures and best iteration on both
    assert read_metadata(cfg["output_model"]).extra["fewshot"]["world_size"] == 2
    single = run_metatrain(MetaTrainConfig(**dict(cfg, output_model=str(tmp_path / "one.safetensors"))))
    assert abs(single.val_accuracy - r0["val_accuracy"]) < 1e-6 and single.best_iteration == r0["best_iteration"]
    two, _ = load_model(cfg["output_model"], "cpu")
    one, _ = load_model(str(tmp_path / "one.safetensors"), "cpu")
    a, b = two.state_dict(), one.state_dict()
    # up to float summation order; MAML's one shared head row gets gradients near 0, which Adam scales up to
    # full steps, so its rounding differences grow to ~1e-3 in 6 updates (without the gradient average the
    # embeddings differ by ~1e-3: the test fails)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5 if algorithm == "protonet" else
                              (1e-2 if k.startswith("head") else 1e-4)), k


def test_a_meta_batch_smaller_than_the_processes_is_refused_on_every_rank(scene, tmp_path):
    cfg = dict(META, meta_batch=1, rasters=[scene.image], labels=scene.points,
               output_model=str(tmp_path / "meta.safetensors"))
    rc, ranks, log = torchrun(tmp_path, [{"job": "metatrain", "config": cfg}])
    assert rc != 0 and len(ranks) == 2
    for r in ranks:
        assert "META_BATCH is 1: too few episodes for 2 processes" in r["jobs"][0]["error"]
    assert not os.path.exists(cfg["output_model"])


@pytest.mark.parametrize("arch", ["dcgan_sn", "pix2pix"])
def test_two_processes_train_one_gan_and_only_rank_0_writes_it(scene, tmp_path, arch):
    """Data-parallel GAN training: both processes end with the same generator, rank 0 alone writes the
    model, report and loss table (the files a one-process run writes), and the model generates."""
    from geoml_plugin.core.gan.train import GanTrainConfig, output_paths

    out = tmp_path / "out"
    out.mkdir()
    cfg = dict(input_path=scene.dem, output_model=str(out / "g.safetensors"), report_path=str(out / "g.png"),
               generator_widths=[16, 8, 8], critic_widths=[8, 16], latent_channels=8, device="cpu",
               tile_size=32, iterations=6, batch_size=4)
    if arch == "pix2pix":
        cfg.update(input_path=scene.image, target_path=scene.dem, architecture="pix2pix", generator_widths=[8, 16])
    rc, ranks, log = torchrun(tmp_path, [{"job": "traingan", "config": cfg}])
    assert rc == 0, log
    assert ranks[0]["digests"] == ranks[1]["digests"] and len(ranks[0]["digests"]) == 1
    assert ranks[0]["saved"] == [cfg["output_model"]] and ranks[1]["saved"] == []
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in output_paths(GanTrainConfig(**cfg)))
    r0, r1 = (r["jobs"][0] for r in ranks)
    assert r0["losses"] == r1["losses"]  # the processes' losses, averaged
    assert read_metadata(cfg["output_model"]).provenance["processes"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("job", ["metatrain", "traingan"])
def test_a_crash_during_distributed_meta_or_gan_training_stops_both_and_writes_nothing(scene, tmp_path, job):
    out = tmp_path / "out"
    out.mkdir()
    if job == "metatrain":
        cfg = dict(META, rasters=[scene.image], labels=scene.points, output_model=str(out / "m.safetensors"))
    else:
        cfg = dict(input_path=scene.dem, output_model=str(out / "m.safetensors"), report_path=str(out / "m.png"),
                   generator_widths=[16, 8, 8], critic_widths=[8, 16], latent_channels=8, device="cpu",
                   tile_size=32, iterations=6, batch_size=4)
    rc, ranks, log = torchrun(tmp_path, [{"job": job, "config": cfg}], fail_rank=1, fail_after=2)
    assert rc != 0
    assert "injected crash in a training iteration" in ranks[0]["jobs"][0]["error"]
    assert ranks[0]["jobs"][0]["error_type"] == "PeerFailed"
    assert os.listdir(out) == []


def test_a_run_killed_within_an_epoch_resumes_from_its_step_to_the_weights_of_an_uninterrupted_run(
        blocks, tmp_path, monkeypatch):
    """``checkpoint_every``: a checkpoint every N steps within an epoch holds the sampler's position; a run
    killed part way through epoch 2 goes on from the last such step and ends with the same weights."""
    import torch

    from geoml_plugin.core.finetune.trainer import Trainer
    from geoml_plugin.core.modelfile import load_state

    raster, labels, _ = blocks
    (tmp_path / "ck_full").mkdir()
    (tmp_path / "ck").mkdir()
    base = dict(input_path=raster, labels=labels, label_field="label", epochs=3, patch_size=16, batch_size=4,
                device="cpu", checkpoint_every=3)
    full = run_finetune(FinetuneConfig(**base, output_model=str(tmp_path / "full.safetensors"),
                                       checkpoint_dir=str(tmp_path / "ck_full")))
    step_of = Trainer.loss
    calls = {"n": 0, "steps": None}

    def killed_in_epoch_2(self, *args, **kwargs):
        if self.model.training:  # training steps only, not validation
            calls["n"] += 1
            if calls["n"] == calls["kill"]:
                raise RuntimeError("killed")
        return step_of(self, *args, **kwargs)

    # 48 training patches, batch 4: 12 steps an epoch, checkpoints after steps 3, 6, 9 and at the epoch's end
    calls["kill"] = 12 + 8  # during step 8 of epoch 2: the last checkpoint is after its step 6
    monkeypatch.setattr(Trainer, "loss", killed_in_epoch_2)
    resumed_path = tmp_path / "resumed.safetensors"
    cfg = FinetuneConfig(**base, output_model=str(resumed_path), checkpoint_dir=str(tmp_path / "ck"), resume=True)
    with pytest.raises(RuntimeError, match="killed"):
        run_finetune(cfg)
    monkeypatch.setattr(Trainer, "loss", step_of)
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 6)
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint.json", "epoch-0001-step-000006.safetensors"]
    logs = []
    from geoml_plugin.core.progress import Feedback

    res = run_finetune(cfg, Feedback(on_log=logs.append))
    assert any("Resumed from the checkpoint after step 6 of epoch 2" in m for m in logs)
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in full.history]
    a, b = load_state(str(tmp_path / "full.safetensors")), load_state(str(resumed_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # deterministic on one CPU thread
    # after the run the folder holds the checkpoint of its last epoch only
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["epoch"] == 3
    assert "step" not in json.loads((tmp_path / "ck" / "checkpoint.json").read_text())


@pytest.mark.slow
def test_torchrun_restarts_a_run_crashed_within_an_epoch_from_its_step_to_the_uninterrupted_weights(blocks, tmp_path):
    """2 processes, a checkpoint every 2 steps; rank 1 crashes in step 5 of epoch 2 (step 17 overall: 12 steps
    of global batch 4 per epoch); ``--max-restarts 1`` restarts both, they resume from a step of epoch 2 and
    end with the weights of the same run uninterrupted."""
    import torch

    from geoml_plugin.core.modelfile import load_state

    raster, labels, _ = blocks
    runs = {}
    for name, extra in (("full", {}), ("crashed", dict(fail_rank=1, fail_in_step=17, fail_first_attempt_only=True))):
        d = tmp_path / name
        (d / "ck").mkdir(parents=True)
        cfg = dict(input_path=raster, labels=labels, label_field="label", output_model=str(d / "m.safetensors"),
                   epochs=3, patch_size=16, batch_size=4, device="cpu", checkpoint_dir=str(d / "ck"), resume=True,
                   checkpoint_every=2)
        rc, ranks, log = torchrun(d, [{"job": "finetune", "config": cfg}], args=["--max-restarts=1"], **extra)
        assert rc == 0, log
        runs[name] = (cfg, ranks)
    cfg, ranks = runs["crashed"]
    assert [r["restart"] for r in ranks] == [1, 1]
    # within epoch 2 on both ranks: after step 4, or after step 2 when the launcher stopped rank 0 while it was
    # still writing step 4's checkpoint (the previous one is then whole)
    assert ranks[0]["resumed"] == ranks[1]["resumed"] and ranks[0]["resumed"] in ([[1, 4]], [[1, 2]])
    assert [r["resumed"] for r in runs["full"][1]] == [[], []]
    assert [h["train_loss"] for h in ranks[0]["jobs"][0]["history"]] == \
        [h["train_loss"] for h in runs["full"][1][0]["jobs"][0]["history"]]
    a, b = load_state(runs["full"][0]["output_model"]), load_state(cfg["output_model"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_rank_stopped_by_the_launcher_after_a_peer_failed_reports_the_peer_failure():
    """torchrun sends SIGTERM to the other ranks once one has exited with an error; a rank that gets it before
    its own collective fails (a loaded machine) must still say why the job stopped: the failing rank's message."""
    import torch.distributed as dist

    from geoml_plugin.core.distributed import LaunchEnv, LauncherStopped, PeerFailed, Session

    store = dist.HashStore()
    store.set("failed/1", "Rank 1 of 2 failed: RuntimeError: injected crash in an epoch")
    store.add("failures", 1)
    store.add("stopped", 1)  # rank 1 has stopped
    sess = Session(LaunchEnv(0, 2, 0), "cpu", store, owns_group=False)
    exc = sess.fail(LauncherStopped())
    assert isinstance(exc, PeerFailed) and str(exc) == "Rank 1 of 2 failed: RuntimeError: injected crash in an epoch"
    assert not sess.failed_here
    # no failure elsewhere: the launcher's stop is this rank's own reason, published for the others
    alone = dist.HashStore()
    sess = Session(LaunchEnv(0, 2, 0), "cpu", alone, owns_group=False)
    alone.add("stopped", 1)
    exc = sess.fail(LauncherStopped())
    assert isinstance(exc, LauncherStopped) and sess.failed_here
    assert alone.get("failed/0").decode() == "Rank 0 of 2 failed: Stopped by the launcher (SIGTERM); no output was written."

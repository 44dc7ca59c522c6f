"""The ``geoml`` command line, run as a user runs it: a subprocess, with qgis and Qt imports refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.cli import build_parser
from geoml_plugin.cli.commands import JOBS
from geoml_plugin.cli.options import as_options, option_name, spec_values
from geoml_plugin.core import (
    FewShotConfig,
    FinetuneConfig,
    GanTrainConfig,
    GenerateConfig,
    MetaTrainConfig,
    PredictConfig,
)
from geoml_plugin.core.errors import InputError
from geoml_plugin.core.spec import default_of, tool_params
from tests.conftest import ROOT, leftovers, write_raster
from tests.core.test_finetune import write_points

# a meta-path finder that refuses qgis and Qt, then the CLI as `python -m geoml_plugin`
BLOCKED_MAIN = (
    "import sys, runpy\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6', 'sip'):\n"
    "            raise ImportError('blocked in this test: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "runpy.run_module('geoml_plugin', run_name='__main__', alter_sys=True)\n"
)
CONFIGS = {"predict": PredictConfig, "finetune": FinetuneConfig, "metatrain": MetaTrainConfig,
           "fewshot": FewShotConfig, "traingan": GanTrainConfig, "generate": GenerateConfig}


def env(**extra):
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    e.pop("RANK", None)
    e.pop("WORLD_SIZE", None)
    return e


def geoml(*args, timeout=300, **environ):
    return subprocess.run([sys.executable, "-c", BLOCKED_MAIN, *map(str, args)], capture_output=True, text=True,
                          env=env(**environ), cwd=str(ROOT), timeout=timeout)


def start(*args):
    return subprocess.Popen([sys.executable, "-c", BLOCKED_MAIN, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=str(ROOT))


@pytest.mark.parametrize("command", [*JOBS, "info", "version", "diagnostics"])
def test_every_subcommand_has_help_without_qgis(command):
    res = geoml(command, "--help")
    assert res.returncode == 0, res.stderr
    assert f"usage: geoml {command}" in res.stdout and "--json" in res.stdout


def test_the_blocker_really_blocks_qgis():
    res = subprocess.run([sys.executable, "-c", BLOCKED_MAIN.replace("runpy.run_module", "import qgis.core #"),
                          "version"], capture_output=True, text=True, env=env())
    assert res.returncode != 0 and "blocked in this test: qgis" in res.stderr


@pytest.mark.parametrize("command", list(CONFIGS))
def test_every_spec_field_has_an_option_with_the_processing_name_and_default(command):
    """CLI and Processing stay in step: every specified field is an option named after its Processing name,
    and parsing no option gives the Config's own default."""
    config = CONFIGS[command]
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    options = {s for a in sub._actions for s in a.option_strings}
    required = [a for a in sub._actions if a.required]
    argv = [command]
    for a in required:
        argv += [a.option_strings[0], "x"]
    args = build_parser().parse_args(argv)
    values = spec_values(args, config)
    for name, spec, _ in tool_params(config):
        assert option_name(spec) in options, (command, spec.name)
        assert values[name] == default_of(config, name), (command, name, values[name])


def test_options_take_choices_by_value_and_refuse_out_of_range_with_status_2(tmp_path):
    args = build_parser().parse_args(["predict", "--input", "a.tif", "--model", "m", "--output", "o.tif",
                                      "--views", "8", "--stride", "0", "--device", "cpu"])
    assert args.views == 8 and args.device == "cpu"
    assert spec_values(args, PredictConfig)["stride"] is None  # 0 = automatic, as in Processing
    for bad in (["--views", "3"], ["--batch-size", "0"], ["--device", "tpu"], ["--bogus"], ["--min-region", "-1"]):
        res = geoml("predict", "--input", "a.tif", "--model", "m", "--output", tmp_path / "o.tif", *bad)
        assert res.returncode == 2, (bad, res.stderr)
        assert "usage: geoml" in res.stderr and "error:" in res.stderr and "Traceback" not in res.stderr
    res = geoml("finetune", "--input", "a.tif", "--labels", "l.gpkg", "--output-model", "m",
                "--validation-fraction", "1")
    assert res.returncode == 2 and "below 1" in res.stderr
    res = geoml("finetune", "--input", "a.tif", "--labels", "l.gpkg", "--output-model", "m", "--patch-size", "4")
    assert res.returncode == 2 and "must be from 8 to 1024, or 0 for automatic" in res.stderr  # 0 is valid here
    assert geoml().returncode == 2  # no command


def test_predict_end_to_end_json_keeps_georeference(scene, sample_model, tmp_path):
    out, conf = tmp_path / "classes.tif", tmp_path / "conf.tif"
    res = geoml("predict", "--input", scene.image, "--model", sample_model, "--output", out,
                "--output-confidence", conf, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)  # stdout holds only the JSON; the log went to stderr
    assert result["output_path"] == str(out) and result["confidence_path"] == str(conf)
    assert result["task"] == "segmentation" and sum(result["class_counts"].values()) == result["valid_pixels"] > 0
    src, ds = gdal.Open(scene.image), gdal.Open(str(out))
    assert ds.GetGeoTransform() == src.GetGeoTransform() and ds.GetProjection() == src.GetProjection()
    assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)
    assert set(np.unique(ds.ReadAsArray())) <= {0, 1, 2, 3, 4} and os.path.exists(conf)
    # without --json: readable lines on stdout, no JSON
    res = geoml("predict", "--input", scene.image, "--model", sample_model, "--output", tmp_path / "b.tif",
                "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert f"output_path: {tmp_path / 'b.tif'}" in res.stdout and not res.stdout.lstrip().startswith("{")
    # a minimum region: the log says so, and the map's classes are still the model's
    res = geoml("predict", "--input", scene.image, "--model", sample_model, "--output", tmp_path / "c.tif",
                "--device", "cpu", "--min-region", "50", "--json")
    assert res.returncode == 0, res.stderr
    assert "Regions under 50 px took the class of their largest neighbour." in res.stderr
    c = gdal.Open(str(tmp_path / "c.tif")).ReadAsArray()
    assert set(np.unique(c)) <= {0, 1, 2, 3, 4}
    assert json.loads(res.stdout)["class_counts"] == {k: int(v) for k, v in zip(
        result["class_counts"], np.bincount(c.ravel(), minlength=5)[1:])}


def test_missing_raster_is_status_1_with_the_message_and_no_traceback(sample_model, tmp_path):
    res = geoml("predict", "--input", tmp_path / "nope.tif", "--model", sample_model, "--output", tmp_path / "o.tif")
    assert res.returncode == 1
    assert res.stderr.startswith("geoml: error: ") and "nope.tif" in res.stderr
    assert "Traceback" not in res.stderr and not os.path.exists(tmp_path / "o.tif")
    res = geoml("predict", "--input", tmp_path / "nope.tif", "--model", sample_model, "--output", tmp_path / "o.tif",
                "--debug")
    assert res.returncode == 1 and "Traceback" in res.stderr


def test_info_describes_a_model_without_loading_it(sample_model):
    res = geoml("info", sample_model, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["format"] == "geoml-model" and info["task"] == "segmentation" and len(info["classes"]) >= 2
    text = geoml("info", sample_model)
    assert text.returncode == 0 and "segmentation" in text.stdout and "description:" in text.stdout
    bad = geoml("info", ROOT / "README.md")
    assert bad.returncode == 1 and "not a GeoML model file" in bad.stderr


def test_version_and_diagnostics():
    from geoml_plugin import __version__

    res = geoml("version", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["geoml"] == __version__
    res = geoml("diagnostics", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["device"].startswith("Device: CPU") and "torch" in report["libraries"]
    assert report["torchrun"] == "not started by torchrun"


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    d = tmp_path_factory.mktemp("cliblocks")
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 2, (6, 6))
    img = np.kron(100 + 60 * cls, np.ones((16, 16)))[None].repeat(3, 0).astype(np.float32)
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    raster = write_raster(d / "blocks.tif", img)
    pts = [(i * 16 + 8, j * 16 + 8, ["dark", "bright"][cls[i, j]]) for i in range(6) for j in range(6)]
    return raster, write_points(d / "blocks.gpkg", pts)


def test_finetune_end_to_end_then_info_and_predict(blocks, tmp_path):
    raster, labels = blocks
    res = geoml("finetune", "--input", raster, "--labels", labels, "--label-field", "label", "--output-model",
                tmp_path / "m", "--patch-size", 16, "--batch-size", 8, "--epochs", 2, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    model = tmp_path / "m.safetensors"  # the extension added, as in Processing
    assert result["model_path"] == str(model) and model.exists()
    assert result["class_names"] == ["bright", "dark"] and "overall_accuracy" in result["metrics"]
    info = json.loads(geoml("info", "--model", model, "--json").stdout)
    assert info["patch_size"] == 16 and [c["name"] for c in info["classes"]] == ["bright", "dark"]
    res = geoml("predict", "--input", raster, "--model", model, "--output", tmp_path / "map.tif", "--stride", 8)
    assert res.returncode == 0, res.stderr and (tmp_path / "map.tif").exists()


def test_messages_name_the_command_lines_options_not_processings():
    opts = {"--weights", "--download-weights", "--no-download-weights", "--backbone"}
    text = ("Allow the download (DOWNLOAD_WEIGHTS=yes, or answer Yes in the Fine-tune dialog); or choose WEIGHTS=none. "
            "Choose BACKBONE=resnet18, or WEIGHTS=none / imagenet. DOWNLOAD_WEIGHTS=no. Keep TILED=YES.")
    assert as_options(text, opts) == (
        "Allow the download (--download-weights, or answer Yes in the Fine-tune dialog); or choose --weights none. "
        "Choose --backbone resnet18, or --weights none / imagenet. --no-download-weights. Keep TILED=YES.")


def test_missing_pretrained_weights_offline_is_status_1_in_the_command_lines_words(blocks, tmp_path):
    raster, labels = blocks
    res = geoml("finetune", "--input", raster, "--labels", labels, "--label-field", "label", "--output-model",
                tmp_path / "m.safetensors", "--backbone", "resnet18", "--weights", "imagenet", "--patch-size", 32,
                "--epochs", 1, TORCH_HOME=str(tmp_path / "torch"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "resnet18-f37072fd.pth" in res.stderr and str(tmp_path / "torch" / "hub" / "checkpoints") in res.stderr
    assert "(--download-weights, or" in res.stderr and "choose --weights none." in res.stderr
    assert "DOWNLOAD_WEIGHTS" not in res.stderr and not (tmp_path / "m.safetensors").exists()


def _wait_for(proc, text: str, timeout: float = 120.0) -> str:
    """Lines of ``proc``'s stdout until one holds ``text``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"'{text}' never came: {''.join(seen)} {proc.stderr.read() if proc.poll() else ''}")


def test_ctrl_c_cancels_finetune_and_leaves_no_file(blocks, tmp_path):
    raster, labels = blocks
    out = tmp_path / "out"
    out.mkdir()
    proc = start("finetune", "--input", raster, "--labels", labels, "--label-field", "label", "--output-model",
                 out / "m.safetensors", "--output-report", out / "r.html", "--patch-size", 16, "--batch-size", 8,
                 "--epochs", 500, "--device", "cpu")
    try:
        _wait_for(proc, "epoch 2/")  # training, the model not written yet
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Cancelled: no output was written." in err and "Traceback" not in err
    assert os.listdir(out) == [] and leftovers(out) == []


def test_torchrun_predict_shards_and_equals_one_process(scene, sample_model, tmp_path):
    """``torchrun --nproc-per-node 2 geoml predict …``: the job shares the tiles (2 gloo processes), the output
    is the one-process output, and only rank 0 prints the result."""
    import socket

    one = tmp_path / "one.tif"
    assert geoml("predict", "--input", scene.image, "--model", sample_model, "--output", one,
                 "--device", "cpu", "-q").returncode == 0
    script = tmp_path / "geoml_blocked.py"
    script.write_text(BLOCKED_MAIN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = tmp_path / "two.tif"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                          "--master-addr=127.0.0.1", f"--master-port={port}", str(script), "predict", "--input",
                          scene.image, "--model", sample_model, "--output", two, "--device", "cpu", "--json"],
                         capture_output=True, text=True, env=dict(env(), LOGLEVEL="ERROR"), cwd=str(ROOT),
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count('"output_path"') == 1 and json.loads(res.stdout)["output_path"] == str(two)
    a, b = gdal.Open(str(one)).ReadAsArray(), gdal.Open(str(two)).ReadAsArray()
    assert np.array_equal(a, b) and leftovers(tmp_path) == []


def test_traingan_then_generate(tmp_path):
    dem = write_raster(tmp_path / "dem.tif", np.random.default_rng(0).normal(100, 10, (1, 96, 96)).astype(np.float32))
    res = geoml("traingan", "--input", dem, "--output-model", tmp_path / "gan", "--iterations", 2, "--tile-size", 32,
                "--batch-size", 2, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["task"] == "generation" and (tmp_path / "gan.safetensors").exists()
    res = geoml("generate", "--model", tmp_path / "gan.safetensors", "--output", tmp_path / "gen.tif",
                "--center", "500400,5099600", "--tiles", "2x1", "--tile-size", 32, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    ds = gdal.Open(str(tmp_path / "gen.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (64, 32) and "32632" in ds.GetProjection()


def test_metatrain_then_fewshot(tmp_path):
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 3, (8, 8))
    img = np.kron(100 + 60 * cls, np.ones((16, 16)))[None].repeat(3, 0).astype(np.float32)
    raster = write_raster(tmp_path / "b.tif", img + rng.normal(0, 15, img.shape).astype(np.float32))
    labels = write_points(tmp_path / "b.gpkg", [(i * 16 + 8, j * 16 + 8, "abc"[cls[i, j]])
                                                for i in range(8) for j in range(8)])
    res = geoml("metatrain", "--input", raster, "--labels", labels, "--label-field", "label", "--output-model",
                tmp_path / "meta.safetensors", "--ways", 2, "--shots", 2, "--query", 2, "--iterations", 2,
                "--patch-size", 16, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["classes"] == ["a", "b", "c"]
    res = geoml("fewshot", "--input", raster, "--model", tmp_path / "meta.safetensors", "--support", labels,
                "--label-field", "label", "--output", tmp_path / "fs.tif", "--adapt-steps", 0, "--device", "cpu",
                "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["output_path"] == str(tmp_path / "fs.tif") and sorted(result["class_counts"]) == ["a", "b", "c"]


def test_command_line_of_a_config_runs_that_config():
    """``command_line`` (Copy as command line) and the parser are inverse: every non-default setting survives."""
    import shlex

    from geoml_plugin.cli.command_line import command_line
    from geoml_plugin.cli.commands import BUILDERS

    configs = {
        "predict": PredictConfig("my scene.tif", "m.safetensors", "out.tif", confidence_path="c.tif", device="cpu",
                                 batch_size=4, stride=3, views=8, overlap=0, bands="3,2,1", cog=True),
        "finetune": FinetuneConfig("s.tif", "l.gpkg", label_field="class", output_model="m.safetensors",
                                   input_bands=[1, 3], task="segmentation", backbone="resnet18", weights="imagenet",
                                   weight_bands=["B04", "-"], epochs=3, learning_rate=0.0005, augment=False,
                                   download_weights=True, validation_fraction=0.25, max_raster_samples=50,
                                   checkpoint_dir="ck", resume=True, checkpoint_every=50, device="cuda"),
        "metatrain": MetaTrainConfig(["a.tif", "b.tif"], "l.gpkg", "class", "meta.safetensors", algorithm="maml",
                                     ways=3, inner_lr=0.05, backbone="resnet18", seed=7, checkpoint_dir="ck",
                                     checkpoint_every=100, resume=True),
        "fewshot": FewShotConfig("r.tif", "meta.safetensors", "o.tif", support="p.gpkg", label_field="k",
                                 confidence_path="c.tif", output_model="a.safetensors", adapt_steps=0, views=4),
        "traingan": GanTrainConfig("dem.tif", "g.safetensors", target_path="t.tif", report_path="r.png",
                                   bands="1", iterations=5, architecture="wgan_gp",
                                   l1_weight=10.0, checkpoint_dir="gck", resume=True),
        "generate": GenerateConfig("g.safetensors", "o.tif", center=(500.0, 600.5), tiles=(3, 2), pixel_size=2.5,
                                   style="hillshade", scene_normalisation=True, seed=4),
    }
    for command, cfg in configs.items():
        line = command_line(command, cfg)
        assert line.startswith(f"geoml {command} ")
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert BUILDERS[command](args) == cfg, (command, line)
    assert "'my scene.tif'" in command_line("predict", configs["predict"])
    assert " --views 8" in command_line("predict", configs["predict"])
    assert "--no-augment" in command_line("finetune", configs["finetune"])
    assert "--checkpoint-every 50" in command_line("finetune", configs["finetune"])
    with pytest.raises(InputError, match="--checkpoint-every needs --checkpoint-dir"):
        BUILDERS["finetune"](build_parser().parse_args(["finetune", "--input", "s.tif", "--labels", "l.gpkg",
                                                        "--output-model", "m", "--checkpoint-every", "5"]))
    assert "--extra-inputs b.tif" in command_line("metatrain", configs["metatrain"])
    assert command_line("predict", PredictConfig("a.tif", "m", "o.tif")) == "geoml predict --input a.tif --model m --output o.tif"


def test_predict_an_extent_and_a_folder_of_rasters(scene, sample_model, tmp_path):
    src = gdal.Open(scene.image)
    x0, px, _, y0, _, py = src.GetGeoTransform()
    extent = f"{x0 + 10 * px},{y0 + 50 * py},{x0 + 40 * px},{y0 + 20 * py}"  # columns 10-40, rows 20-50
    res = geoml("predict", "--input", scene.image, "--model", sample_model, "--output", tmp_path / "part.tif",
                "--extent", extent, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    ds = gdal.Open(str(tmp_path / "part.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (30, 30)
    assert ds.GetGeoTransform()[0] == x0 + 10 * px and ds.GetGeoTransform()[3] == y0 + 20 * py
    # the dialog's "map view only" (a pixel window) as a command line: the same --extent, the same window
    from geoml_plugin.cli.command_line import command_args
    from geoml_plugin.cli.commands import build_predict
    from geoml_plugin.core.raster.io import raster_info, window_from_extent

    args = command_args("predict", PredictConfig(scene.image, sample_model, "o.tif", window=(10, 20, 30, 30)))
    extent = args[args.index("--extent") + 1]
    assert build_parser().parse_args(args).extent == tuple(float(v) for v in extent.split(","))
    assert window_from_extent(raster_info(scene.image), *map(float, extent.split(","))) == (10, 20, 30, 30)
    assert build_predict(build_parser().parse_args(args)).window is None  # set by the run from --extent
    scenes, maps = tmp_path / "scenes", tmp_path / "maps"
    scenes.mkdir()
    maps.mkdir()
    for name in ("a.tif", "b.tif"):
        gdal.Translate(str(scenes / name), src, srcWin=[0, 0, 48, 40])
    res = geoml("predict", "--input", scenes, "--model", sample_model, "--output", maps, "--confidence",
                "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    assert [r["output_path"] for r in json.loads(res.stdout)] == [str(maps / "a.tif"), str(maps / "b.tif")]
    rasters = sorted(f for f in os.listdir(maps) if f.endswith(".tif"))
    assert rasters == ["a.tif", "a_confidence.tif", "b.tif", "b_confidence.tif"] and leftovers(maps) == []


def test_weights_lists_the_catalogue_and_refuses_an_unknown_name(tmp_path):
    from geoml_plugin.core.finetune.weights_catalog import CATALOGUE

    run = lambda *a: subprocess.run([sys.executable, "-c", BLOCKED_MAIN, "weights", *a], capture_output=True,  # noqa: E731
                                    text=True, env=dict(env(), TORCH_HOME=str(tmp_path)), cwd=str(ROOT), timeout=120)
    res = run("list")
    assert res.returncode == 0, res.stderr
    assert str(tmp_path) in res.stdout
    for e in CATALOGUE:
        assert e.name in res.stdout
    assert "cached " not in res.stdout.replace("not cached", "")  # an empty cache: nothing is cached
    res = run("download", "no_such_weights")
    assert res.returncode == 1 and "Unknown weights 'no_such_weights'" in res.stderr and "resnet18_imagenet" in res.stderr
    assert not any(tmp_path.rglob("*.pth"))
    assert run("--help").returncode == 0

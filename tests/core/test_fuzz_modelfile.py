"""Fuzzing model files (seeded, a few seconds): damaged or hostile files end in a GeoML error or a correct model.

Never a crash, a traceback of another class, or an allocation the file's size does not bound
(a file's metadata cannot make GeoML build a network larger than the weights it holds).
"""
import inspect
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoml_plugin.core.errors import GeoMLError, ModelFileError
from geoml_plugin.core.modelfile import ModelMetadata, load_model, read_metadata, save_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.models.arch_args import ARCH_ARGS
from geoml_plugin.core.models.registry import _BUILDERS, available_architectures
from geoml_plugin.core.raster.classes import make_classes

ROOT = Path(__file__).resolve().parents[2]


def _meta(**kw):
    base = dict(architecture="small_cnn", arch_args={"in_bands": 3, "num_outputs": 3, "widths": [4, 4, 4, 4]},
                task="classification", output="patch", in_bands=3, patch_size=16, norm_mean=[1, 2, 3],
                norm_std=[1, 1, 2], classes=make_classes(["a", "b", "c"]))
    base.update(kw)
    return ModelMetadata(**base)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    torch.manual_seed(0)
    meta = _meta()
    path = tmp_path_factory.mktemp("fuzz") / "good.safetensors"
    return save_model(str(path), build_model(meta.architecture, **meta.arch_args), meta)


def _parts(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, json.loads(raw[8 : 8 + n])


def _write(path, header: dict, body: bytes) -> str:
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(hb)) + hb + body)
    return str(path)


def _with_meta(good, path, change) -> str:
    """``good`` with its GeoML metadata dict passed through ``change`` (which edits it in place)."""
    raw, n, header = _parts(good)
    md = json.loads(header["__metadata__"]["geoml"])
    change(md)
    header["__metadata__"] = {"geoml": json.dumps(md)}
    return _write(path, header, raw[8 + n :])


def _outcome(path) -> str:
    """'ok' when the file loads into a network that runs, else the GeoML error class; anything else fails."""
    try:
        model, meta = load_model(str(path))
    except GeoMLError as exc:
        assert str(exc).strip(), "a GeoML error must carry a message"
        return type(exc).__name__
    with torch.no_grad():
        out = model(torch.zeros(1, meta.in_bands, meta.patch_size, meta.patch_size))
    assert out.shape[1] == meta.arch_args["num_outputs"]
    return "ok"


def test_the_table_of_architecture_arguments_matches_every_builder():
    """Every registered architecture has its arguments in arch_args.ARCH_ARGS, named as its builder names them,
    required exactly where the builder has no default: a new architecture cannot skip the checks."""
    for name in available_architectures():
        assert name in ARCH_ARGS, f"{name} has no argument table"
        params = inspect.signature(_BUILDERS[name]).parameters
        assert set(params) == set(ARCH_ARGS[name]), name
        for arg, p in params.items():
            assert ARCH_ARGS[name][arg][1] == (p.default is inspect.Parameter.empty), (name, arg)


def test_truncated_at_many_offsets(good, tmp_path):
    raw, n, _ = _parts(good)
    rng = np.random.default_rng(18)
    offsets = {0, 1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1, len(raw) - 1}
    offsets |= set(rng.integers(0, len(raw), 60).tolist())
    for off in sorted(offsets):
        p = tmp_path / "cut.safetensors"
        p.write_bytes(raw[:off])
        assert _outcome(p) in ("ModelFileError", "InputError"), off
        if off >= 8 + n:  # the header is whole: the metadata still reads, the weights do not
            assert read_metadata(str(p)).architecture == "small_cnn"


def test_random_bytes_in_the_header(good, tmp_path):
    raw, n, _ = _parts(good)
    rng = np.random.default_rng(1)
    outcomes = set()
    for i in range(150):
        data = bytearray(raw)
        for pos in rng.integers(8, 8 + n, int(rng.integers(1, 6))):
            data[pos] = int(rng.integers(0, 256))
        p = tmp_path / f"h{i}.safetensors"
        p.write_bytes(bytes(data))
        outcomes.add(_outcome(p))
        p.unlink()
    assert outcomes <= {"ok", "ModelFileError"} and "ModelFileError" in outcomes


def test_random_bytes_in_the_body_give_a_working_model(good, tmp_path):
    """The tensor bytes are just numbers: any bytes there make a model (perhaps a bad one) of the right shapes."""
    raw, n, _ = _parts(good)
    rng = np.random.default_rng(2)
    for i in range(20):
        data = bytearray(raw)
        for pos in rng.integers(8 + n, len(raw), 50):
            data[pos] = int(rng.integers(0, 256))
        p = tmp_path / f"b{i}.safetensors"
        p.write_bytes(bytes(data))
        assert _outcome(p) == "ok"


def test_header_lengths_from_0_to_2_64(good, tmp_path):
    raw, n, _ = _parts(good)
    rng = np.random.default_rng(3)
    lengths = {0, 1, 2, 7, 8, n - 1, n + 1, n + 8, len(raw) - 8, len(raw) - 7, len(raw), 2**31, 2**32, 2**63,
               2**64 - 1} | {int(v) for v in rng.integers(0, 2**63, 20, dtype=np.int64)}
    for length in sorted(lengths):
        p = tmp_path / "len.safetensors"
        p.write_bytes(struct.pack("<Q", length) + raw[8:])
        assert _outcome(p) == "ModelFileError", length
    assert _outcome(good) == "ok"


WRONG_VALUES = [None, True, False, -1, 0, 1, 2**70, 1.5, float("nan"), float("inf"), "", "x", "<b>3</b>", [], [None],
                [1, "a"], {}, {"a": 1}, [[1]] * 3]


def _fields(good):
    return json.loads(_parts(good)[2]["__metadata__"]["geoml"])


def test_every_metadata_field_of_every_wrong_type(good, tmp_path):
    """Each top-level field, target/extra entry and class attribute set to values of every JSON type: the
    metadata reads to a usable model or is refused with a ModelFileError; loading never crashes."""
    md = _fields(good)
    edits = []
    for key in md:
        for v in WRONG_VALUES:
            edits.append(lambda m, k=key, v=v: m.__setitem__(k, v))
        edits.append(lambda m, k=key: m.pop(k))
    for key in ("mean", "std", "bands", "name", "band_names", "value_range", "nodata"):
        for v in WRONG_VALUES:
            edits.append(lambda m, k=key, v=v: m.__setitem__("target", {k: v}))
    for key in ("value", "name", "color"):
        for v in WRONG_VALUES:
            edits.append(lambda m, k=key, v=v: m["classes"][0].__setitem__(k, v))
    for v in WRONG_VALUES:
        edits.append(lambda m, v=v: m.__setitem__("extra", {"fewshot": v}))
    seen = set()
    for i, edit in enumerate(edits):
        p = _with_meta(good, tmp_path / f"f{i}.safetensors", edit)
        try:
            meta = read_metadata(p)
        except ModelFileError:
            seen.add("refused")
            continue
        # what reads must be usable by the code that describes and applies it
        meta.describe()
        meta.to_dict()
        seen.add(_outcome(p))
    assert {"refused", "ok"} <= seen
    assert len(edits) > 400


def test_every_architecture_argument_of_every_wrong_type(good, tmp_path):
    for key in ("in_bands", "num_outputs", "widths", "dropout", "unknown_argument"):
        for v in WRONG_VALUES + [[4] * 13, [5000], 60000, 2.0]:
            p = _with_meta(good, tmp_path / "a.safetensors", lambda m, k=key, v=v: m["arch_args"].__setitem__(k, v))
            valid = key == "dropout" and type(v) is int and v in (0, 1)  # a dropout of 0 or 1 is one
            assert _outcome(p) == ("ok" if valid else "ModelFileError"), (key, v)


def test_unknown_architecture_argument_is_named(good, tmp_path):
    p = _with_meta(good, tmp_path / "u.safetensors", lambda m: m["arch_args"].update(stochastic_depth=0.1))
    with pytest.raises(ModelFileError, match="does not know: 'stochastic_depth'"):
        read_metadata(p)


def test_metadata_asking_for_50_million_outputs_is_refused_without_allocating(good, tmp_path):
    p = _with_meta(good, tmp_path / "big.safetensors", lambda m: m["arch_args"].update(num_outputs=50_000_000))
    with pytest.raises(ModelFileError, match="num_outputs"):
        load_model(p)


@pytest.mark.parametrize("args, what", [
    ({"num_outputs": 60000}, "tensor 'head.2.weight' is 3×4 in the file.*make it 60000×4"),
    ({"widths": [4096] * 8}, r"lacks \d+ tensor"),
    ({"widths": [4, 4, 4]}, r"has \d+ tensor\(s\) the network does not have"),
    ({"in_bands": 4}, "takes 4 band"),
])
def test_shapes_that_disagree_with_the_weights(good, tmp_path, args, what):
    p = _with_meta(good, tmp_path / "s.safetensors", lambda m: m["arch_args"].update(args))
    with pytest.raises(ModelFileError, match=what):
        load_model(p)


def test_tensor_entries_that_disagree_with_their_bytes(good, tmp_path):
    raw, n, header = _parts(good)
    body = raw[8 + n :]
    name = "head.2.weight"
    cases = {
        "transposed": {"shape": list(reversed(header[name]["shape"]))},
        "larger": {"shape": [3, 4000]},
        "negative": {"shape": [-3, -4]},
        "float shape": {"shape": [3.0, 4.0]},
        "dtype": {"dtype": "F128"},
        "offsets past the end": {"data_offsets": [len(body), len(body) + 48]},
        "overlapping": {"data_offsets": [0, 48]},
        "not a list": {"data_offsets": "0-48"},
    }
    for what, change in cases.items():
        h = json.loads(json.dumps(header))
        h[name].update(change)
        p = _write(tmp_path / "t.safetensors", h, body)
        with pytest.raises(ModelFileError, match="damaged|do not fit"):
            load_model(p), what


def test_deeply_nested_or_huge_json_is_refused(tmp_path):
    for text in ("[" * 100_000 + "]" * 100_000, '{"__metadata__": {"geoml": "' + "[" * 50_000 + '"}}',
                 '{"a": ' + "9" * 10_000 + "}"):
        p = tmp_path / "n.safetensors"
        hb = text.encode()
        p.write_bytes(struct.pack("<Q", len(hb)) + hb)
        with pytest.raises(ModelFileError):
            read_metadata(str(p))


MEMORY_PROBE = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
from geoml_plugin.core.errors import ModelFileError
from geoml_plugin.core.modelfile import load_model
from geoml_plugin.core.models import available_architectures
available_architectures()
load_model(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[2])
    print(json.dumps({"error": None}))
except ModelFileError as exc:
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"error": str(exc), "grew_mb": (after - before) / 1024}))
"""


def test_loading_a_file_asking_for_a_300_mb_network_allocates_nothing(good, tmp_path):
    """Metadata asking for a network of ~300 MB (widths 1024) beside a few kB of weights: the network is
    checked without memory, so the peak memory of the process does not grow (building it first did grow it
    by ~300 MB). Run in a fresh process, whose peak memory is not that of the other tests."""
    p = _with_meta(good, tmp_path / "wide.safetensors", lambda m: m["arch_args"].update(widths=[1024] * 4))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT), p, good], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["error"] and "do not fit" in res["error"]
    assert res["grew_mb"] < 50, res
    assert os.path.getsize(p) < 64 * 1024
    assert math.isfinite(res["grew_mb"])


def test_the_tile_generator_and_transfer_weights_check_the_file_too(tmp_path):
    """Generate and the tile map tool (TileSource) and Fine-tune's transfer weights load through the same check:
    a generator whose metadata asks for another latent size, and a transfer source whose head was changed, are
    model-file messages saying what does not fit."""
    from geoml_plugin.core.finetune.weights import check_transfer_source
    from geoml_plugin.core.gan.generate import TileSource

    args = {"out_bands": 1, "nz": 4, "widths": [8, 4]}
    meta = ModelMetadata(architecture="tile_generator", arch_args=args, task="generation", output="image", in_bands=0,
                     patch_size=16, target={"name": "height", "units": "m", "mean": [100.0], "std": [10.0],
                                            "bands": 1})
    gen = save_model(str(tmp_path / "gen.safetensors"), build_model("tile_generator", **args), meta)
    assert TileSource(gen, "cpu").bands == 1
    bigger = _with_meta(gen, tmp_path / "gen_big.safetensors", lambda m: m["arch_args"].update(nz=4096))
    with pytest.raises(ModelFileError, match="do not fit architecture 'tile_generator'.*4096"):
        TileSource(bigger, "cpu")

    args = {"in_bands": 3, "num_outputs": 3}
    meta = _meta(architecture="small_resnet", arch_args=args)
    src = save_model(str(tmp_path / "src.safetensors"), build_model("small_resnet", **args), meta)
    assert check_transfer_source(src, "small_resnet", 3).architecture == "small_resnet"
    changed = _with_meta(src, tmp_path / "changed.safetensors", lambda m: m["arch_args"].update(num_outputs=9))
    with pytest.raises(ModelFileError, match="do not fit"):
        check_transfer_source(changed, "small_resnet", 3)


def test_small_resnet_stage_widths_are_checked_and_must_fit_the_tensors(tmp_path):
    """Fine-tune's wider classifiers name their four stage widths; a file naming other widths is refused with the
    argument named (no network built from it), and widths that disagree with the tensors are refused too."""
    args = {"in_bands": 3, "num_outputs": 3, "widths": [8, 16, 24, 32]}
    meta = _meta(architecture="small_resnet", arch_args=args)
    src = save_model(str(tmp_path / "w.safetensors"), build_model("small_resnet", **args), meta)
    assert load_model(src)[0].backbone.channels == [8, 16, 24, 32]
    for bad in ([8, 16, 24], [8, 16, 24, 32, 64], [8, 16, 0, 32], "wide"):
        p = _with_meta(src, tmp_path / "b.safetensors", lambda m, v=bad: m["arch_args"].update(widths=v))
        with pytest.raises(ModelFileError, match="widths"):
            read_metadata(p)
    p = _with_meta(src, tmp_path / "c.safetensors", lambda m: m["arch_args"].update(widths=[8, 16, 24, 40]))
    with pytest.raises(ModelFileError):
        load_model(p)

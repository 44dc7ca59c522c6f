import json
import os
import struct
from pathlib import Path

import pytest
import torch

from geoml_plugin.core.errors import InputError, ModelFileError
from geoml_plugin.core.modelfile import ModelMetadata, load_model, read_metadata, save_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.raster.classes import make_classes


def _meta(**kw):
    base = dict(architecture="small_cnn", arch_args={"in_bands": 5, "num_outputs": 3, "widths": [8, 8, 8, 8]},
                task="classification", output="patch", in_bands=5, patch_size=32,
                norm_mean=[1, 2, 3, 4, 5], norm_std=[1, 1, 2, 2, 3], classes=make_classes(["a", "b", "c"]),
                metrics={"overall_accuracy": 0.9}, provenance={"source": "x.tif"})
    base.update(kw)
    return ModelMetadata(**base)


def test_round_trip_weights_and_metadata(tmp_path):
    torch.manual_seed(0)
    meta = _meta()
    model = build_model(meta.architecture, **meta.arch_args).eval()
    p = save_model(str(tmp_path / "m.safetensors"), model, meta)
    meta2 = read_metadata(p)
    assert meta2.to_dict() == meta.to_dict()
    model2, _ = load_model(p)
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model2(x))
    assert [c.name for c in meta2.classes] == ["a", "b", "c"]


def test_refuses_pickles_without_unpickling(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2)}, p)  # zip-based pickle
    with pytest.raises(ModelFileError, match="never loads pickles"):
        read_metadata(str(p))
    import pickle

    p2 = tmp_path / "evil.pkl"
    p2.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(str(p2))


@pytest.mark.parametrize("low_bytes", [0x80, 0x4B50])  # what pickle magic ("\\x80", "PK") starts with
def test_a_model_whose_header_length_looks_like_pickle_magic_still_loads(tmp_path, low_bytes):
    """The safetensors header length is the file's first 8 bytes; 1 model in 256 has a length
    whose first byte is 0x80. Such a model must not be taken for a pickle."""
    meta = _meta()
    p = save_model(str(tmp_path / "m.safetensors"), build_model(meta.architecture, **meta.arch_args), meta)
    data = Path(p).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    mask = 0xFF if low_bytes < 0x100 else 0xFFFF
    pad = (low_bytes - n) % (mask + 1)  # safetensors allows trailing spaces in the header
    Path(p).write_bytes(struct.pack("<Q", n + pad) + data[8:8 + n] + b" " * pad + data[8 + n:])
    assert Path(p).read_bytes()[:1 if mask == 0xFF else 2] == (b"\x80" if mask == 0xFF else b"PK")
    assert read_metadata(p).to_dict() == meta.to_dict()
    load_model(p)


def test_refuses_other_files(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello world, not a model")
    with pytest.raises(ModelFileError, match="not a GeoML model"):
        read_metadata(str(junk))
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="no GeoML metadata"):
        read_metadata(str(plain))
    with pytest.raises(InputError, match="does not exist"):
        read_metadata(str(tmp_path / "missing.safetensors"))
    with pytest.raises(InputError, match="is a folder, not a model file"):
        read_metadata(str(tmp_path))


def test_weights_of_wrong_shape_are_refused(tmp_path):
    meta = _meta()
    model = build_model(meta.architecture, **meta.arch_args)
    p = save_model(str(tmp_path / "m.safetensors"), model, meta)
    # rewrite the header claiming a different architecture argument
    raw = open(p, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    md = json.loads(header["__metadata__"]["geoml"])
    md["arch_args"]["num_outputs"] = 7
    header["__metadata__"]["geoml"] = json.dumps(md)
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n :])
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(str(bad))


def test_newer_format_is_refused(tmp_path):
    d = _meta().to_dict()
    d["format_version"] = 99
    with pytest.raises(ModelFileError, match="newer GeoML"):
        ModelMetadata.from_dict(d)


def test_save_is_atomic(tmp_path):
    meta = _meta()
    with pytest.raises(InputError):
        save_model(str(tmp_path / "nope" / "m.safetensors"), build_model("small_cnn", **meta.arch_args), meta)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_model_is_readable_by_others_like_other_outputs(tmp_path):
    """safetensors writes its file owner-only (0600): a model saved in a shared folder could not be used by a
    colleague, while the reports and rasters beside it can."""
    meta = _meta()
    p = save_model(str(tmp_path / "m.safetensors"), build_model("small_cnn", **meta.arch_args), meta)
    assert os.stat(p).st_mode & 0o777 == 0o644


@pytest.mark.parametrize("arch, args, task, output", [
    ("pixel_linear", {"in_bands": 4, "out_channels": 3}, "segmentation", "dense"),
    ("small_cnn", {"in_bands": 4, "num_outputs": 3}, "classification", "patch"),
    ("small_fcn", {"in_bands": 4, "num_classes": 3}, "segmentation", "dense"),
    ("small_resnet", {"in_bands": 4, "num_outputs": 3}, "classification", "patch"),
    ("resnet18", {"in_bands": 4, "num_outputs": 3}, "classification", "patch"),
    ("resnet34", {"in_bands": 1, "num_outputs": 3}, "classification", "patch"),
    ("resnet50", {"in_bands": 13, "num_outputs": 3}, "classification", "patch"),
    ("unet", {"backbone": "small_resnet", "in_bands": 4, "num_outputs": 3}, "segmentation", "dense"),
    ("unet", {"backbone": "small_resnet", "in_bands": 4, "num_outputs": 3, "full_res": True}, "segmentation", "dense"),
    ("unet", {"backbone": "resnet50", "in_bands": 4, "num_outputs": 3}, "segmentation", "dense"),
    ("meta_classifier", {"in_bands": 4, "num_classes": 3, "views": 8, "pool_blocks": 2, "max_pool": True},
     "classification", "patch"),
    ("meta_classifier", {"in_bands": 4, "num_classes": 3, "backbone": "resnet18", "normalize": True},
     "classification", "patch"),
    ("unet_translator", {"in_bands": 4, "out_bands": 2}, "translation", "dense"),
])
def test_every_architecture_passes_the_memory_free_check(arch, args, task, output):
    """The check run before every load (network built and one patch run on the meta device) accepts a valid
    model of every architecture, for the patch sizes GeoML trains (a missing meta kernel would refuse it)."""
    from geoml_plugin.core.modelfile import _check_forward, check_metadata_fields

    for patch in (32, 64, 224):
        meta = ModelMetadata(architecture=arch, arch_args=args, task=task, output=output, in_bands=args["in_bands"],
                         patch_size=patch, classes=make_classes(["a", "b", "c"]) if task != "translation" else [],
                         target={"bands": args["out_bands"]} if task == "translation" else {})
        check_metadata_fields(meta.to_dict())
        with torch.device("meta"):
            net = build_model(arch, **args)
        _check_forward(net.eval(), meta, "m.safetensors")
    meta.classes = make_classes(["a", "b"])
    if task != "translation":
        with pytest.raises(ModelFileError, match="gives 3 class score"):
            _check_forward(net, meta, "m.safetensors")
    else:
        meta.target["bands"] = 3
        with pytest.raises(ModelFileError, match="gives 2 value"):
            _check_forward(net, meta, "m.safetensors")

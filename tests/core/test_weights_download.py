"""Weights downloads from a loopback server: progress, resume, cancel, checksum, proxies, consent, offline message."""
import dataclasses
import os

import numpy as np
import pytest

from geoml_plugin.core.errors import InputError, JobCancelled
from geoml_plugin.core.finetune import weights_catalog
from geoml_plugin.core.finetune.download import ChecksumError, download_file
from geoml_plugin.core.progress import Feedback
from tests.weights_server import WeightsServer, state_bytes, torchvision_state

DATA = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()  # 3 MB, a dozen chunks


@pytest.fixture
def server():
    with WeightsServer() as s:
        yield s


def test_download_reports_progress_and_caches_the_verified_file(server, tmp_path):
    url, prefix = server.add("w.pth", DATA)
    dest = tmp_path / "cache" / os.path.basename(url)
    seen, lines = [], []
    out = download_file(url, str(dest), hash_prefix=prefix, feedback=Feedback(lambda f, m: seen.append((f, m)),
                                                                             lines.append))
    assert out == str(dest) and dest.read_bytes() == DATA
    assert os.listdir(dest.parent) == [dest.name]  # no .part left
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 5
    assert "3.0 MB of 3.0 MB" in seen[-2][1] and "checking its SHA-256" in seen[-1][1]
    assert any(url in line for line in lines)


def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    url, prefix = server.add("w.pth", DATA)
    path = "/" + url.rsplit("/", 1)[1]
    server.cut_after[path] = 1_000_000
    dest = tmp_path / "w.pth"
    with pytest.raises(InputError, match="connection broke.*resumes"):
        download_file(url, str(dest), hash_prefix=prefix)
    assert not dest.exists() and (tmp_path / "w.pth.part").stat().st_size == 1_000_000
    download_file(url, str(dest), hash_prefix=prefix)
    assert dest.read_bytes() == DATA and not (tmp_path / "w.pth.part").exists()
    assert server.requests[-1] == (path, "bytes=1000000-")


def test_a_server_that_ignores_range_gets_the_file_written_from_the_start(server, tmp_path):
    url, prefix = server.add("w.pth", DATA)
    server.ignore_range = True
    (tmp_path / "w.pth.part").write_bytes(b"stale bytes from another file")
    download_file(url, str(tmp_path / "w.pth"), hash_prefix=prefix)
    assert (tmp_path / "w.pth").read_bytes() == DATA and server.requests[-1][1] == "bytes=29-"


def test_a_complete_part_is_verified_and_renamed_without_downloading_again(server, tmp_path):
    url, prefix = server.add("w.pth", DATA)
    (tmp_path / "w.pth.part").write_bytes(DATA)  # cut just before the rename
    download_file(url, str(tmp_path / "w.pth"), hash_prefix=prefix)  # the server answers 416
    assert (tmp_path / "w.pth").read_bytes() == DATA and os.listdir(tmp_path) == ["w.pth"]


def test_cancel_stops_the_download_and_caches_nothing(server, tmp_path):
    url, prefix = server.add("w.pth", DATA)
    dest = tmp_path / "w.pth"
    calls = []
    fb = Feedback(lambda f, m: calls.append(f), is_cancelled=lambda: len(calls) >= 2)
    with pytest.raises(JobCancelled):
        download_file(url, str(dest), hash_prefix=prefix, feedback=fb)
    assert not dest.exists()
    kept = (tmp_path / "w.pth.part").stat().st_size
    assert 0 < kept < len(DATA)  # kept: a later download resumes it
    download_file(url, str(dest), hash_prefix=prefix)
    assert dest.read_bytes() == DATA and server.requests[-1][1] == f"bytes={kept}-"


def test_a_checksum_mismatch_is_refused_and_nothing_is_cached(server, tmp_path):
    url, prefix = server.add("w.pth", DATA)
    server.files["/" + url.rsplit("/", 1)[1]] = DATA[:-1] + b"x"  # tampered on the way
    dest = tmp_path / "w.pth"
    with pytest.raises(ChecksumError, match=f"not the published SHA-256 starting with {prefix}.*nothing was cached"):
        download_file(url, str(dest), hash_prefix=prefix)
    assert os.listdir(tmp_path) == []


def test_the_full_sha256_is_checked_when_given(server, tmp_path):
    import hashlib

    url, _ = server.add("w.pth", DATA)
    with pytest.raises(ChecksumError):
        download_file(url, str(tmp_path / "a.pth"), sha256="0" * 64)
    download_file(url, str(tmp_path / "b.pth"), sha256=hashlib.sha256(DATA).hexdigest())
    assert (tmp_path / "b.pth").read_bytes() == DATA


def test_the_standard_proxy_variables_are_passed_through(server, tmp_path, monkeypatch):
    """A host that does not exist, reached through the proxy in http_proxy: the loopback server is the proxy."""
    _, prefix = server.add("w.pth", DATA)
    name = next(iter(server.files))
    for var in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    url = f"http://weights.geoml-test.invalid{name}"
    download_file(url, str(tmp_path / "w.pth"), hash_prefix=prefix)
    assert (tmp_path / "w.pth").read_bytes() == DATA
    assert server.requests[-1][0] == url  # the absolute URL: a proxy request


def test_explicit_proxies_are_used(server, tmp_path, monkeypatch):
    """The plugin passes QGIS's proxy settings as ``proxies``; they win over the environment."""
    _, prefix = server.add("w.pth", DATA)
    name = next(iter(server.files))
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would fail
    url = f"http://weights.geoml-test.invalid{name}"
    download_file(url, str(tmp_path / "w.pth"), hash_prefix=prefix,
                  proxies={"http": f"http://127.0.0.1:{server.port}"})
    assert server.requests[-1][0] == url


def test_offline_message_names_file_url_checksum_and_folder(tmp_path):
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # discard port: connection refused
    with pytest.raises(InputError) as exc:
        download_file(url, str(tmp_path / "c" / "resnet18-f37072fd.pth"), hash_prefix="f37072fd")
    text = str(exc.value)
    assert "resnet18-f37072fd.pth" in text and url in text and "check that its SHA-256 starts with f37072fd" in text
    assert str(tmp_path / "c") in text


# -- consent in the fine-tuning job ------------------------------------------------------------------------
def serve_entry(server, monkeypatch, base="resnet18_imagenet", name="test_rgb", data=None):
    """A catalogue entry served by the loopback server (added to the catalogue for this test)."""
    data = data if data is not None else state_bytes(torchvision_state("resnet18"))
    url, prefix = server.add(f"{name}.pth", data)
    entry = dataclasses.replace(weights_catalog.find_entry(base), name=name, url=url, hash_prefix=prefix)
    monkeypatch.setattr(weights_catalog, "CATALOGUE", weights_catalog.CATALOGUE + (entry,))
    return entry


def test_a_job_never_downloads_unasked(server, tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
    from tests.conftest import write_raster
    from tests.core.test_finetune import write_points

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = serve_entry(server, monkeypatch)
    img = np.random.default_rng(0).normal(100, 10, (3, 64, 64)).astype(np.float32)
    raster = write_raster(tmp_path / "r.tif", img)
    labels = write_points(tmp_path / "p.gpkg", [(16, 16, "a"), (48, 48, "b"), (16, 48, "a"), (48, 16, "b")])
    cfg = FinetuneConfig(raster, labels, "label", str(tmp_path / "m.safetensors"), backbone="resnet18",
                         weights=entry.name, patch_size=16, epochs=1, batch_size=4, device="cpu",
                         validation_fraction=0.0)
    with pytest.raises(InputError, match=r"test_rgb.*may not download.*DOWNLOAD_WEIGHTS=yes.*" + entry.hash_prefix):
        run_finetune(cfg)
    assert server.requests == [] and not (tmp_path / "m.safetensors").exists()
    lines, fractions = [], []
    cfg.download_weights = True
    res = run_finetune(cfg, Feedback(lambda f, m: fractions.append((f, m)), lines.append))
    assert len(server.requests) == 1
    assert (tmp_path / "torch" / "hub" / "checkpoints" / entry.filename).is_file()
    assert any(m.startswith("downloading") for _, m in fractions) and fractions[-1][0] == 1.0
    assert any("Started from" in s and "test_rgb" in s for s in lines)
    assert res.meta.extra["pretrained"]["name"] == "test_rgb" and res.meta.provenance["weights"] == "test_rgb"


def test_command_line_lists_downloads_verifies_and_removes(server, tmp_path, monkeypatch, capsys):
    from geoml_plugin.core.finetune.weights_cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = serve_entry(server, monkeypatch)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in out and "resnet18_sentinel2_all_moco" in out
    assert main(["download", entry.name]) == 0
    assert capsys.readouterr().out.strip().endswith(entry.filename)
    assert main(["verify", entry.name]) == 0 and "OK" in capsys.readouterr().out
    assert main(["remove", entry.name]) == 0
    assert main(["verify", entry.name]) == 1 and "not cached" in capsys.readouterr().out


# -- a file downloaded by hand ------------------------------------------------------------------------------
def hand_entry(monkeypatch, tmp_path, data=DATA):
    """A catalogue entry (added for this test) whose published checksum is that of ``data``; TORCH_HOME in
    ``tmp_path``."""
    import hashlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = dataclasses.replace(weights_catalog.find_entry("resnet18_imagenet"), name="test_rgb",
                                url="http://127.0.0.1:9/test_rgb-0123abcd.pth",
                                hash_prefix=hashlib.sha256(data).hexdigest()[:8])
    monkeypatch.setattr(weights_catalog, "CATALOGUE", weights_catalog.CATALOGUE + (entry,))
    return entry


def test_a_file_downloaded_by_hand_is_recognised_checked_and_cached(tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.pretrained import add_local_file, cached_path, is_cached

    entry = hand_entry(monkeypatch, tmp_path)
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / entry.filename).write_bytes(DATA)
    got, dest = add_local_file(str(usb / entry.filename))  # by its name
    assert got.name == "test_rgb" and dest == cached_path(entry) and is_cached(entry)
    assert open(dest, "rb").read() == DATA and os.listdir(os.path.dirname(dest)) == [entry.filename]
    os.remove(dest)
    (usb / "test_rgb (1).pth").write_bytes(DATA)  # renamed by a browser: found by its checksum
    assert add_local_file(str(usb / "test_rgb (1).pth"))[0].name == "test_rgb" and is_cached(entry)


def test_a_wrong_or_unknown_file_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.pretrained import add_local_file, cache_dir

    entry = hand_entry(monkeypatch, tmp_path)
    (tmp_path / entry.filename).write_bytes(DATA[:-1])  # cut short, under the right name
    with pytest.raises(ChecksumError, match="not the published SHA-256 starting with .*of 'test_rgb'; nothing was cached"):
        add_local_file(str(tmp_path / entry.filename))
    (tmp_path / "other.pth").write_bytes(b"something else")
    with pytest.raises(InputError, match="other.pth is not a file of GeoML's weights catalogue"):
        add_local_file(str(tmp_path / "other.pth"))
    with pytest.raises(ChecksumError):  # named by hand: still checked
        add_local_file(str(tmp_path / "other.pth"), "test_rgb")
    assert not os.path.exists(cache_dir()) or os.listdir(cache_dir()) == []


def test_command_line_adds_a_file_and_the_offline_hint_says_how(tmp_path, monkeypatch, capsys):
    from geoml_plugin.core.finetune.pretrained import is_cached, missing_message
    from geoml_plugin.core.finetune.weights_cli import main

    entry = hand_entry(monkeypatch, tmp_path)
    (tmp_path / "w.pth").write_bytes(DATA)
    (tmp_path / "bad.pth").write_bytes(b"x")
    assert "Add file…" in str(missing_message(entry)) and "geoml weights add FILE" in str(missing_message(entry))
    assert main(["add", str(tmp_path / "bad.pth")]) == 1 and "not a file of" in capsys.readouterr().err
    assert not is_cached(entry)
    assert main(["add", str(tmp_path / "w.pth")]) == 0 and capsys.readouterr().out.startswith("test_rgb: added ")
    assert is_cached(entry) and main(["verify", "test_rgb"]) == 0

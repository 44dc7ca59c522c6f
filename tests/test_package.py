"""`make package`: the zip QGIS's "Install from ZIP" and plugins.qgis.org accept."""
from __future__ import annotations

import configparser
import io
import re
import sys
import zipfile
from pathlib import Path

import pytest

import geoml_plugin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import package  # noqa: E402

sys.path.pop(0)


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    staged = package.stage(d / "stage")
    return package.build_zip(staged, d / "geoml_plugin.zip")


def test_zip_passes_plugin_site_validator_rules(plugin_zip):
    assert package.validate_zip(plugin_zip) == []
    assert plugin_zip.stat().st_size < 25_000_000


def test_zip_layout_and_metadata(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"geoml_plugin"}
        for required in ("metadata.txt", "LICENSE", "__init__.py", "resources/icons/geoml.svg",
                         "resources/ui/predict_dialog.ui", "core/predict.py"):
            assert f"geoml_plugin/{required}" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        cp = configparser.ConfigParser()
        cp.optionxform = str
        cp.read_file(io.StringIO(zf.read("geoml_plugin/metadata.txt").decode()))
    md = dict(cp.items("general"))
    assert md["qgisMinimumVersion"] == "3.22" and md["qgisMaximumVersion"] == "4.99"
    assert md["hasProcessingProvider"] == "yes"
    assert "supportsQt6" not in md
    # the version model files and Diagnostics report (geoml_plugin.__version__) is the one QGIS shows
    assert re.fullmatch(r"\d+\.\d+\.\d+", md["version"]) and md["version"] == geoml_plugin.__version__
    assert md["changelog"].strip().startswith(md["version"] + " - ")
    # QGIS's Install from ZIP takes the plugin name from the first *metadata.txt in sorted order
    assert [n for n in names if n.endswith("metadata.txt")] == ["geoml_plugin/metadata.txt"]
    assert "GPL-2" in (ROOT / "LICENSE").read_text()[:200] or "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()[:200]


def test_validator_catches_what_the_site_rejects(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("my-plugin/__init__.py", "")
        zf.writestr("my-plugin/__pycache__/x.pyc", "")
        zf.writestr("my-plugin/metadata.txt", "[general]\nname=x\ntracker=http://bugs\n")
    errors = " | ".join(package.validate_zip(bad))
    for expected in ("not a Python identifier", ".pyc", "__pycache__", "missing my-plugin/LICENSE",
                     "metadata lacks email", "tracker is not a real URL"):
        assert expected in errors


def test_a_percent_sign_in_metadata_is_reported_invalid_not_a_crash(tmp_path):
    """QGIS and the plugin site read metadata.txt with configparser's interpolation: '60 %' breaks it, '%%' is fine."""
    def zip_with(changelog):
        path = tmp_path / "p.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("myplugin/__init__.py", "")
            zf.writestr("myplugin/LICENSE", "")
            zf.writestr("myplugin/metadata.txt", f"[general]\nname=x\nchangelog={changelog}\n")
        return path

    errors = package.validate_zip(zip_with("1.0: 60 % faster"))
    assert errors == ["metadata.txt has a % sign (QGIS reads it with interpolation): in changelog; write %% or "
                      "'percent'"]
    assert not any("% sign" in e for e in package.validate_zip(zip_with("1.0: 60 %% faster")))


def test_stage_leaves_out_hidden_files_editor_backups_and_caches(tmp_path, monkeypatch):
    """``make package`` runs in a working tree: .DS_Store, editor swap/backup files and tool caches stay out."""
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(ROOT / "geoml_plugin", root / "geoml_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "resources", root / "resources")
    for f in ("metadata.txt", "LICENSE", "README.md"):
        shutil.copy2(ROOT / f, root / f)
    junk = [".DS_Store", "gui/.predict_dialog.py.swp", "core/predict.py~", "core/predict.py.orig",
            ".mypy_cache/3.11/x.json", ".ipynb_checkpoints/a.ipynb", "resources/icons/.DS_Store"]
    for j in junk:
        p = root / ("geoml_plugin/" + j if not j.startswith("resources") else j)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("junk")
    monkeypatch.setattr(package, "ROOT", root)
    staged = package.stage(tmp_path / "stage")
    left = sorted(str(p.relative_to(staged)) for p in staged.rglob("*")
                  if p.name.startswith(".") or p.name.endswith(("~", ".swp", ".orig")) or ".mypy_cache" in p.parts)
    assert left == []
    assert (staged / "core" / "predict.py").is_file() and (staged / "resources" / "icons" / "geoml.svg").is_file()


def test_zip_holds_only_plugin_files(plugin_zip):
    """No data, models or large files slip in: code, Qt forms, icons, text."""
    with zipfile.ZipFile(plugin_zip) as zf:
        files = [i for i in zf.infolist() if not i.is_dir()]
    assert all(i.file_size < 1_000_000 for i in files), [i.filename for i in files if i.file_size >= 1_000_000]
    suffixes = {Path(i.filename).suffix for i in files}
    assert suffixes <= {".py", ".ui", ".svg", ".txt", ".md", ""}, suffixes

"""`make package`: the zip QGIS's "Install from ZIP" and plugins.qgis.org accept."""
from __future__ import annotations

import configparser
import io
import sys
import zipfile
from pathlib import Path

import pytest

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

"""The one set of output naming rules (core/outputs.py) that dialogs, panels and Processing share."""
import os
import tempfile

import pytest

from geoml_plugin.core.finetune.job import map_paths_for, report_path_for
from geoml_plugin.core.finetune.report import metrics_path
from geoml_plugin.core.gan.report import losses_path
from geoml_plugin.core.gan.train import report_path_for as gan_report_path_for
from geoml_plugin.core.outputs import OutputFolder, default_output, output_name, sidecar_name, temp_output_folder


@pytest.mark.parametrize("path,kind,expected", [
    ("/d/m", "model", "/d/m.safetensors"),
    ("/d/m.safetensors", "model", "/d/m.safetensors"),
    ("/d/m.SafeTensors", "model", "/d/m.SafeTensors"),
    ("/d/m.geoml", "model", "/d/m.geoml"),  # GeoML's other model suffix is kept
    ("/d/m.v2", "model", "/d/m.v2.safetensors"),  # a dot in the name is no suffix
    ("/d/map", "raster", "/d/map.tif"),
    ("/d/map.TIFF", "raster", "/d/map.TIFF"),
    ("/d/map.png", "raster", "/d/map.png.tif"),  # rasters are GeoTIFF: x.png is not taken as one
    ("/d/m", "onnx", "/d/m.onnx"),
    ("/d/points.GPKG", "geopackage", "/d/points.GPKG"),
    ("", "model", ""),  # no path stays no path (the caller chooses a default)
])
def test_output_name_appends_the_kinds_suffix_only_when_missing(path, kind, expected):
    assert output_name(path, kind) == expected


def test_sidecar_names_and_the_jobs_that_use_them():
    assert sidecar_name("/d/x.tif", "confidence") == "/d/x_confidence.tif"
    assert sidecar_name("/d/x.tif", "preview") == "/d/x_preview.tif"
    assert sidecar_name("/d/x.tif", "style") == "/d/x.qml"
    # the jobs' own names are these rules
    assert report_path_for("/d/x.safetensors") == "/d/x_report.html"
    assert metrics_path("/d/x_report.html") == "/d/x_report.json"
    assert gan_report_path_for("/d/x.safetensors") == "/d/x_report.png"
    assert losses_path("/d/x_report.png") == "/d/x_report_losses.csv"
    assert map_paths_for("/d/x.safetensors", "classification") == ["/d/x_classes.tif", "/d/x_confidence.tif"]
    assert map_paths_for("/d/x.safetensors", "regression") == ["/d/x_values.tif"]
    with pytest.raises(KeyError):
        sidecar_name("/d/x.tif", "no such file")


def test_default_output_is_in_the_given_folder_or_a_new_temporary_one(tmp_path):
    assert default_output("fewshot_1", "raster", str(tmp_path)) == str(tmp_path / "fewshot_1.tif")
    a, b = default_output("dem_gan", "model"), default_output("dem_gan", "model")
    for path in (a, b):
        folder = os.path.dirname(path)
        assert os.path.basename(path) == "dem_gan.safetensors" and os.path.isdir(folder)
        assert folder.startswith(tempfile.gettempdir()) and os.path.basename(folder).startswith("geoml_")
    assert os.path.dirname(a) != os.path.dirname(b)  # a new folder each time: no run replaces another's file
    tiles = temp_output_folder("tiles")
    assert os.path.isdir(tiles) and os.path.basename(tiles).startswith("geoml_tiles_")
    for folder in (os.path.dirname(a), os.path.dirname(b), tiles):
        os.rmdir(folder)


def test_a_panels_output_folder_is_the_chosen_one_else_one_temporary_folder(tmp_path):
    folder = OutputFolder("fewshot")
    assert folder.resolve(str(tmp_path)) == str(tmp_path) and folder.temporary is None  # nothing made
    temp = folder.resolve("")
    assert os.path.isdir(temp) and os.path.basename(temp).startswith("geoml_fewshot_")
    assert folder.resolve("") == temp  # the same one for every run: earlier maps stay beside new ones
    assert folder.resolve(str(tmp_path)) == str(tmp_path)
    os.rmdir(temp)

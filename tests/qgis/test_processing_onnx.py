"""geoml:export and geoml:predict with an .onnx model through QGIS Processing."""
import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException, QgsRasterLayer

pytest.importorskip("onnxruntime")


def test_export_then_predict_with_the_onnx_file_gives_the_same_styled_map(geoml_provider, scene, sample_model,
                                                                          out_dir):
    import processing

    onnx_path = str(out_dir / "lda.onnx")
    res = processing.run("geoml:export", {"MODEL": sample_model, "OUTPUT": onnx_path})
    assert res["OUTPUT"] == onnx_path
    a, b = str(out_dir / "torch.tif"), str(out_dir / "onnx.tif")
    processing.run("geoml:predict", {"INPUT": scene.image, "MODEL": sample_model, "OUTPUT": a, "DEVICE": 1})
    processing.run("geoml:predict", {"INPUT": scene.image, "MODEL": onnx_path, "OUTPUT": b, "DEVICE": 1})
    np.testing.assert_array_equal(gdal.Open(a).ReadAsArray(), gdal.Open(b).ReadAsArray())
    layer = QgsRasterLayer(b, "onnx", "gdal")
    assert layer.renderer().type() == "paletted"
    assert {c.label for c in layer.renderer().classes()} == {"Water", "Forest", "Cropland", "Urban"}


def test_export_refuses_a_non_model_with_a_message(geoml_provider, tmp_path, out_dir):
    import processing

    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(QgsProcessingException):
        processing.run("geoml:export", {"MODEL": str(bad), "OUTPUT": str(out_dir / "x.onnx")})
    assert not (out_dir / "x.onnx").exists()


def test_predict_with_an_onnx_model_skips_the_pytorch_check(geoml_provider, scene, sample_model, out_dir,
                                                           monkeypatch):
    """With PyTorch reported missing, a .onnx model is still applied; a .safetensors model is refused with the
    installer's message."""
    import processing

    from geoml_plugin.deps import detect as deps

    onnx_path = str(out_dir / "lda.onnx")
    processing.run("geoml:export", {"MODEL": sample_model, "OUTPUT": onnx_path})
    monkeypatch.setattr(deps, "quick_problem", lambda: "PyTorch is not installed.")
    out = str(out_dir / "o.tif")
    processing.run("geoml:predict", {"INPUT": scene.image, "MODEL": onnx_path, "OUTPUT": out, "DEVICE": 1})
    truth = gdal.Open(scene.landcover).ReadAsArray()
    assert (gdal.Open(out).ReadAsArray() == truth)[truth > 0].mean() > 0.95
    with pytest.raises(QgsProcessingException, match="PyTorch is not installed"):
        processing.run("geoml:predict", {"INPUT": scene.image, "MODEL": sample_model,
                                         "OUTPUT": str(out_dir / "p.tif"), "DEVICE": 1})

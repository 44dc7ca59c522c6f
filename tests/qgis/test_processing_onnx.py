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

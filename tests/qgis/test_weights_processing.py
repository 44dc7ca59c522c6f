"""Pretrained weights in QGIS: consent required in Processing (DOWNLOAD_WEIGHTS), QGIS's proxy passed on."""
import pytest
from qgis.core import QgsProcessingException

from tests.core.test_weights_download import serve_entry
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)
from tests.weights_server import WeightsServer

pytestmark = pytest.mark.usefixtures("release_provider")
TINY = {"PATCH_SIZE": 16, "EPOCHS": 1, "BATCH_SIZE": 16, "DEVICE": 1, "BACKBONE": 1}  # resnet18


def test_processing_downloads_catalogue_weights_only_when_allowed(geoml_provider, scene, out_dir, tmp_path,
                                                                    monkeypatch):
    import processing

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with WeightsServer() as server:
        entry = serve_entry(server, monkeypatch)
        params = {"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name", "WEIGHTS": entry.name,
                  "OUTPUT_MODEL": str(out_dir / "m.safetensors"), **TINY}
        with pytest.raises(QgsProcessingException, match="DOWNLOAD_WEIGHTS=yes") as exc:
            processing.run("geoml:finetune", params)
        assert entry.url in str(exc.value) and entry.hash_prefix in str(exc.value)
        assert server.requests == [] and not (out_dir / "m.safetensors").exists()
        # the sample scene: red, green, blue, NIR; NIR is not a band of ImageNet's weights
        res = processing.run("geoml:finetune", {**params, "DOWNLOAD_WEIGHTS": True, "WEIGHT_BANDS": "R,G,B,-"})
        assert len(server.requests) == 1 and (tmp_path / "torch" / "hub" / "checkpoints" / entry.filename).is_file()
    from geoml_plugin.core.modelfile import read_metadata

    meta = read_metadata(res["OUTPUT_MODEL"])
    assert meta.extra["pretrained"]["name"] == entry.name
    assert meta.extra["pretrained"]["band_match"] == {"bands": ["R", "G", "B", ""], "how": "as given (WEIGHT_BANDS)"}


def test_qgis_proxy_settings_are_passed_to_downloads():
    from qgis.core import QgsNetworkAccessManager
    from qgis.PyQt.QtNetwork import QNetworkProxy

    from geoml_plugin.proxy_settings import qgis_proxies

    nam = QgsNetworkAccessManager.instance()
    before = (nam.fallbackProxy(), nam.excludeList(), nam.noProxyList())
    try:
        nam.setFallbackProxyAndExcludes(QNetworkProxy(QNetworkProxy.ProxyType.HttpProxy, "proxy.example", 3128,
                                                      "ana lyst", "p@ss"), [], [])
        assert qgis_proxies() == {"http": "http://ana%20lyst:p%40ss@proxy.example:3128",
                                  "https": "http://ana%20lyst:p%40ss@proxy.example:3128"}
        nam.setFallbackProxyAndExcludes(QNetworkProxy(QNetworkProxy.ProxyType.DefaultProxy), [], [])
        assert qgis_proxies() is None  # the core then uses http_proxy / https_proxy / no_proxy
    finally:
        nam.setFallbackProxyAndExcludes(*before)

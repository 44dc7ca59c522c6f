"""GeoML algorithms as the toolbox, the graphical modeler and batch runs use them (beyond processing.run)."""

import pytest
from qgis.core import QgsProject

from tests.gan_helpers import tiny_generator_model
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(autouse=True, scope="module")
def release_provider():
    """Unregister the GeoML provider after this module: the plugin tests register their own."""
    yield
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()
    if reg.providerById("geoml") is not None:
        reg.removeProvider(reg.providerById("geoml"))


@pytest.fixture()
def loaded_layers():
    """Layers Processing adds to the project on completion (as the toolbox does), removed afterwards."""
    before = set(QgsProject.instance().mapLayers())
    yield
    QgsProject.instance().removeMapLayers([i for i in QgsProject.instance().mapLayers() if i not in before])


def _run_and_load(alg, params):
    """What the toolbox does after a run: load the outputs flagged for loading, through Processing's own code."""
    import processing

    before = set(QgsProject.instance().mapLayers())
    res = processing.runAndLoadResults(alg, params)
    layers = {lyr.name(): lyr for i, lyr in QgsProject.instance().mapLayers().items() if i not in before}
    return res, layers


def test_outputs_loaded_by_processing_get_geoml_styles(geoml_provider, scene, sample_model, tmp_path,
                                                       loaded_layers):
    """Processing loads result layers without their default (.qml) style: GeoML's styles must still apply."""
    res, layers = _run_and_load("geoml:predict", {"INPUT": scene.image, "MODEL": sample_model, "DEVICE": 1,
                                                  "OUTPUT": "TEMPORARY_OUTPUT",
                                                  "OUTPUT_CONFIDENCE": "TEMPORARY_OUTPUT"})
    assert set(layers) == {"Prediction", "Confidence"}
    pred = layers["Prediction"].renderer()
    assert pred.type() == "paletted"
    assert [c.label for c in pred.classes()] == ["Water", "Forest", "Cropland", "Urban"]  # not 256 palette entries
    assert layers["Confidence"].renderer().type() == "singlebandpseudocolor"

    model = tiny_generator_model(tmp_path / "g.safetensors")
    res, layers = _run_and_load("geoml:generate", {"MODEL": model, "CENTER": "500500,5099500 [EPSG:32632]",
                                                   "TILE_SIZE": 32, "OUTPUT": "TEMPORARY_OUTPUT"})
    assert layers["Generated raster"].renderer().type() == "singlebandpseudocolor"

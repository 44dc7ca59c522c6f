"""GeoML algorithms as the toolbox, the graphical modeler and batch runs use them (beyond processing.run)."""

import os

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsProject

from tests.gan_helpers import tiny_generator_model
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.usefixtures("release_provider")


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


class CancelAt(QgsProcessingFeedback):
    """Presses Cancel when the job reports ``text`` (the last step before its outputs are written)."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def setProgressText(self, text):  # noqa: N802
        if text == self.text:
            self.cancel()
        super().setProgressText(text)


@pytest.mark.parametrize("alg", ["finetune", "metatrain", "generate"])
def test_a_cancel_while_outputs_are_written_keeps_them_and_says_so(alg, geoml_provider, scene, tmp_path, out_dir):
    """Cancel pressed once the outputs are being written is too late: the run completes, and never reports
    "no output was written" beside a file it wrote."""
    import processing

    model = str(out_dir / "m.safetensors")
    params, text = {
        "finetune": ({"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name", "PATCH_SIZE": 16,
                      "EPOCHS": 1, "DEVICE": 1, "OUTPUT_MODEL": model}, "saving"),
        "metatrain": ({"INPUT": scene.image, "LABELS": scene.points, "LABEL_FIELD": "class_name", "WAYS": 3,
                       "SHOTS": 2, "QUERY": 2, "ITERATIONS": 2, "PATCH_SIZE": 16, "DEVICE": 1,
                       "OUTPUT_MODEL": model}, "saving"),
        "generate": ({"MODEL": tiny_generator_model(tmp_path / "g.safetensors"), "TILE_SIZE": 32,
                      "CENTER": "500500,5099500 [EPSG:32632]", "OUTPUT": str(out_dir / "g.tif")}, "block 1/1"),
    }[alg]
    res = processing.run(f"geoml:{alg}", params, feedback=CancelAt(text))
    out = res["OUTPUT_MODEL" if alg != "generate" else "OUTPUT"]
    assert os.path.exists(out)


def test_a_negative_seed_is_refused_before_training_not_a_traceback(geoml_provider, scene, out_dir):
    import processing

    with pytest.raises(QgsProcessingException, match="SEED") as err:
        processing.run("geoml:traingan", {"INPUT": scene.dem, "TILE_SIZE": 32, "ITERATIONS": 1, "BATCH_SIZE": 2,
                                          "DEVICE": 1, "SEED": -3, "OUTPUT_MODEL": str(out_dir / "g.safetensors")})
    assert "Traceback" not in str(err.value)
    assert list(out_dir.iterdir()) == []


def test_metric_outputs_are_named_as_written_in_the_help(geoml_provider):
    """qgis_process help and the modeler list outputs by description: RMSE, not "Rmse"."""
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("geoml:finetune")
    names = {o.name(): o.description() for o in alg.outputDefinitions()}
    assert [names[k] for k in ("OVERALL_ACCURACY", "KAPPA", "MACRO_F1", "MEAN_IOU", "RMSE", "MAE", "R2")] == [
        "Overall accuracy", "Kappa", "Macro F1", "Mean IoU", "RMSE", "MAE", "R²"]
    for name in ("OVERALL_ACCURACY", "KAPPA", "MACRO_F1", "MEAN_IOU", "RMSE", "MAE", "R2"):
        assert name in alg.shortHelpString(), name


def test_a_graphical_model_chains_metatrain_into_fewshot_and_loads_styled_classes(geoml_provider, scene, out_dir,
                                                                                  loaded_layers):
    """A model built as in the graphical modeler: metatrain's model file output feeds fewshot's MODEL."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.core import QgsProcessingModelChildParameterSource as Src

    model = QgsProcessingModelAlgorithm("few-shot chain", "GeoML")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "raster"), QgsProcessingModelParameter("raster"))
    meta = QgsProcessingModelChildAlgorithm("geoml:metatrain")
    meta.setChildId("meta")
    fs = QgsProcessingModelChildAlgorithm("geoml:fewshot")
    fs.setChildId("fs")
    statics = {
        "meta": {"LABELS": scene.points, "LABEL_FIELD": "class_name", "WAYS": 3, "SHOTS": 2, "QUERY": 2,
                 "ITERATIONS": 2, "PATCH_SIZE": 16, "DEVICE": 1},
        "fs": {"SUPPORT": scene.points, "LABEL_FIELD": "class_name", "ADAPT_STEPS": 0, "DEVICE": 1, "STRIDE": 8},
    }
    for child in (meta, fs):
        child.addParameterSources("INPUT", [Src.fromModelParameter("raster")])
        for k, v in statics[child.childId()].items():
            child.addParameterSources(k, [Src.fromStaticValue(v)])
    # the modeler offers metatrain's model file for fewshot's MODEL (file) parameter
    model.addChildAlgorithm(meta)
    offered = [(s.outputChildId(), s.outputName()) for s in model.availableSourcesForChild("fs", ["file"],
                                                                                          ["outputFile"], [])]
    assert ("meta", "OUTPUT_MODEL") in offered
    fs.addParameterSources("MODEL", [Src.fromChildOutput("meta", "OUTPUT_MODEL")])
    out = QgsProcessingModelOutput("classes", "classes")
    out.setChildId("fs")
    out.setChildOutputName("OUTPUT")
    fs.setModelOutputs({"classes": out})
    model.addChildAlgorithm(fs)

    import processing

    before = set(QgsProject.instance().mapLayers())
    res = processing.runAndLoadResults(model, {"raster": scene.image, "fs:classes": str(out_dir / "classes.tif")})
    assert res["fs:classes"] == str(out_dir / "classes.tif")
    assert res["CHILD_RESULTS"]["fs"]["OUTPUT_MODEL"] is None  # optional output not requested
    layers = [lyr for i, lyr in QgsProject.instance().mapLayers().items() if i not in before]
    assert len(layers) == 1 and layers[0].renderer().type() == "paletted"
    assert sorted(c.label for c in layers[0].renderer().classes()) == ["Cropland", "Forest", "Urban", "Water"]


def test_a_confidence_output_a_regression_model_does_not_write_is_not_loaded(geoml_provider, scene, tmp_path,
                                                                              loaded_layers):
    """The toolbox must not look for a layer the job never wrote ("layers were not correctly generated")."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingOutputLayerDefinition

    from tests.conftest import tiny_regression_model

    model = tiny_regression_model(tmp_path / "reg.safetensors")
    out, conf = str(tmp_path / "height.tif"), str(tmp_path / "conf.tif")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    res = processing.run("geoml:predict", {
        "INPUT": scene.image, "MODEL": model, "DEVICE": 0,
        "OUTPUT": QgsProcessingOutputLayerDefinition(out, QgsProject.instance()),
        "OUTPUT_CONFIDENCE": QgsProcessingOutputLayerDefinition(conf, QgsProject.instance())}, context=context)
    assert res["OUTPUT"] == out and res["OUTPUT_CONFIDENCE"] is None and not os.path.exists(conf)
    assert context.willLoadLayerOnCompletion(out)
    assert not context.willLoadLayerOnCompletion(conf)

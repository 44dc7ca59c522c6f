"""The model-file filters of the dialogs and of the Processing algorithms: one text (``file_filters``), so a
file the toolbox offers is offered by the dialog for the same step, and the other way round."""
from tests.qgis.conftest import FakePlugin, open_finetune_dialog

OPEN = "GeoML model (*.safetensors *.geoml);;All files (*.*)"
APPLY = ("Models (*.safetensors *.geoml *.onnx);;GeoML model (*.safetensors *.geoml);;ONNX model (*.onnx);;"
         "All files (*.*)")
SAVE = "GeoML model (*.safetensors)"


def test_the_processing_algorithms_offer_the_model_files_they_read_and_write(geoml_provider):
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()

    def file_filter(alg: str, param: str) -> str:
        algorithm = reg.createAlgorithmById(f"geoml:{alg}")  # kept: its parameters die with it
        return algorithm.parameterDefinition(param).fileFilter()

    assert file_filter("predict", "MODEL") == APPLY
    for alg in ("fewshot", "generate", "export"):
        assert file_filter(alg, "MODEL") == OPEN, alg
    assert file_filter("fewshot", "OUTPUT_MODEL") == OPEN
    assert file_filter("metatrain", "OUTPUT_MODEL") == OPEN
    assert file_filter("finetune", "OUTPUT_MODEL") == SAVE
    assert file_filter("traingan", "OUTPUT_MODEL") == SAVE
    assert file_filter("export", "OUTPUT") == "ONNX model (*.onnx)"


def test_the_dialogs_offer_the_same_model_files(qtbot, qgis_iface, qgis_canvas, qgis_new_project, scene):
    from geoml_plugin.gui.fewshot_panel import FewShotPanel
    from geoml_plugin.gui.gan_panel import GanPanel
    from geoml_plugin.gui.predict_dialog import PredictDialog
    from geoml_plugin.gui.traingan_dialog import TrainGanDialog

    predict = PredictDialog(FakePlugin(qgis_iface))
    traingan = TrainGanDialog(FakePlugin(qgis_iface))
    fewshot = FewShotPanel(FakePlugin(qgis_iface), qgis_canvas)
    gan = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    for w in (predict, traingan, fewshot, gan):
        qtbot.addWidget(w)
    finetune = open_finetune_dialog(qtbot, qgis_iface, scene)
    assert predict.modelFile.filter() == APPLY
    assert fewshot.modelFile.filter() == OPEN and gan.modelFile.filter() == OPEN
    assert traingan.outputFile.filter() == SAVE and finetune.outputFile.filter() == SAVE
    assert finetune.weightsFile.filter() == "GeoML model (*.safetensors *.geoml)"

"""The job dialogs ask before replacing an output file that exists (e.g. Fine-tune's remembered model path),
once per Run, and not again for a path just chosen with Browse (whose file dialog asked already)."""
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialogButtonBox,
    QFileDialog,
    QLineEdit,
    QMessageBox,
    QToolButton,
)

from tests.qgis.conftest import FakePlugin

DIALOGS = [("predict_dialog", "PredictDialog", "out.tif"), ("finetune_dialog", "FinetuneDialog", "model.safetensors"),
           ("traingan_dialog", "TrainGanDialog", "gan.safetensors")]


@pytest.fixture()
def open_dialog(qtbot, qgis_iface, qgis_new_project, scene, tmp_path):
    import importlib

    QgsSettings().remove("geoml/finetune")

    def make(module, cls):
        image = QgsRasterLayer(scene.image, "sample image", "gdal")
        points = QgsVectorLayer(scene.points, "label points", "ogr")
        QgsProject.instance().addMapLayers([image, points])
        dlg = getattr(importlib.import_module(f"geoml_plugin.gui.{module}"), cls)(FakePlugin(qgis_iface))
        qtbot.addWidget(dlg)
        dlg.inputLayer.setLayer(image)
        if module == "finetune_dialog":
            dlg.labelsLayer.setLayer(points)
            dlg.labelField.setField("class_name")
            dlg.classifyCheck.setChecked(False)
        if module == "predict_dialog":
            dlg.modelFile.setFilePath(str(tmp_path / "some_model.safetensors"))
            dlg.confidenceCheck.setChecked(False)
        dlg.show()
        qtbot.waitExposed(dlg)
        started, asked = [], []
        dlg.start_job = lambda description, job, clear_log=True: started.append(description)
        return dlg, started, asked

    yield make
    QgsSettings().remove("geoml/finetune")


def _answers(dlg, asked, monkeypatch, *answers):
    replies = list(answers)

    def ask(existing):
        asked.append(list(existing))
        return replies.pop(0)

    monkeypatch.setattr(dlg, "ask_replace", ask)


@pytest.mark.parametrize("module,cls,name", DIALOGS)
def test_run_asks_before_replacing_an_existing_output(open_dialog, tmp_path, monkeypatch, module, cls, name):
    dlg, started, asked = open_dialog(module, cls)
    out = tmp_path / name
    out.write_bytes(b"the previous result")
    dlg.outputFile.setFilePath(str(out))  # typed, or remembered from the last run
    _answers(dlg, asked, monkeypatch, False, True)
    dlg.runButton.click()  # before: replaced without a word
    assert asked == [[str(out)]] and started == [] and dlg.isVisible()
    assert "Replace" not in dlg.logView.toPlainText() and out.read_bytes() == b"the previous result"
    dlg.runButton.click()
    assert asked == [[str(out)], [str(out)]] and len(started) == 1
    dlg.outputFile.setFilePath(str(tmp_path / ("new_" + name)))
    dlg.runButton.click()  # no file there: no question
    assert len(asked) == 2 and len(started) == 2


def test_apply_model_asks_once_about_both_outputs(open_dialog, tmp_path, monkeypatch):
    dlg, started, asked = open_dialog("predict_dialog", "PredictDialog")
    dlg.confidenceCheck.setChecked(True)
    out, conf = tmp_path / "map.tif", tmp_path / "map_confidence.tif"
    out.write_bytes(b"x")
    conf.write_bytes(b"x")
    dlg.outputFile.setFilePath(str(out))
    _answers(dlg, asked, monkeypatch, True)
    dlg.runButton.click()
    assert asked == [[str(out), str(conf)]] and len(started) == 1


def test_a_path_chosen_with_browse_is_not_asked_about_twice(open_dialog, tmp_path, monkeypatch):
    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"the previous model")
    browse = next(b for b in dlg.outputFile.findChildren(QToolButton) if b.text() == "…")
    seen = []

    def confirm_in_file_dialog():  # the file dialog's own "already exists. Replace it?"
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen.append(box.text())
            box.button(QMessageBox.StandardButton.Yes).click()

    def choose():
        fd = QApplication.activeModalWidget()
        assert isinstance(fd, QFileDialog)
        fd.findChild(QLineEdit, "fileNameEdit").setText(str(out))
        QTimer.singleShot(300, confirm_in_file_dialog)
        fd.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Save).click()

    QTimer.singleShot(300, choose)
    browse.click()
    assert dlg.outputFile.filePath() == str(out) and len(seen) == 1
    _answers(dlg, asked, monkeypatch, False)
    dlg.runButton.click()
    assert asked == [] and len(started) == 1  # the file dialog asked already
    dlg.runButton.click()  # the next run would replace the model just trained: ask again
    assert asked == [[str(out)]] and len(started) == 1


def test_the_question_names_the_file(open_dialog, tmp_path):
    dlg, _, _ = open_dialog("traingan_dialog", "TrainGanDialog")
    seen = []

    def answer():
        box = QApplication.activeModalWidget()
        seen.append(box.text())
        box.button(QMessageBox.StandardButton.No).click()

    QTimer.singleShot(200, answer)
    assert dlg.ask_replace([str(tmp_path / "gan.safetensors")]) is False
    assert seen == [f"{tmp_path / 'gan.safetensors'} exists. Replace it?"]


@pytest.mark.parametrize("module,cls", [("finetune_dialog", "FinetuneDialog"), ("traingan_dialog", "TrainGanDialog")])
def test_help_says_where_an_empty_model_path_goes(open_dialog, module, cls):
    dlg, _, _ = open_dialog(module, cls)
    text = dlg.helpBrowser.toPlainText()
    assert "Model file" in text and "Left empty" in text and "temporary folder" in text  # before: not said


@pytest.mark.parametrize("module,cls", [("finetune_dialog", "FinetuneDialog"), ("traingan_dialog", "TrainGanDialog")])
def test_an_empty_model_path_goes_to_a_temporary_folder(open_dialog, module, cls):
    import tempfile

    dlg, started, _ = open_dialog(module, cls)
    dlg.outputFile.setFilePath("")
    made = dlg.make_job()
    assert made is not None
    cfg = next(c.cell_contents for c in made[1].__closure__ if hasattr(c.cell_contents, "output_model"))
    cfg_path = cfg.output_model
    assert cfg_path.startswith(tempfile.gettempdir()) and "geoml_" in cfg_path  # what the help says

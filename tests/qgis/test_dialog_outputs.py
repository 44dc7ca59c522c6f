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

from tests.conftest import tiny_regression_model
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


def test_apply_regression_model_does_not_ask_about_a_confidence_raster_it_does_not_write(open_dialog, tmp_path,
                                                                                          monkeypatch):
    model = tiny_regression_model(tmp_path / "reg.safetensors")
    dlg, started, asked = open_dialog("predict_dialog", "PredictDialog")
    dlg.modelFile.setFilePath(model)
    dlg.confidenceCheck.setChecked(True)
    out, conf = tmp_path / "height.tif", tmp_path / "height_confidence.tif"
    conf.write_bytes(b"a classifier's confidence of another run")
    dlg.outputFile.setFilePath(str(out))
    _answers(dlg, asked, monkeypatch)  # any question fails: no answer is queued
    dlg.runButton.click()  # before: asked about height_confidence.tif, which the run leaves alone
    assert asked == [] and len(started) == 1
    out.write_bytes(b"x")
    _answers(dlg, asked, monkeypatch, True)
    dlg.runButton.click()
    assert asked == [[str(out)]] and len(started) == 2


def _browse_to(dlg, out):
    """Choose ``out`` with the output file's Browse button, confirming the file dialog's own "already exists.
    Replace it?" when it asks; returns the texts of those questions."""
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
    return seen


def test_a_path_chosen_with_browse_is_not_asked_about_twice(open_dialog, tmp_path, monkeypatch):
    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"the previous model")
    seen = _browse_to(dlg, out)
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


# every file Run replaces, in one question ------------------------------------------------------------------------
def _question(monkeypatch, *answers):
    """QMessageBox.question answered Yes (True) or No (False) in turn; returns the questions' texts."""
    texts, replies = [], list(answers)

    def question(parent, title, text, buttons, default):
        texts.append(text)
        return QMessageBox.StandardButton.Yes if replies.pop(0) else QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return texts


def test_fine_tune_asks_about_an_existing_report_beside_a_new_model(open_dialog, tmp_path, monkeypatch):
    dlg, started, _ = open_dialog("finetune_dialog", "FinetuneDialog")
    assert dlg.reportCheck.isChecked()
    model, report = tmp_path / "model.safetensors", tmp_path / "model_report.html"
    report.write_text("the previous report")  # no model yet: e.g. it was moved, or deleted to train anew
    dlg.outputFile.setFilePath(str(model))
    texts = _question(monkeypatch, False, True)
    dlg.runButton.click()  # before: no question, and the report was replaced
    assert texts == [f"{report} exists. Replace it?"]
    assert started == [] and report.read_text() == "the previous report" and not model.exists()
    dlg.runButton.click()
    assert len(texts) == 2 and len(started) == 1
    report.unlink()
    dlg.runButton.click()  # nothing there: no question
    assert len(texts) == 2 and len(started) == 2


def test_fine_tune_lists_every_file_it_would_replace_in_one_question(open_dialog, tmp_path, monkeypatch):
    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    dlg.classifyCheck.setChecked(True)  # the maps are written beside the model after training
    names = ["model.safetensors", "model_report.html", "model_report.json", "model_classes.tif",
             "model_confidence.tif"]
    for n in names:
        (tmp_path / n).write_bytes(b"earlier")
    dlg.outputFile.setFilePath(str(tmp_path / "model.safetensors"))
    texts = _question(monkeypatch, False)
    dlg.runButton.click()
    assert texts == [f"These files exist in {tmp_path} and will be replaced: {', '.join(names)}. Replace them?"]
    assert started == [] and all((tmp_path / n).read_bytes() == b"earlier" for n in names)
    for n in names[1:]:
        (tmp_path / n).unlink()
    (tmp_path / "model_values.tif").write_bytes(b"a regression map of another run")
    _answers(dlg, asked, monkeypatch, True)
    dlg.runButton.click()  # classification writes no values map: only the model is asked about
    assert asked == [[str(tmp_path / "model.safetensors")]] and len(started) == 1


def test_fine_tune_asks_only_about_the_files_its_settings_write(open_dialog, tmp_path, monkeypatch):
    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    for n in ("m_report.html", "m_report.json", "m_classes.tif", "m_confidence.tif", "m_values.tif"):
        (tmp_path / n).write_bytes(b"earlier")
    dlg.outputFile.setFilePath(str(tmp_path / "m.safetensors"))
    dlg.reportCheck.setChecked(False)
    dlg.classifyCheck.setChecked(False)
    _answers(dlg, asked, monkeypatch, True)
    dlg.runButton.click()  # neither a report nor maps: nothing of theirs is replaced
    assert asked == [] and len(started) == 1
    dlg.classifyCheck.setChecked(True)
    dlg.taskCombo.setCurrentIndex(dlg.taskCombo.findData("regression"))
    dlg.runButton.click()  # a regression map, and no confidence raster
    assert asked == [[str(tmp_path / "m_values.tif")]] and len(started) == 2


def test_browse_confirms_the_model_but_not_the_report_beside_it(open_dialog, tmp_path, monkeypatch):
    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    model, report, metrics = (tmp_path / n for n in ("model.safetensors", "model_report.html", "model_report.json"))
    for p in (model, report, metrics):
        p.write_bytes(b"earlier")
    assert len(_browse_to(dlg, model)) == 1  # the file dialog asked about the model only
    _answers(dlg, asked, monkeypatch, False, True)
    dlg.runButton.click()
    assert asked == [[str(report), str(metrics)]] and started == []
    assert all(p.read_bytes() == b"earlier" for p in (model, report, metrics))
    dlg.runButton.click()  # still the path chosen with Browse: the model is not asked about
    assert asked == [[str(report), str(metrics)]] * 2 and len(started) == 1


def test_classify_button_asks_before_replacing_the_maps(open_dialog, tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.job import FinetuneResult

    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    model = tmp_path / "model.safetensors"
    dlg.last_result = FinetuneResult(model_path=str(model), task="classification", metrics={}, history=[])
    classes, conf = tmp_path / "model_classes.tif", tmp_path / "model_confidence.tif"
    classes.write_bytes(b"the map of an earlier run")
    dlg.classifyButton.setEnabled(True)
    _answers(dlg, asked, monkeypatch, False, True, False)
    dlg.classifyButton.click()  # before: replaced without a word
    assert asked == [[str(classes)]] and started == [] and classes.read_bytes() == b"the map of an earlier run"
    dlg.classifyButton.click()
    assert len(asked) == 2 and len(started) == 1
    classes.unlink()
    conf.write_bytes(b"x")
    dlg.classifyButton.click()
    assert asked[2:] == [[str(conf)]] and len(started) == 1


def test_the_classification_after_training_is_not_asked_about_again(open_dialog, tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.job import FinetuneResult

    dlg, started, asked = open_dialog("finetune_dialog", "FinetuneDialog")
    dlg.classifyCheck.setChecked(True)
    model, classes = tmp_path / "model.safetensors", tmp_path / "model_classes.tif"
    classes.write_bytes(b"earlier")
    dlg.outputFile.setFilePath(str(model))
    _answers(dlg, asked, monkeypatch, True, True, False)
    dlg.runButton.click()
    assert asked == [[str(classes)]] and len(started) == 1
    model.write_bytes(b"trained")
    dlg.on_success(FinetuneResult(model_path=str(model), task="classification", metrics={}, history=[]))
    assert asked == [[str(classes)]] and len(started) == 2  # Run asked already
    dlg.classifyCheck.setChecked(False)
    dlg.runButton.click()  # the model exists now; this run writes no maps
    assert asked[1:] == [[str(model)]] and len(started) == 3
    dlg.classifyCheck.setChecked(True)  # checked while training: the maps were not asked about by Run
    dlg.on_success(FinetuneResult(model_path=str(model), task="classification", metrics={}, history=[]))
    assert asked[2:] == [[str(classes)]] and len(started) == 3 and classes.read_bytes() == b"earlier"
    assert "No map was made" in dlg.logView.toPlainText()


@pytest.mark.parametrize("existing", ["gan_report.png", "gan_report_losses.csv"])
def test_train_gan_asks_about_an_existing_report_or_loss_table(open_dialog, tmp_path, monkeypatch, existing):
    dlg, started, asked = open_dialog("traingan_dialog", "TrainGanDialog")
    assert dlg.reportCheck.isChecked()
    (tmp_path / existing).write_bytes(b"earlier")
    dlg.outputFile.setFilePath(str(tmp_path / "gan.safetensors"))
    _answers(dlg, asked, monkeypatch, False, True)
    dlg.runButton.click()  # before: replaced without a word
    assert asked == [[str(tmp_path / existing)]] and started == []
    assert (tmp_path / existing).read_bytes() == b"earlier"
    dlg.runButton.click()
    assert len(asked) == 2 and len(started) == 1
    dlg.reportCheck.setChecked(False)
    dlg.runButton.click()  # no report: nothing of it is replaced
    assert len(asked) == 2 and len(started) == 2


def test_the_question_lists_files_of_several_folders_by_path(open_dialog, tmp_path, monkeypatch):
    dlg, _, _ = open_dialog("predict_dialog", "PredictDialog")
    texts = _question(monkeypatch, True)
    a, b = str(tmp_path / "a" / "map.tif"), str(tmp_path / "b" / "map_confidence.tif")
    assert dlg.ask_replace([a, b]) is True
    assert texts == [f"These files exist and will be replaced: {a}, {b}. Replace them?"]

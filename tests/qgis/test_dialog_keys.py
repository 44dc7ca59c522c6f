"""Keyboard use of the job dialogs: Enter never starts a long job; closing during a run asks first."""
import pytest
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt

from tests.qgis.conftest import FakePlugin

DIALOGS = [("predict_dialog", "PredictDialog", "batchSpin"), ("finetune_dialog", "FinetuneDialog", "patchSpin"),
           ("traingan_dialog", "TrainGanDialog", "iterationsSpin")]


class RunningTask:
    """Stands in for a GeoMLTask that is still running."""

    def __init__(self):
        self.cancel_calls = 0

    def cancel(self):
        self.cancel_calls += 1

    def isCanceled(self):  # noqa: N802
        return self.cancel_calls > 0


def _open(qtbot, qgis_iface, scene, module, cls):
    import importlib

    QgsProject.instance().addMapLayer(QgsRasterLayer(scene.image, "sample image", "gdal"))
    dlg = getattr(importlib.import_module(f"geoml_plugin.gui.{module}"), cls)(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    return dlg


@pytest.mark.parametrize("module,cls,spin", DIALOGS)
def test_enter_in_a_field_does_not_start_the_job(qtbot, qgis_iface, qgis_new_project, scene, module, cls, spin):
    dlg = _open(qtbot, qgis_iface, scene, module, cls)
    clicks = []
    dlg.runButton.clicked.disconnect()  # count the clicks instead of starting a job
    dlg.runButton.clicked.connect(lambda: clicks.append(1))
    field = getattr(dlg, spin)
    field.setFocus()
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
        qtbot.keyClick(field, key)
    assert clicks == [] and dlg.task is None and dlg.isVisible()


@pytest.mark.parametrize("module,cls,spin", DIALOGS)
def test_escape_during_a_run_asks_to_keep_it_running_cancel_it_or_stay(qtbot, qgis_iface, qgis_new_project, scene,
                                                                      monkeypatch, module, cls, spin):
    dlg = _open(qtbot, qgis_iface, scene, module, cls)
    task = dlg.task = RunningTask()
    answers = ["stay", "background", "cancel"]
    monkeypatch.setattr(dlg, "ask_about_running_job", lambda: answers.pop(0))
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)  # before: hidden at once, without a word
    assert answers == ["background", "cancel"] and dlg.isVisible() and task.cancel_calls == 0
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)  # keep running: the dialog hides, the job goes on
    assert not dlg.isVisible() and task.cancel_calls == 0
    dlg.show()
    qtbot.mouseClick(dlg.closeButton, Qt.MouseButton.LeftButton)  # the Close button asks the same
    assert not dlg.isVisible() and task.cancel_calls == 1
    dlg.task = None


def test_the_question_offers_keep_running_cancel_and_stay(qtbot, qgis_iface, qgis_new_project, scene):
    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QApplication

    dlg = _open(qtbot, qgis_iface, scene, "predict_dialog", "PredictDialog")
    seen = {}

    def answer(label):
        box = QApplication.activeModalWidget()
        seen[label] = sorted(b.text() for b in box.buttons())
        next(b for b in box.buttons() if b.text() == label).click()

    for label, expected in (("Keep running", "background"), ("Cancel job", "cancel"), ("Don't close", "stay")):
        QTimer.singleShot(200, lambda label=label: answer(label))
        assert dlg.ask_about_running_job() == expected
    assert seen["Keep running"] == ["Cancel job", "Don't close", "Keep running"]


def test_closing_an_idle_or_cancelled_dialog_does_not_ask(qtbot, qgis_iface, qgis_new_project, scene, monkeypatch):
    def never(*a, **k):
        raise AssertionError("asked")

    dlg = _open(qtbot, qgis_iface, scene, "predict_dialog", "PredictDialog")
    monkeypatch.setattr(dlg, "ask_about_running_job", never)
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)
    assert not dlg.isVisible()
    dlg.show()
    task = dlg.task = RunningTask()
    task.cancel()  # e.g. plugin unload: cancel_all() ran first
    dlg.close()
    assert not dlg.isVisible()
    dlg.task = None


@pytest.mark.parametrize("module,cls,spin", DIALOGS)
def test_cuda_is_offered_only_when_there_is_a_gpu(qtbot, qgis_iface, qgis_new_project, scene, module, cls, spin):
    dlg = _open(qtbot, qgis_iface, scene, module, cls)
    cuda = dlg.deviceCombo.model().item(dlg.deviceCombo.findText("cuda"))
    dlg.deviceCombo.setCurrentText("cuda")  # e.g. remembered from a machine with a GPU
    dlg.set_device_badge("CPU only — jobs will be slower")
    # before: 'cuda' stayed selectable and the job failed only once started
    assert not cuda.isEnabled() and "CPU only" in cuda.toolTip()
    assert dlg.deviceCombo.currentText() == "auto"
    dlg.set_device_badge("GPU: NVIDIA RTX A2000 (8 GB)")
    assert cuda.isEnabled() and cuda.toolTip() == ""


def _installer(qtbot, qgis_iface, tmp_path):
    from geoml_plugin.gui.deps.installer_dialog import InstallerDialog

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    dlg = InstallerDialog(FakePlugin(qgis_iface), target=tmp_path / "geoml_packages" / "py3x",
                          packages=["geomltest-a"], source=str(wheels))
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    return dlg


def test_enter_in_the_installer_does_not_start_the_download(qtbot, qgis_iface, tmp_path):
    dlg = _installer(qtbot, qgis_iface, tmp_path)
    assert dlg.installButton.isEnabled()
    clicks = []
    dlg.installButton.clicked.disconnect()  # count the clicks instead of running pip
    dlg.installButton.clicked.connect(lambda: clicks.append(1))
    dlg.sourceEdit.setFocus()
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):  # before: Install was the default button
        qtbot.keyClick(dlg.sourceEdit, key)
    assert clicks == [] and dlg.task is None and dlg.isVisible()


def test_closing_the_installer_while_pip_runs_asks(qtbot, qgis_iface, tmp_path, monkeypatch):
    dlg = _installer(qtbot, qgis_iface, tmp_path)
    task = dlg.task = RunningTask()
    answers = ["stay", "background", "cancel"]
    monkeypatch.setattr(dlg, "ask_about_running_install", lambda: answers.pop(0))
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)  # before: hidden at once while pip went on
    assert answers == ["background", "cancel"] and dlg.isVisible() and task.cancel_calls == 0
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)  # keep installing: the dialog hides, pip goes on
    assert not dlg.isVisible() and task.cancel_calls == 0
    dlg.show()
    qtbot.mouseClick(dlg.closeButton, Qt.MouseButton.LeftButton)  # before: cancelled without asking
    assert not dlg.isVisible() and task.cancel_calls == 1
    dlg.task = None
    dlg.show()
    monkeypatch.setattr(dlg, "ask_about_running_install", lambda: pytest.fail("asked while idle"))
    dlg.close()
    assert not dlg.isVisible()


def test_the_installer_question_offers_keep_installing_cancel_and_stay(qtbot, qgis_iface, tmp_path):
    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QApplication

    dlg = _installer(qtbot, qgis_iface, tmp_path)
    seen = {}

    def answer(label):
        box = QApplication.activeModalWidget()
        seen[label] = sorted(b.text() for b in box.buttons())
        next(b for b in box.buttons() if b.text() == label).click()

    for label, expected in (("Keep installing", "background"), ("Cancel install", "cancel"),
                            ("Don't close", "stay")):
        QTimer.singleShot(200, lambda label=label: answer(label))
        assert dlg.ask_about_running_install() == expected
    assert seen["Keep installing"] == ["Cancel install", "Don't close", "Keep installing"]


def test_an_install_that_fails_in_the_background_says_so_in_the_message_bar(qtbot, qgis_iface, tmp_path):
    from qgis.core import Qgis

    from geoml_plugin.core.errors import GeoMLError

    class FailedTask:
        error, cancelled = GeoMLError("pip failed: no network."), False

        def error_text(self):
            return str(self.error)

    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    dlg = _installer(qtbot, qgis_iface, tmp_path)
    dlg.hide()  # 'Keep installing'
    dlg._done(FailedTask())
    assert any("Installing PyTorch failed: pip failed: no network." in m
               for m in bar.get_messages(Qgis.MessageLevel.Critical))

"""Issue 21 points 2 and 9 on real widgets: the Fine-tune map step has its own status line with an estimate; Cancel
gives the dialog back within about a second and is no failure (QGIS sees the task complete, nothing is logged
as an error); a user's slip is a warning, not a critical message."""
import re
import time

import pytest
from qgis.core import Qgis, QgsApplication, QgsSettings
from qgis.PyQt.QtCore import Qt

from geoml_plugin.core.errors import JobCancelled
from tests.qgis.conftest import open_finetune_dialog, wait_for_task
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture()
def dialog(qtbot, qgis_iface, qgis_new_project, scene):
    qgis_iface.messageBar().clearWidgets()
    yield open_finetune_dialog(qtbot, qgis_iface, scene)
    QgsSettings().remove("geoml/finetune")


def test_the_map_step_has_its_own_status_line_not_trained(qtbot, dialog, out_dir):
    texts = []
    set_text = dialog.statusLabel.setText
    dialog.statusLabel.setText = lambda t: (texts.append(t), set_text(t))
    dialog.epochsSpin.setValue(1)
    dialog.outputFile.setFilePath(str(out_dir / "m.safetensors"))
    qtbot.mouseClick(dialog.runButton, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.last_result is not None and dialog.task is None, timeout=120_000)
    during = [t for t in texts if t.startswith("Classifying sample image")]
    assert during and during[0] == "Classifying sample image: starting…", texts
    assert any(re.match(r"Classifying sample image: \d+ %", t) for t in during[1:]), texts  # the percentage
    assert not any(t.startswith("Trained:") for t in texts[texts.index(during[0]):-1])  # not while mapping
    assert dialog.statusLabel.text().startswith("Trained: overall accuracy")
    assert "Classified in " in dialog.statusLabel.text()


def test_map_progress_text_estimates_the_time_left(qgis_app):
    from geoml_plugin.gui.finetune_dialog import map_progress_text

    assert map_progress_text("Classifying x", 0.09, 70.0) == "Classifying x: 9 %, about 12 min left"
    assert map_progress_text("Classifying x", 0.5, 20.0) == "Classifying x: 50 %, about 20 s left"
    assert map_progress_text("Classifying x", 0.25, 3.0) == "Classifying x: 25 %, about 9 s left"
    assert map_progress_text("Classifying x", 0.02, 3600.0) == "Classifying x: 2 %, about 49 h 0 min left"
    assert map_progress_text("Classifying x", 0.005, 30.0) == "Classifying x: 0 %"  # too early to tell
    assert map_progress_text("Classifying x", 0.3, 1.0) == "Classifying x: 30 %"


def test_cancel_gives_the_dialog_back_within_a_second_and_is_not_a_failure(qtbot, dialog):
    logged = []

    def on_log(message, tag, level):
        logged.append((tag, level, message))

    QgsApplication.messageLog().messageReceived.connect(on_log)
    started = []

    def long_step(fb):  # a job whose step takes seconds between cancel checks (a large block of a map)
        started.append(True)
        fb.progress(0.1, "block 1/2")
        time.sleep(4.0)
        fb.progress(0.5, "block 2/2")
        return "written"

    try:
        task = dialog.start_job("GeoML: long steps", long_step)
        ends = []
        task.taskCompleted.connect(lambda: ends.append("complete"))
        task.taskTerminated.connect(lambda: ends.append("terminated"))
        qtbot.waitUntil(lambda: bool(started), timeout=10_000)
        t0 = time.monotonic()
        qtbot.mouseClick(dialog.cancelButton, Qt.MouseButton.LeftButton)
        assert not dialog.cancelButton.isEnabled()
        qtbot.waitUntil(lambda: dialog.task is None, timeout=3_000)
        assert time.monotonic() - t0 < 1.8
        assert dialog.runButton.isEnabled() and not dialog.cancelButton.isEnabled()
        assert "Cancelled; nothing was written." in dialog.logView.toPlainText()
        # the job itself stops at its next step; QGIS sees it complete, not failed ("Task failed")
        qtbot.waitUntil(lambda: bool(ends), timeout=15_000)
        assert ends == ["complete"] and isinstance(task.error, JobCancelled) and task.result is None
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(on_log)
    bar = dialog.plugin.iface.messageBar()
    assert not bar.get_messages(Qgis.MessageLevel.Critical) and not bar.get_messages(Qgis.MessageLevel.Warning)
    assert not [m for tag, level, m in logged if tag == "GeoML" and level == Qgis.MessageLevel.Critical]


def test_a_prompt_cancel_is_reported_once(qtbot, dialog, out_dir):
    dialog.epochsSpin.setValue(500)
    dialog.outputFile.setFilePath(str(out_dir / "c.safetensors"))
    dialog.run()
    task = dialog.task
    ends = []
    task.taskCompleted.connect(lambda: ends.append("complete"))
    task.taskTerminated.connect(lambda: ends.append("terminated"))
    qtbot.waitUntil(lambda: "val accuracy" in dialog.statusLabel.text(), timeout=120_000)
    qtbot.mouseClick(dialog.cancelButton, Qt.MouseButton.LeftButton)
    wait_for_task(qtbot, dialog)
    qtbot.wait(1200)  # past the release time: nothing more is said
    assert dialog.logView.toPlainText().count("Cancelled; nothing was written.") == 1
    assert ends == ["complete"]


def test_a_users_slip_is_a_warning_not_critical(qtbot, dialog, qgis_iface):
    dialog.labelsLayer.setLayer(None)
    qtbot.mouseClick(dialog.runButton, Qt.MouseButton.LeftButton)
    bar = qgis_iface.messageBar()
    assert any("Choose a labels layer" in m for m in bar.get_messages(Qgis.MessageLevel.Warning))
    assert not bar.get_messages(Qgis.MessageLevel.Critical)


def test_the_map_status_keeps_counting_between_progress_reports(qtbot, dialog, sample_model, monkeypatch):
    """A block of a large raster can take minutes: the line says how long so far, then the time left."""
    from geoml_plugin.core.modelfile import read_metadata
    from geoml_plugin.gui.finetune_dialog import SavedModel

    def slow_map(fb):
        fb.progress(0.0, "block 0/2")
        time.sleep(1.6)
        fb.progress(0.5, "block 1/2")
        time.sleep(1.6)

    dialog.last_result = SavedModel(sample_model, read_metadata(sample_model))
    monkeypatch.setattr(dialog, "_predict_job", lambda: ("GeoML: apply", slow_map))
    dialog.classify()
    qtbot.waitUntil(lambda: "so far)" in dialog.statusLabel.text(), timeout=3_000)
    assert re.fullmatch(r"Classifying sample image: 0 % \(\d s so far\)", dialog.statusLabel.text())
    qtbot.waitUntil(lambda: ", about " in dialog.statusLabel.text(), timeout=5_000)
    assert re.fullmatch(r"Classifying sample image: 50 %, about \d s left", dialog.statusLabel.text())
    wait_for_task(qtbot, dialog)

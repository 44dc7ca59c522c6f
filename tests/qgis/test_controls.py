"""Issue 21 point 10 on real widgets: controls show what is possible."""
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import Qt

from tests.qgis.conftest import FakePlugin, open_finetune_dialog, wait_for_task
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture()
def dialog(qtbot, qgis_iface, qgis_new_project, scene):
    yield open_finetune_dialog(qtbot, qgis_iface, scene)
    QgsSettings().remove("geoml/finetune")


def test_form_and_classify_now_are_disabled_while_a_job_runs(qtbot, dialog, out_dir):
    dialog.epochsSpin.setValue(1)
    dialog.outputFile.setFilePath(str(out_dir / "m.safetensors"))
    assert not dialog.classifyButton.isEnabled()  # no model yet
    seen = []
    classify = dialog.classify

    def classify_and_look():  # as the classification starts after training
        classify()
        seen.append((dialog.classifyButton.isEnabled(), dialog.epochsSpin.isEnabled(), dialog.runButton.isEnabled()))

    dialog.classify = classify_and_look
    qtbot.mouseClick(dialog.runButton, Qt.MouseButton.LeftButton)
    assert not dialog.epochsSpin.isEnabled() and not dialog.inputLayer.isEnabled()  # training: read-only form
    assert not dialog.classifyButton.isEnabled()
    qtbot.waitUntil(lambda: dialog.last_result is not None and dialog.task is None, timeout=120_000)
    assert seen == [(False, False, False)]  # classifying: Classify now is not offered
    assert dialog.classifyButton.isEnabled() and dialog.epochsSpin.isEnabled()


def test_classify_now_stays_available_after_a_failed_training_when_the_model_exists(qtbot, dialog, out_dir,
                                                                                     sample_model):
    import shutil

    model = out_dir / "saved.safetensors"
    shutil.copy(sample_model, model)
    dialog.outputFile.setFilePath(str(model))
    assert dialog.classifyButton.isEnabled()  # a saved model to apply
    dialog.labelField.setField("")  # the next training fails at once
    dialog.epochsSpin.setValue(1)
    dialog.start_job("GeoML: fail", lambda fb: (_ for _ in ()).throw(ValueError("broken")))
    wait_for_task(qtbot, dialog)
    assert dialog.classifyButton.isEnabled()  # before: disabled, though the model file is there
    qtbot.mouseClick(dialog.classifyButton, Qt.MouseButton.LeftButton)
    wait_for_task(qtbot, dialog)
    assert (out_dir / "saved_classes.tif").exists(), dialog.logView.toPlainText()
    assert dialog.statusLabel.text().startswith("Model: saved model saved.safetensors. Classified in")


def test_train_gan_offers_pix2pix_settings_only_with_a_target(qtbot, qgis_iface, qgis_new_project, scene,
                                                               monkeypatch):
    from geoml_plugin.gui import messages
    from geoml_plugin.gui.traingan_dialog import TrainGanDialog

    dem = QgsRasterLayer(scene.dem, "dem", "gdal")
    image = QgsRasterLayer(scene.image, "image", "gdal")
    QgsProject.instance().addMapLayers([dem, image])
    dlg = TrainGanDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    dlg.inputLayer.setLayer(image)
    assert dlg.targetLayer.currentLayer() is None
    assert not dlg.l1Spin.isEnabled() and not dlg.targetBandsEdit.isEnabled()
    assert "target raster" in dlg.l1Spin.toolTip()
    dlg.targetLayer.setLayer(dem)
    assert dlg.l1Spin.isEnabled() and dlg.targetBandsEdit.isEnabled()
    dlg.targetLayer.setLayer(None)
    assert not dlg.l1Spin.isEnabled()
    # the close question does not promise a layer this job never makes
    asked = []
    monkeypatch.setattr(messages, "ask_about_running", lambda parent, text, info, *a: asked.append(info) or "stay")
    dlg.ask_about_running_job()
    assert "model file" in asked[0] and "added to the map" not in asked[0]


def test_a_long_error_shows_its_first_sentence_and_all_of_it_under_show_more(qtbot, qgis_app):
    """Issue 21: long errors were cut off at the message bar's edge."""
    from qgis.core import Qgis
    from qgis.gui import QgsMessageBar
    from qgis.PyQt.QtWidgets import QToolButton

    from geoml_plugin.gui.messages import push_to_bar

    bar = QgsMessageBar()
    qtbot.addWidget(bar)
    bar.resize(600, 40)
    bar.show()

    class Plugin:
        def message_bar(self):
            return bar

    text = ("The label raster 'opengeos_dtm_2m.tif' holds continuous values (fractional values, from 6.906 to 22.12), "
            "not classes. To learn these values choose Task = regression; for classes use a raster of class numbers "
            "(or points/polygons with a class field).")
    assert push_to_bar(Plugin(), text, Qgis.MessageLevel.Warning, 0)
    item = bar.currentItem()
    assert item.text().startswith("The label raster 'opengeos_dtm_2m.tif' holds continuous values")
    assert item.text().endswith("not classes. …") and len(item.text()) < len(text)
    more = [b for b in item.findChildren(QToolButton) if "more" in b.text().lower()]
    assert more, [b.text() for b in item.findChildren(QToolButton)]
    push_to_bar(Plugin(), "Short.", Qgis.MessageLevel.Info, 0)
    assert bar.currentItem().text() == "Short."

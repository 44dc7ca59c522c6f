"""Fixtures for tests on a real QGIS (pytest-qgis starts QgsApplication)."""
from __future__ import annotations

import pytest

_KEEP: list = []  # Python wrappers of registered providers must outlive the tests


@pytest.fixture()
def geoml_provider(qgis_processing):
    """The GeoML provider registered in QGIS's Processing registry."""
    from qgis.core import QgsApplication

    from geoml_plugin.processing.provider import GeoMLProvider

    reg = QgsApplication.processingRegistry()
    if reg.algorithmById("geoml:predict") is None:
        if reg.providerById("geoml") is not None:
            reg.removeProvider(reg.providerById("geoml"))
        provider = GeoMLProvider()
        assert reg.addProvider(provider)
        _KEEP.append(provider)
    return reg.providerById("geoml")


@pytest.fixture(scope="module")
def release_provider():
    """Unregister the GeoML provider after the module (``pytestmark = pytest.mark.usefixtures(...)``):
    the plugin tests register their own."""
    yield
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()
    if reg.providerById("geoml") is not None:
        reg.removeProvider(reg.providerById("geoml"))


class FakePlugin:
    """What GeoML's dialogs and panels use of the plugin object: pytest-qgis's iface and its message bar."""

    def __init__(self, iface):
        self.iface = iface

    def message_bar(self):
        return self.iface.messageBar()


def wait_for_task(qtbot, dialog, timeout=120_000):
    """Wait until the dialog's background task has finished (main thread callbacks ran), including a task the
    dialog let go of at Cancel (it gives the dialog back within a second; the job ends at its next step)."""
    qtbot.waitUntil(lambda: dialog.task is None and not getattr(dialog, "released", None), timeout=timeout)


def open_finetune_dialog(qtbot, iface, scene, small: bool = True):
    """A Fine-tune dialog on the sample image and its label points (class_name), settings forgotten;
    ``small``: CPU, 16-px patches, batch 16 (quick jobs)."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer

    from geoml_plugin.gui.finetune_dialog import FinetuneDialog

    QgsSettings().remove("geoml/finetune")
    image = QgsRasterLayer(scene.image, "sample image", "gdal")
    points = QgsVectorLayer(scene.points, "label points", "ogr")
    QgsProject.instance().addMapLayers([image, points])
    dlg = FinetuneDialog(FakePlugin(iface))
    qtbot.addWidget(dlg)
    dlg.inputLayer.setLayer(image)
    dlg.labelsLayer.setLayer(points)
    dlg.labelField.setField("class_name")
    if small:
        dlg.deviceCombo.setCurrentText("cpu")
        dlg.patchSpin.setValue(16)
        dlg.batchSpin.setValue(16)
    return dlg

"""Remembered dialog settings (QgsSettings under geoml/): they survive a reopen, and odd values
(hand-edited QGIS3.ini, another version's or a script's values) never stop a dialog from opening."""
import math

import pytest
from qgis.core import QgsSettings

from tests.qgis.conftest import FakePlugin

KEYS = {
    "predict": ["model", "device", "batch", "views"],
    "finetune": ["task", "backbone", "weights", "extent", "weights_file", "patch", "epochs", "batch", "lr",
                 "validation", "seed", "max_samples", "augment", "freeze", "report", "classify", "device", "output",
                 "field"],
    "traingan": ["device", "tile", "iterations"],
    "gan_panel": ["tile", "style", "model"],
}
ODD = ["abc", "99999999999", "-99999999999", "nan", "inf", ["a", "b"], 7, True, ""]


def _open(which, qtbot, qgis_iface):
    if which == "gan_panel":
        from geoml_plugin.gui.gan_panel import GanPanel

        dlg = GanPanel(FakePlugin(qgis_iface), qgis_iface.mapCanvas())
    else:
        from geoml_plugin.gui.finetune_dialog import FinetuneDialog
        from geoml_plugin.gui.predict_dialog import PredictDialog
        from geoml_plugin.gui.traingan_dialog import TrainGanDialog

        cls = {"predict": PredictDialog, "finetune": FinetuneDialog, "traingan": TrainGanDialog}[which]
        dlg = cls(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    return dlg


@pytest.mark.parametrize("odd", ODD, ids=[repr(o) for o in ODD])
@pytest.mark.parametrize("which", list(KEYS))
def test_odd_remembered_values_do_not_stop_a_dialog_opening(qtbot, qgis_iface, which, odd):
    s = QgsSettings()
    try:
        for key in KEYS[which]:
            s.setValue(f"geoml/{which}/{key}", odd)
        dlg = _open(which, qtbot, qgis_iface)
        if which == "finetune":
            assert math.isfinite(dlg.lrSpin.value()) and dlg.batchSpin.value() >= 1
        elif which == "gan_panel":
            assert dlg.tileSizeCombo.currentText() in ("64", "128", "256", "512")
    finally:
        s.remove(f"geoml/{which}")


def test_remembered_finetune_settings_survive_a_reopen(qtbot, qgis_iface):
    QgsSettings().remove("geoml/finetune")
    try:
        dlg = _open("finetune", qtbot, qgis_iface)
        dlg.patchSpin.setValue(48)
        dlg.batchSpin.setValue(8)
        dlg.augmentCheck.setChecked(False)
        dlg.deviceCombo.setCurrentText("cpu")
        dlg.save_settings()
        dlg.close()
        again = _open("finetune", qtbot, qgis_iface)
        assert (again.patchSpin.value(), again.batchSpin.value()) == (48, 8)
        assert not again.augmentCheck.isChecked() and again.deviceCombo.currentText() == "cpu"
        assert not [k for k in QgsSettings().allKeys() if "patch" in k and not k.startswith("geoml/")]
    finally:
        QgsSettings().remove("geoml/finetune")

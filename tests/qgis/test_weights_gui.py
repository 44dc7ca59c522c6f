"""Pretrained weights in the desktop: the Weights… manager (download with consent and progress, verify, remove)
and the Fine-tune dialog (catalogue entries per backbone, consent before a download, weight bands)."""
import os

import pytest
from qgis.PyQt.QtWidgets import QMessageBox

from tests.core.test_weights_download import serve_entry
from tests.qgis.conftest import FakePlugin, open_finetune_dialog
from tests.weights_server import WeightsServer

YES, NO = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No


@pytest.fixture
def server():
    with WeightsServer() as s:
        yield s


def _answer(monkeypatch, button, asked):
    def question(parent, title, text, *args):
        asked.append(text)
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))


def test_manager_downloads_with_consent_then_verifies_and_removes(qtbot, qgis_iface, server, tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.pretrained import cached_path
    from geoml_plugin.gui.weights_dialog import WeightsDialog

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = serve_entry(server, monkeypatch)
    dlg = WeightsDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    from geoml_plugin.core.finetune import weights_catalog

    assert dlg.table.rowCount() == len(weights_catalog.CATALOGUE)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in dlg.folderLabel.text()
    dlg.select(entry.name)
    assert dlg.downloadButton.isEnabled() and not dlg.verifyButton.isEnabled()
    asked = []
    _answer(monkeypatch, NO, asked)
    dlg.download()
    assert dlg.task is None and server.requests == []  # no consent, no download
    assert "Size: 44.7 MB" in asked[0] and entry.url in asked[0] and "Licence: BSD-3-Clause" in asked[0]
    _answer(monkeypatch, YES, asked)
    dlg.download()
    assert dlg.task is not None and not dlg.progress.isHidden() and dlg.cancelButton.isEnabled()
    percents = []
    dlg.task.percent.connect(percents.append)
    qtbot.waitUntil(lambda: dlg.task is None, timeout=60_000)
    assert os.path.isfile(cached_path(entry)) and "Downloaded and verified" in dlg.statusLabel.text()
    assert percents and percents[-1] == 100.0 and dlg.progress.isHidden()
    row = [dlg.table.item(r, 0).text() for r in range(dlg.table.rowCount())].index(entry.name)
    assert dlg.table.item(row, 5).text().startswith("yes, 4")
    dlg.verify()
    assert "matches the published checksum" in dlg.statusLabel.text()
    with open(cached_path(entry), "r+b") as f:  # tampered afterwards
        f.write(b"\0\0\0\0")
    dlg.verify()
    assert "does NOT start with" in dlg.statusLabel.text()
    dlg.remove()
    assert not os.path.exists(cached_path(entry)) and dlg.table.item(row, 5).text() == "no"


@pytest.fixture()
def dialog(qtbot, qgis_iface, qgis_new_project, scene):
    dlg = open_finetune_dialog(qtbot, qgis_iface, scene, small=False)
    dlg.outputFile.setFilePath(str(scene.image).replace("image.tif", "ft_weights.safetensors"))
    return dlg


def test_finetune_dialog_offers_catalogue_weights_and_asks_before_downloading(dialog, server, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = serve_entry(server, monkeypatch)
    keys = lambda: [dialog.weightsCombo.itemData(i) for i in range(dialog.weightsCombo.count())]  # noqa: E731
    assert keys() == ["none", "file"]  # small CNN: no pretrained weights
    assert not dialog.weightBandsEdit.isEnabled()
    dialog.backboneCombo.setCurrentIndex(dialog.backboneCombo.findData("resnet18"))
    assert {"imagenet", "resnet18_sentinel2_all_moco", "resnet18_sentinel2_rgb_seco", entry.name} <= set(keys())
    dialog.weightsCombo.setCurrentIndex(dialog.weightsCombo.findData(entry.name))
    assert dialog.weightBandsEdit.isEnabled() and entry.url in dialog.weightsCombo.toolTip()
    asked = []
    _answer(monkeypatch, NO, asked)
    assert dialog.make_job() is None and server.requests == [] and len(asked) == 1
    assert "not on this computer" in dialog.statusLabel.text()
    _answer(monkeypatch, YES, asked)
    dialog.weightBandsEdit.setText("R,G,B,-")
    captured = {}
    import geoml_plugin.core.finetune.job as finetune

    monkeypatch.setattr(finetune, "run_finetune", lambda cfg, fb=None: captured.setdefault("cfg", cfg))
    description, job = dialog.make_job()
    job(None)
    cfg = captured["cfg"]
    assert cfg.weights == entry.name and cfg.download_weights and cfg.weight_bands == ["R", "G", "B", "-"]
    assert server.requests == []  # the download is the job's (in its QgsTask), not the dialog's


def test_choosing_a_resnet_proposes_cached_weights_only(dialog, tmp_path, monkeypatch):
    from geoml_plugin.core.finetune.pretrained import cached_path
    from geoml_plugin.core.finetune.weights_catalog import find_entry

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    dialog.backboneCombo.setCurrentIndex(dialog.backboneCombo.findData("resnet34"))
    assert dialog.weightsCombo.currentData() == "none"  # nothing cached: from scratch, nothing downloaded
    path = cached_path(find_entry("imagenet", "resnet18"))
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    dialog.backboneCombo.setCurrentIndex(dialog.backboneCombo.findData("resnet18"))
    assert dialog.weightsCombo.currentData() == "imagenet" and "ImageNet" in dialog.statusLabel.text()
    dialog.weightsCombo.setCurrentIndex(dialog.weightsCombo.findData("none"))
    dialog.backboneCombo.setCurrentIndex(dialog.backboneCombo.findData("small_resnet"))
    assert dialog.weightsCombo.currentData() == "none"


def test_band_map_table_preselects_named_bands_and_fills_weight_bands(dialog, tmp_path, monkeypatch):
    from geoml_plugin.gui.weights_dialog import BandMapDialog

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    dialog.backboneCombo.setCurrentIndex(dialog.backboneCombo.findData("resnet18"))
    dialog.weightsCombo.setCurrentIndex(dialog.weightsCombo.findData("resnet18_sentinel2_rgb_moco"))
    assert dialog.mapBandsButton.isEnabled()
    assert "Not on this computer yet: resnet18_sentinel2_rgb_moco" in dialog.statusLabel.text()
    assert "CC-BY-4.0" in dialog.statusLabel.text()
    shown = {}

    def exec_(self):
        shown["rows"] = [(self.table.item(r, 0).text(), c.currentData()) for r, c in enumerate(self.combos)]
        self.combos[3].setCurrentIndex(self.combos[3].findData("B04"))  # the analyst maps band 4 too
        return 1

    monkeypatch.setattr(BandMapDialog, "exec", exec_)
    dialog.map_bands()
    # the sample scene's bands are described red, green, blue, nir: RGB by name, NIR unknown to RGB weights
    assert [v for _, v in shown["rows"]] == ["B04", "B03", "B02", "-"]
    assert dialog.weightBandsEdit.text() == "B04,B03,B02,B04"


def test_manager_adds_a_file_downloaded_by_hand_and_refuses_a_wrong_one(qtbot, qgis_iface, tmp_path, monkeypatch):
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QFileDialog

    from geoml_plugin.core.finetune.pretrained import cached_path
    from geoml_plugin.gui.weights_dialog import WeightsDialog
    from tests.core.test_weights_download import DATA, hand_entry

    entry = hand_entry(monkeypatch, tmp_path)
    dlg = WeightsDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    (tmp_path / "bad.pth").write_bytes(DATA[:1000])
    (tmp_path / "test_rgb (1).pth").write_bytes(DATA)
    chosen = [str(tmp_path / "bad.pth")]
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (chosen[0], "")))
    qtbot.mouseClick(dlg.addButton, Qt.MouseButton.LeftButton)
    assert "bad.pth is not a file of GeoML's weights catalogue" in dlg.statusLabel.text()
    assert not os.path.exists(cached_path(entry))
    chosen[0] = str(tmp_path / "test_rgb (1).pth")
    qtbot.mouseClick(dlg.addButton, Qt.MouseButton.LeftButton)
    assert dlg.statusLabel.text().startswith("Added 'test_rgb'") and os.path.isfile(cached_path(entry))
    assert dlg.current_name() == "test_rgb" and dlg.verifyButton.isEnabled()
    row = [dlg.table.item(r, 0).text() for r in range(dlg.table.rowCount())].index(entry.name)
    assert dlg.table.item(row, 5).text().startswith("yes")

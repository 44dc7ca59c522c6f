"""Dependencies in QGIS: message-bar offer, installer dialog (real pip on local wheels; the full and the apply-only
install),
diagnostics dialog, GPU badge, Processing error text, plugin actions."""
import os
import sys

import pytest
from qgis.core import Qgis, QgsApplication, QgsProcessingException
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QGuiApplication
from qgis.PyQt.QtWidgets import QPushButton

from geoml_plugin.core.errors import DependencyError
from geoml_plugin.deps import detect as deps
from geoml_plugin.gui import single_instance
from geoml_plugin.gui.deps import badge
from geoml_plugin.gui.deps import offer as deps_ui
from tests.deps.wheels import ISOLATED_PIP_ENV, HangingServer, local_wheels
from tests.qgis.conftest import FakePlugin


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # installs activate folders: undo after each test
    deps.invalidate()
    yield
    deps.invalidate()
    for dlg in list(single_instance._standalone.values()):
        try:
            dlg.close()
        except RuntimeError:
            pass
    single_instance._standalone.clear()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return local_wheels(tmp_path_factory.mktemp("wheels"))


@pytest.fixture()
def bar(qgis_iface):
    b = qgis_iface.messageBar()
    b.clearWidgets()
    return b


def _predict_dialog(qtbot, qgis_iface):
    from qgis.core import QgsSettings

    from geoml_plugin.gui.predict_dialog import PredictDialog

    # no remembered model: an .onnx one (left by an earlier test or run) needs no torch, so nothing would be offered
    QgsSettings().remove("geoml/predict/model")
    dlg = PredictDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    return dlg


def test_missing_torch_offers_installer_instead_of_running(qtbot, qgis_iface, bar, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what QGIS without torch looks like to find_spec
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # and without onnxruntime (not apply-only)
    dlg = _predict_dialog(qtbot, qgis_iface)
    assert dlg.deviceBadge.text() == deps.NOT_INSTALLED_BADGE
    assert dlg.run() is None and dlg.task is None
    assert "PyTorch (torch) is not installed in this QGIS." in dlg.logView.toPlainText()
    item = deps_ui.current_offer(bar)
    assert item is not None and "PyTorch (torch) is not installed" in item.text()
    button = item.findChild(QPushButton, "geomlInstallButton")
    assert button.text() == "Install dependencies…"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    installer_dlg = single_instance._standalone["installer"]
    assert installer_dlg.isVisible()
    assert "torch, torchvision" in installer_dlg.planView.toPlainText()
    assert "PyTorch is not installed." in installer_dlg.detectionLabel.text()
    assert deps_ui.current_offer(bar) is None  # the offer goes away once taken up


def test_dependency_error_during_job_is_routed_to_the_offer(qtbot, qgis_iface, bar):
    dlg = _predict_dialog(qtbot, qgis_iface)

    def job(fb):
        raise DependencyError("torchvision cannot be imported: operator torchvision::nms does not exist.", "hint")

    dlg.make_job = lambda: ("GeoML: test job", job)
    assert dlg.run() is not None
    qtbot.waitUntil(lambda: dlg.task is None, timeout=30_000)
    item = deps_ui.current_offer(bar)
    assert item is not None and "operator torchvision::nms does not exist" in item.text()
    assert item.findChild(QPushButton, "geomlDiagnosticsButton") is not None
    assert "Failed: torchvision cannot be imported" in dlg.logView.toPlainText()


def test_badge_is_filled_in_by_the_background_check(qtbot, qgis_iface, monkeypatch):
    import torch

    monkeypatch.setattr(deps, "gpu_summary", lambda block=True: "")  # as when torch is not loaded yet
    dlg = _predict_dialog(qtbot, qgis_iface)
    assert dlg.deviceBadge.text() == badge.CHECKING_BADGE
    qtbot.waitUntil(lambda: dlg.deviceBadge.text() != badge.CHECKING_BADGE, timeout=60_000)
    if torch.cuda.is_available():
        assert dlg.deviceBadge.text().startswith("GPU: ")
    else:
        assert dlg.deviceBadge.text() == deps.CPU_BADGE


def _installer(qtbot, qgis_iface, tmp_path, source, packages=("geomltest-a",)):
    from geoml_plugin.gui.deps.installer_dialog import InstallerDialog

    target = tmp_path / "profile" / "python" / "geoml_packages" / "py3x"
    dlg = InstallerDialog(FakePlugin(qgis_iface), target=target, packages=list(packages), source=str(source),
                          extra_env=ISOLATED_PIP_ENV)
    qtbot.addWidget(dlg)
    dlg.show()
    return dlg, target


def test_installer_dialog_installs_local_wheel_and_it_imports_without_restart(qtbot, qgis_iface, bar, tmp_path,
                                                                              wheels):
    dlg, target = _installer(qtbot, qgis_iface, tmp_path, wheels)
    plan_text = dlg.planView.toPlainText()
    assert str(target) in plan_text and "geomltest-a" in plan_text and "--no-index" in plan_text
    assert str(target) in dlg.targetLabel.text()
    assert not dlg.variantCombo.isEnabled()  # a folder of wheels is installed as it is
    qtbot.mouseClick(dlg.installButton, Qt.MouseButton.LeftButton)
    assert dlg.task is not None and dlg.cancelButton.isEnabled() and not dlg.installButton.isEnabled()
    qtbot.waitUntil(lambda: dlg.task is None, timeout=120_000)
    assert dlg.result is not None, dlg.statusLabel.text() + dlg.logView.toPlainText()
    assert "Installed. GeoML can use it now — no QGIS restart needed." in dlg.statusLabel.text()
    assert "Successfully installed" in dlg.logView.toPlainText()
    assert dlg.progressBar.value() == 100
    assert sys.path[0] == str(target)
    import geomltest_a  # in this very process: no restart

    assert geomltest_a.VALUE == 42 and geomltest_a.__file__.startswith(str(target))
    del sys.modules["geomltest_a"], sys.modules["geomltest_b"]
    assert any("Installed." in m for m in bar.get_messages(Qgis.MessageLevel.Success))


def test_installer_dialog_cancel(qtbot, qgis_iface, tmp_path):
    server = HangingServer()
    try:
        dlg, target = _installer(qtbot, qgis_iface, tmp_path, server.url)
        dlg.plan.extra_env.update({"PIP_DEFAULT_TIMEOUT": "30", "PIP_RETRIES": "0"})
        dlg.install()
        qtbot.waitUntil(lambda: bool(server.conns), timeout=60_000)
        qtbot.mouseClick(dlg.cancelButton, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dlg.task is None, timeout=15_000)
    finally:
        server.close()
    assert "Cancelled; nothing was changed." in dlg.statusLabel.text()
    assert dlg.result is None and not target.exists() and not deps.staging_dir(target).exists()
    assert dlg.installButton.isEnabled() and not dlg.cancelButton.isEnabled()


def test_installer_failure_shows_log_and_copies_diagnostics(qtbot, qgis_iface, tmp_path):
    empty = tmp_path / "no_wheels"
    empty.mkdir()
    dlg, target = _installer(qtbot, qgis_iface, tmp_path, empty)
    dlg.install()
    qtbot.waitUntil(lambda: dlg.task is None, timeout=120_000)
    assert "Installation failed: pip failed" in dlg.statusLabel.text()
    assert "No build of these packages was found" in dlg.statusLabel.text()
    assert "geomltest-a" in dlg.logView.toPlainText()  # pip's own messages stay visible
    assert not target.exists()
    qtbot.mouseClick(dlg.copyButton, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(dlg.last_diagnostics), timeout=120_000)
    copied = QGuiApplication.clipboard().text()
    assert copied == dlg.last_diagnostics
    assert copied.startswith("GeoML diagnostics") and "Installer log (last 300 lines):" in copied
    assert "ERROR: No matching distribution found for geomltest-a" in copied


def test_bad_source_is_refused_before_installing(qtbot, qgis_iface, tmp_path):
    dlg, _ = _installer(qtbot, qgis_iface, tmp_path, "not a folder nor a url")
    assert not dlg.installButton.isEnabled()
    assert "neither a folder of wheel files nor an index URL" in dlg.statusLabel.text()


def test_diagnostics_dialog_reports_and_copies(qtbot, qgis_iface):
    import torch

    from geoml_plugin.gui.deps.diagnostics_dialog import open_dialog

    dlg = open_dialog(FakePlugin(qgis_iface))
    qtbot.waitUntil(lambda: dlg.task is None, timeout=120_000)
    text = dlg.reportView.toPlainText()
    assert f"torch        {torch.__version__}" in text and "Status: OK" in text
    assert dlg.statusLabel.text() == "GeoML is ready to run jobs."
    qtbot.mouseClick(dlg.copyButton, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == text


def test_processing_names_the_installer_when_torch_is_missing(geoml_provider, tmp_path, monkeypatch, scene,
                                                             sample_model):
    import processing

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(QgsProcessingException) as err:
        processing.run("geoml:predict", {"INPUT": scene.image, "MODEL": sample_model,
                                         "OUTPUT": str(tmp_path / "o.tif")})
    assert "PyTorch (torch) is not installed" in str(err.value)
    assert "Raster ▸ GeoML ▸ Install dependencies…" in str(err.value)
    assert not (tmp_path / "o.tif").exists()


def test_plugin_has_diagnostics_and_install_actions_and_offers_when_missing(qtbot, qgis_iface, qgis_processing,
                                                                            bar, monkeypatch, tmp_path):
    import geoml_plugin

    reg = QgsApplication.processingRegistry()
    if reg.providerById("geoml") is not None:  # registered by another test's fixture
        reg.removeProvider(reg.providerById("geoml"))
    private = tmp_path / "geoml_packages" / "py3x"
    private.mkdir(parents=True)
    monkeypatch.setenv(deps.ENV_DIR, str(private))
    plugin = geoml_plugin.classFactory(qgis_iface)
    assert sys.path[0] == str(private)  # GeoML's own packages win over broken ones elsewhere
    plugin.initGui()
    try:
        assert plugin.actions["diagnostics"].text() == "Diagnostics…"
        assert plugin.actions["install_deps"].text() == "Install dependencies…"
        assert deps_ui.current_offer(bar) is None  # torch is installed here: no nagging
        monkeypatch.setitem(sys.modules, "torchvision", None)
        plugin.offer_install_if_missing()
        assert deps_ui.current_offer(bar) is not None
        dlg = plugin.open_tool("gui.deps.diagnostics_dialog:open_dialog")
        assert plugin.dialogs["diagnostics"] is dlg
        qtbot.waitUntil(lambda: dlg.task is None, timeout=120_000)
        assert "GeoML diagnostics" in dlg.reportView.toPlainText()
    finally:
        plugin.unload()


def test_qgis_proxy_settings_are_passed_to_pip(qtbot, qgis_iface, tmp_path, wheels, monkeypatch):
    from qgis.core import QgsSettings

    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(k, raising=False)
    s = QgsSettings()
    keys = {"proxy/proxyEnabled": True, "proxy/proxyType": "HttpProxy", "proxy/proxyHost": "proxy.example.org",
            "proxy/proxyPort": "3128", "proxy/proxyUser": "ana", "proxy/proxyPassword": "p@ss"}
    old = {k: s.value(k) for k in keys}
    try:
        for k, v in keys.items():
            s.setValue(k, v)
        dlg, _ = _installer(qtbot, qgis_iface, tmp_path, wheels)
        assert dlg.plan.extra_env["HTTPS_PROXY"] == "http://ana:p%40ss@proxy.example.org:3128"
        assert "Proxy: http://proxy.example.org:3128 (from QGIS's network settings)" in dlg.planView.toPlainText()
        assert "p%40ss" not in dlg.planView.toPlainText()
    finally:
        for k, v in old.items():
            if v is None:
                s.remove(k)
            else:
                s.setValue(k, v)


def test_installer_dialog_defaults_show_choice_and_place(qtbot, qgis_iface, tmp_path, monkeypatch):
    from geoml_plugin.deps.gpu_driver import detect_nvidia
    from geoml_plugin.gui.deps.installer_dialog import InstallerDialog

    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "geoml_packages" / "py3x"))
    dlg = InstallerDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    assert dlg.variantCombo.currentData() == dlg.recommended.key and dlg.variantCombo.isEnabled()
    assert dlg.reasonLabel.text() == dlg.reason
    text = dlg.planView.toPlainText()
    assert f"into: {tmp_path / 'geoml_packages' / 'py3x'}" in text
    if dlg.recommended.key != "pypi":  # not macOS: torch from PyTorch's index, safetensors from PyPI
        assert "1. torch, torchvision" in text and "2. safetensors" in text
    dlg.variantCombo.setCurrentIndex(dlg.variantCombo.findData("cu126"))
    assert "--index-url https://download.pytorch.org/whl/cu126" in dlg.planView.toPlainText()
    if not detect_nvidia().present:
        assert "No NVIDIA GPU was found" in dlg.reasonLabel.text()
    qtbot.waitUntil(lambda: "Now: Working: " in dlg.detectionLabel.text(), timeout=60_000)


def test_installer_says_pytorch_works_in_words_and_offers_a_reinstall(qtbot, qgis_iface, tmp_path, monkeypatch):
    """Issue 21: 'Now: Working: CPU only' read oddly, and Install looked like the next step though PyTorch works."""
    from geoml_plugin.gui.deps.installer_dialog import InstallerDialog

    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "geoml_packages" / "py3x"))
    dlg = InstallerDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: "Now: Working: " in dlg.detectionLabel.text(), timeout=60_000)
    now = dlg.detectionLabel.text().split("Now: ", 1)[1]
    assert now.startswith("Working: PyTorch ") and (" runs on the CPU only" in now or " runs on the GPU: " in now), now
    assert "Working: CPU only" not in now
    assert dlg.installButton.text() == "Reinstall" and "works already" in dlg.installButton.toolTip()


# -- the apply-only install (issue 23) ------------------------------------------------------------------------
def test_installer_offers_the_full_and_the_apply_only_install(qtbot, qgis_iface, tmp_path, monkeypatch):
    from geoml_plugin.deps import installer
    from geoml_plugin.gui.deps.installer_dialog import InstallerDialog

    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "geoml_packages" / "py3x"))
    dlg = InstallerDialog(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.fullRadio.isVisible() and dlg.applyOnlyRadio.isVisible()
    assert dlg.fullRadio.isChecked() and not dlg.applyOnlyRadio.isChecked()  # the full install by default
    full_text, apply_text = dlg.fullRadio.text(), dlg.applyOnlyRadio.text()
    assert "PyTorch, torchvision, safetensors" in full_text and installer.CPU_VARIANT.download in full_text
    assert "onnxruntime" in apply_text and "about 20–60 MB" in apply_text and "no training" in apply_text
    assert "torch, torchvision" in dlg.planView.toPlainText()
    qtbot.mouseClick(dlg.applyOnlyRadio, Qt.MouseButton.LeftButton)
    assert dlg.applyOnlyRadio.isChecked() and dlg.plan.apply_only
    plan_text = dlg.planView.toPlainText()
    commands = plan_text.split("Commands:")[1]
    assert "onnxruntime" in commands and "torch" not in commands and "safetensors" not in commands
    assert f"--target {tmp_path / 'geoml_packages' / 'py3x-onnxruntime.new'}" in commands
    assert "Download: about 20–60 MB" in plan_text
    assert not dlg.variantCombo.isEnabled()  # the PyTorch build does not apply
    assert "need the full install" in dlg.reasonLabel.text()
    assert str(tmp_path / "geoml_packages" / "py3x-onnxruntime") in dlg.targetLabel.text()
    qtbot.mouseClick(dlg.fullRadio, Qt.MouseButton.LeftButton)
    assert not dlg.plan.apply_only and "torch, torchvision" in dlg.planView.toPlainText()
    assert dlg.variantCombo.isEnabled() and dlg.reasonLabel.text() == dlg.reason


def test_apply_only_install_then_onnx_models_work_and_training_asks_for_the_full_install(
        qtbot, qgis_iface, bar, tmp_path, wheels, monkeypatch):
    """pip (on a stand-in onnxruntime wheel) through the dialog; then, with PyTorch missing, the installer and the
    job dialogs' badge say that ONNX models can be applied, and a job that needs PyTorch offers the full install."""
    from geoml_plugin.gui.deps.installer_dialog import InstallerDialog
    from tests.deps.wheels import make_wheel

    make_wheel(wheels, "onnxruntime", "1.99.0", {"onnxruntime/__init__.py": "__version__ = '1.99.0'\n"})
    # this session's real onnxruntime, if loaded, would need a QGIS restart; nothing here imports the stand-in
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    full = tmp_path / "profile" / "python" / "geoml_packages" / "py3x"
    dlg = InstallerDialog(FakePlugin(qgis_iface), target=full, source=str(wheels), extra_env=ISOLATED_PIP_ENV,
                          apply_only=True)
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.applyOnlyRadio.isChecked() and dlg.plan.apply_only
    assert dlg.plan.steps[0].packages == ["onnxruntime"]
    qtbot.mouseClick(dlg.installButton, Qt.MouseButton.LeftButton)
    assert dlg.task is not None and dlg.cancelButton.isEnabled()
    assert not dlg.fullRadio.isEnabled() and not dlg.applyOnlyRadio.isEnabled()
    qtbot.waitUntil(lambda: dlg.task is None, timeout=120_000)
    assert dlg.result is not None, dlg.statusLabel.text() + dlg.logView.toPlainText()
    target = full.with_name("py3x-onnxruntime")
    assert dlg.result.target == target and (target / "onnxruntime" / "__init__.py").is_file()
    status = dlg.statusLabel.text()
    assert "Installed." in status and "Applying ONNX models works now" in status and "full install" in status
    assert sys.path[0] == str(target)  # usable now, no restart
    now = dlg.detectionLabel.text().split("Now: ", 1)[1]
    assert now.startswith("PyTorch is not installed; onnxruntime 1.99.0 is: applying ONNX models works"), now
    # the job dialogs: the badge says so; a job that needs PyTorch offers the full install
    pred = _predict_dialog(qtbot, qgis_iface)
    assert pred.deviceBadge.text() == deps.APPLY_ONLY_BADGE
    assert not pred.deviceCombo.model().item(pred.deviceCombo.findText("cuda")).isEnabled()
    assert pred.run() is None and pred.task is None
    log = pred.logView.toPlainText()
    assert "PyTorch (torch) is not installed" in log and "Only applying ONNX models (.onnx) works" in log
    assert "Full install" in log
    item = deps_ui.current_offer(bar)
    assert item is not None and "full install" in item.text()
    assert item.findChild(QPushButton, "geomlInstallButton") is not None


def test_apply_model_with_an_onnx_file_runs_where_torch_cannot_be_imported(qtbot, qgis_iface, qgis_new_project,
                                                                          scene, sample_model, out_dir, monkeypatch):
    """Apply model with an .onnx model, PyTorch made unimportable (and no earlier check cached): the dialog runs
    the job on onnxruntime and writes the map."""
    pytest.importorskip("onnxruntime")
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer

    from geoml_plugin.core.onnx_export import export_onnx

    onnx_path = str(out_dir / "lda.onnx")
    export_onnx(sample_model, onnx_path)  # needs PyTorch: before it is made unimportable
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` (and torch.anything) now raises ImportError
    layer = QgsRasterLayer(scene.image, "image", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dlg = _predict_dialog(qtbot, qgis_iface)
    dlg.inputLayer.setLayer(layer)
    dlg.modelFile.setFilePath(onnx_path)
    assert dlg.deviceBadge.text() == deps.APPLY_ONLY_BADGE  # torch missing, onnxruntime there
    out = str(out_dir / "onnx_no_torch.tif")
    dlg.outputFile.setFilePath(out)
    dlg.deviceCombo.setCurrentText("cpu")
    assert dlg.run() is not None
    qtbot.waitUntil(lambda: dlg.task is None, timeout=120_000)
    assert os.path.exists(out) and "Failed" not in dlg.logView.toPlainText(), dlg.logView.toPlainText()
    truth = gdal.Open(scene.landcover).ReadAsArray()
    assert (gdal.Open(out).ReadAsArray() == truth)[truth > 0].mean() > 0.95

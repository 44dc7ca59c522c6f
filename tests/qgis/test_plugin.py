import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import QgsApplication

import geoml_plugin

ROOT = Path(__file__).resolve().parents[2]


def _without_registered_provider():
    reg = QgsApplication.processingRegistry()
    if reg.providerById("geoml") is not None:  # left by fixtures of other tests
        reg.removeProvider(reg.providerById("geoml"))


def test_plugin_loads_gui_and_unloads_cleanly(qgis_iface, qgis_processing):
    _without_registered_provider()
    plugin = geoml_plugin.classFactory(qgis_iface)
    plugin.initGui()
    reg = QgsApplication.processingRegistry()
    assert reg.providerById("geoml") is not None
    assert reg.algorithmById("geoml:predict") is not None
    assert "predict" in plugin.actions
    menu_calls = qgis_iface.addPluginToRasterMenu.call_args_list
    assert any(c.args[0] == "&GeoML" and c.args[1] is plugin.actions["predict"] for c in menu_calls)
    assert plugin.toolbar is not None and plugin.actions["predict"] in plugin.toolbar.actions()
    plugin.unload()
    assert reg.providerById("geoml") is None
    assert plugin.actions == {}
    assert qgis_iface.removePluginRasterMenu.call_count >= 1


def test_qgis_process_style_loading_without_gui(qgis_processing):
    """qgis_process calls classFactory(None) then initProcessing()."""
    _without_registered_provider()
    plugin = geoml_plugin.classFactory(None)
    plugin.initProcessing()
    try:
        assert QgsApplication.processingRegistry().algorithmById("geoml:predict") is not None
    finally:
        plugin.unload()


def test_loading_the_plugin_does_not_import_torch():
    code = (
        "import sys; from qgis.core import QgsApplication; app = QgsApplication([], False); app.initQgis();"
        "import geoml_plugin; p = geoml_plugin.classFactory(None); p.initProcessing();"
        "import geoml_plugin.processing.provider as pr; [c() for c in pr.algorithm_classes()];"
        "print('torch' in sys.modules, 'torchvision' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False False"


GUI_STARTUP = r"""
import sys
from qgis.core import QgsApplication
app = QgsApplication([], True); app.initQgis()
from qgis.gui import QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtWidgets import QMainWindow

class Iface:  # what initGui and the dialogs use of QgisInterface
    def __init__(self):
        self.win, self.canvas, self.bar = QMainWindow(), QgsMapCanvas(), QgsMessageBar()
    def mainWindow(self): return self.win
    def mapCanvas(self): return self.canvas
    def messageBar(self): return self.bar
    def addToolBar(self, name): return self.win.addToolBar(name)
    def addPluginToRasterMenu(self, menu, action): pass
    def removePluginRasterMenu(self, menu, action): pass
    def addDockWidget(self, area, widget): self.win.addDockWidget(area, widget)

import geoml_plugin
from geoml_plugin.plugin import ACTIONS
p = geoml_plugin.classFactory(Iface()); p.initGui()
for key, _text, _icon, target, _tb in ACTIONS:
    if key != "metatrain":  # the Processing dialog: needs the Processing plugin
        p.open_tool(target)
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "safetensors"}))
p.unload()
"""


def test_initgui_and_opening_every_tool_import_no_torch():
    """QGIS start-up (classFactory + initGui) and opening the dialogs and panels stay light: torch,
    torchvision and safetensors are imported only when a job runs."""
    res = subprocess.run([sys.executable, "-c", GUI_STARTUP], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


def test_plugin_loads_and_explains_when_torch_is_missing(tmp_path):
    """With torch unimportable the plugin loads; a job fails with an install hint."""
    code = r"""
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ImportError('No module named ' + name)
sys.meta_path.insert(0, NoTorch())
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
import geoml_plugin
p = geoml_plugin.classFactory(None); p.initProcessing()
from geoml_plugin.core.device import resolve_device
from geoml_plugin.core.errors import DependencyError
try:
    resolve_device('auto')
except DependencyError as e:
    print('MSG', e)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert res.returncode == 0, res.stderr
    assert "MSG PyTorch (torch) is not usable" in res.stdout
    assert "Install dependencies" in res.stdout


def test_unload_while_a_job_runs_leaves_no_callback_into_deleted_dialogs(qtbot, qgis_iface, qgis_processing):
    """Plugin Manager update / Plugin Reloader while a job runs: the job is cancelled, and when it ends
    it calls nothing on the deleted dialog (no 'wrapped C/C++ object has been deleted')."""
    import threading

    from geoml_plugin import tasks

    _without_registered_provider()
    plugin = geoml_plugin.classFactory(qgis_iface)
    plugin.initGui()
    dlg = plugin.open_tool("gui.predict_dialog:open_dialog")
    started = threading.Event()

    def job(fb):
        started.set()
        while not fb.cancelled():
            fb.progress(0.5, "working")
            threading.Event().wait(0.02)
        fb.check()

    task = dlg.start_job("GeoML: test job", job)
    assert started.wait(10)
    qtbot.wait(100)  # queued progress signals pending
    plugin.unload()
    qtbot.waitUntil(lambda: task not in tasks._running, timeout=10_000)  # the job ends only when cancelled
    qtbot.wait(200)  # let queued signals run; pytest-qt fails the test on an exception in them


def test_unload_takes_back_the_install_offer(qgis_iface, qgis_processing, monkeypatch):
    """The message-bar offer (its buttons call into the plugin) does not outlive an unloaded or uninstalled plugin."""
    from geoml_plugin.deps import detect as deps
    from geoml_plugin.gui.deps import offer as deps_ui

    monkeypatch.setitem(sys.modules, "torch", None)  # QGIS without torch, as find_spec sees it
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # nor onnxruntime (not the apply-only install)
    deps.invalidate()
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    _without_registered_provider()
    plugin = geoml_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert deps_ui.current_offer(bar) is not None
        assert "or only onnxruntime (tens of MB) to apply ONNX models" in deps_ui.current_offer(bar).text()
    finally:
        plugin.unload()
        deps.invalidate()
    assert deps_ui.current_offer(bar) is None


def test_no_install_offer_at_start_after_the_apply_only_install(qgis_iface, qgis_processing, monkeypatch):
    """PyTorch missing but onnxruntime there (the apply-only install, a choice): no nagging at start-up; the
    badge and the tools that need PyTorch say what is missing."""
    pytest.importorskip("onnxruntime")
    from geoml_plugin.deps import detect as deps
    from geoml_plugin.gui.deps import offer as deps_ui

    monkeypatch.setitem(sys.modules, "torch", None)
    deps.invalidate()
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    _without_registered_provider()
    plugin = geoml_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert deps_ui.current_offer(bar) is None
        assert deps.gpu_summary(block=False) == deps.APPLY_ONLY_BADGE
    finally:
        plugin.unload()
        deps.invalidate()


def test_load_unload_load_leaves_one_of_everything(qtbot, qgis_iface, qgis_processing):
    """What Plugin Reloader and a plugin update do: unload, then load again in the same QGIS session."""
    from qgis.PyQt.QtCore import QCoreApplication, QEvent
    from qgis.PyQt.QtWidgets import QDockWidget, QToolBar

    _without_registered_provider()
    reg = QgsApplication.processingRegistry()
    for _ in range(2):
        plugin = geoml_plugin.classFactory(qgis_iface)
        plugin.initGui()
        plugin.open_tool("gui.predict_dialog:open_dialog")
        plugin.open_tool("gui.gan_panel:open_panel")
        plugin.open_tool("gui.fewshot_panel:open_panel")
        plugin.unload()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    win = qgis_iface.mainWindow()
    assert not [t for t in win.findChildren(QToolBar) if t.objectName() == "GeoMLToolbar"]
    assert not [d for d in win.findChildren(QDockWidget) if d.objectName() in ("GanPanel", "GeoMLFewShotDock")]
    assert reg.providerById("geoml") is None and qgis_iface.mapCanvas().mapTool() is None
    plugin = geoml_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert [p.id() for p in reg.providers()].count("geoml") == 1 and len(plugin.actions) == 8
        assert len([t for t in win.findChildren(QToolBar) if t.objectName() == "GeoMLToolbar"]) == 1
    finally:
        plugin.unload()

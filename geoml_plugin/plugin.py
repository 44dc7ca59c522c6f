"""The QGIS plugin object: menu, toolbar, Processing provider.

Loading it imports no torch (dialogs and algorithms import the core lazily),
so QGIS starts fast and the plugin loads even where torch is missing; then
it offers the installer in the message bar.
"""
from __future__ import annotations

import importlib

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon

from .paths import icon_path
from .qt_compat import QAction
from .tasks import cancel_all  # not imported in unload(): a plugin update has replaced the files by then

MENU = "&GeoML"

# (key, menu text, icon, "module:callable" opening the tool, on toolbar)
ACTIONS = [
    ("predict", "Apply model to raster…", "predict.svg", "gui.predict_dialog:open_dialog", True),
    ("finetune", "Fine-tune a model on your labels…", "finetune.svg", "gui.finetune_dialog:open_dialog", True),
    ("metatrain", "Meta-train a few-shot model…", "metatrain.svg", "gui.fewshot_panel:open_metatrain_dialog", False),
    ("fewshot", "Few-shot mapping (click points)…", "fewshot.svg", "gui.fewshot_panel:open_panel", True),
    ("traingan", "Train GAN (tiles or translation)…", "traingan.svg", "gui.traingan_dialog:open_dialog", True),
    ("gan_tiles", "Generate tiles (GAN map tool)…", "gan_tiles.svg", "gui.gan_panel:open_panel", True),
    ("install_deps", "Install dependencies…", "install.svg", "gui.deps.installer_dialog:open_dialog", False),
    ("diagnostics", "Diagnostics…", "diagnostics.svg", "gui.deps.diagnostics_dialog:open_dialog", False),
]


class GeoMLPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions: dict[str, QAction] = {}
        self.toolbar = None
        self.dialogs: dict = {}  # one per kind (gui.single_instance.show_single; the panels' docks)

    # Processing (also called by qgis_process, without initGui) ------------
    def initProcessing(self) -> None:  # noqa: N802
        from .processing.provider import GeoMLProvider

        if self.provider is None:
            provider = GeoMLProvider()
            # addProvider refuses (and deletes) a second provider with the same id
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    # GUI -------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.toolbar = self.iface.addToolBar("GeoML")
        self.toolbar.setObjectName("GeoMLToolbar")
        for key, text, icon, target, on_toolbar in ACTIONS:
            action = QAction(QIcon(icon_path(icon)), text, self.iface.mainWindow())
            action.setObjectName(f"geoml_{key}")
            action.triggered.connect(lambda _checked=False, t=target: self.open_tool(t))
            self.iface.addPluginToRasterMenu(MENU, action)
            if on_toolbar:
                self.toolbar.addAction(action)
            self.actions[key] = action
        self.offer_install_if_missing()

    def offer_install_if_missing(self) -> None:
        """At start-up, when torch is not even on the path, say so with a one-click fix (not after the apply-only
        install: onnxruntime without PyTorch is a choice)."""
        from .deps import detect

        st = detect.quick_status()  # find_spec only: imports nothing
        if detect.apply_only(st):
            return  # the apply-only install was chosen: the badge and the tools that need PyTorch say what it lacks
        if st.torch_missing or not st.package("torchvision").found or not st.package("safetensors").found:
            from .gui.deps.offer import offer_install

            offer_install(self, "GeoML needs PyTorch, torchvision and safetensors, which this QGIS does not have. "
                                "One click installs them (no administrator rights needed), or only onnxruntime "
                                "(tens of MB) to apply ONNX models.", duration=30)

    def open_tool(self, target: str):
        mod, fn = target.split(":")
        module = importlib.import_module(f"{__package__}.{mod}")
        return getattr(module, fn)(self)

    def unload(self) -> None:
        cancel_all()  # running jobs must not call back into the dialogs deleted below
        for action in self.actions.values():
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        for dlg in self.dialogs.values():
            try:
                dlg.close()
                dlg.deleteLater()
            except RuntimeError:
                pass
        self.dialogs.clear()
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        bar = self.message_bar()
        for item in list(bar.items()) if bar is not None else []:
            if item.objectName().startswith("geoml"):  # the install offer (gui.deps.offer): its buttons call into us
                bar.popWidget(item)

    def message_bar(self):
        return self.iface.messageBar() if self.iface is not None else None

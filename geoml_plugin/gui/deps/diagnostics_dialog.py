"""GeoML → Diagnostics: the plain-text report of :func:`deps.detect.diagnostics`, with Copy."""
from __future__ import annotations

from qgis.PyQt.QtGui import QFontDatabase, QGuiApplication
from qgis.PyQt.QtWidgets import QDialog

from ..forms import load_ui
from ..single_instance import main_window, show_single
from .badge import collect_diagnostics

FORM = load_ui("diagnostics_dialog.ui")


class DiagnosticsDialog(QDialog, FORM):
    def __init__(self, plugin=None, parent=None):
        super().__init__(parent)
        self.plugin = plugin
        self.setupUi(self)
        self.report = ""
        self.task = None
        self.reportView.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.copyButton.clicked.connect(self.copy)
        self.refreshButton.clicked.connect(lambda: self.refresh(True))
        self.installButton.clicked.connect(self.open_installer)
        self.closeButton.clicked.connect(self.close)
        self.refresh(False)

    def refresh(self, fresh: bool = True) -> None:
        """Collect the report in the background (importing torch in a separate process takes seconds)."""
        if self.task is not None:
            return
        self.copyButton.setEnabled(False)
        self.refreshButton.setEnabled(False)
        self.statusLabel.setText("Checking PyTorch in a separate Python process…")
        self.task = collect_diagnostics(self._show, refresh=fresh)

    def _show(self, text: str) -> None:
        self.task = None
        self.report = text
        self.reportView.setPlainText(text)
        self.copyButton.setEnabled(True)
        self.refreshButton.setEnabled(True)
        ready = "Status: OK" in text
        if "Status: APPLY-ONLY" in text:
            self.statusLabel.setText("GeoML can apply ONNX models (apply-only install); training and GeoML's own "
                                     "models need the full install: Install dependencies….")
        else:
            self.statusLabel.setText("GeoML is ready to run jobs." if ready else
                                     "GeoML cannot run jobs yet: see the problems at the end of the report.")

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.report)
        self.statusLabel.setText("Copied to the clipboard.")

    def open_installer(self) -> None:
        from .installer_dialog import open_dialog

        open_dialog(self.plugin)


def open_dialog(plugin):
    return show_single(plugin, "diagnostics", lambda: DiagnosticsDialog(plugin, main_window(plugin)))

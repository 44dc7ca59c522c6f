"""The *Weights…* manager: the pretrained weights of GeoML's catalogue, what is cached, where and how big;
download (with the analyst's consent, in the background, with progress and Cancel), verify, remove.

Also :func:`ask_download_consent`, the one question shown before any download (here and in Fine-tune):
it names the weights, their size, source and licence.
"""
from __future__ import annotations

import os

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
)

from .single_instance import show_single
from .task_controller import TaskController, current_task_property

COLUMNS = ("Name", "Backbone", "Bands", "Size", "Licence", "On this computer")


def size_text(entry) -> str:
    return f"{entry.size_mb:.1f} MB" if entry.size_published else f"≈ {entry.size_mb:.0f} MB"


def consent_text(entry) -> str:
    size = (f"{entry.size_mb:.1f} MB" if entry.size_published
            else f"about {entry.size_mb:.0f} MB (estimated; the publisher gives no size)")
    return (f"Download the pretrained weights '{entry.name}'?\n\n{entry.title}\nSize: {size}\n"
            f"Source: {entry.url}\nLicence: {entry.licence}\nPaper: {entry.paper}\n\n"
            "The file is checked against its published SHA-256 before it is kept in the torch cache; "
            "QGIS's proxy settings are used. You can cancel the download.")


def ask_download_consent(parent, entry) -> bool:
    answer = QMessageBox.question(parent, "GeoML — download weights", consent_text(entry),
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class BandMapDialog(QDialog):
    """Each band used (rows) → the weights' band it is, or '(not a band of the weights)': the mean kernel."""

    UNKNOWN = "(not a band of the weights: mean kernel)"

    def __init__(self, entry, band_names: list, preset: list, parent=None):
        from qgis.PyQt.QtWidgets import QComboBox, QDialogButtonBox

        super().__init__(parent)
        self.setWindowTitle(f"Bands for {entry.name}")
        self.table = QTableWidget(len(band_names), 2, self)
        self.table.setHorizontalHeaderLabels(["Band used", f"Band of the weights ({entry.sensor})"])
        self.table.verticalHeader().setVisible(False)
        self.combos = []
        for row, (name, pre) in enumerate(zip(band_names, preset)):
            item = QTableWidgetItem(name)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(row, 0, item)
            combo = QComboBox(self.table)
            combo.addItem(self.UNKNOWN, "-")
            for b in entry.bands:
                combo.addItem(b, b)
            combo.setCurrentIndex(max(0, combo.findData(pre)) if pre else 0)
            self.table.setCellWidget(row, 1, combo)
            self.combos.append(combo)
        self.table.resizeColumnsToContents()
        note = QLabel("Mapped bands start from the weights' kernels for that band and are scaled as the weights "
                      f"expect ({entry.scaling}); the others get the mean kernel and the raster's statistics.", self)
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.resize(520, 360)

    def value(self) -> str:
        """The mapping as WEIGHT_BANDS text, e.g. 'B04,B03,B02,-'."""
        return ",".join(c.currentData() for c in self.combos)


class WeightsDialog(QDialog):
    task = current_task_property()  # a running download, None when idle

    def __init__(self, plugin=None, parent=None):
        super().__init__(parent)
        self.plugin = plugin
        self.runner = TaskController()  # the download's lifecycle: start, progress, cancel, end
        self.setWindowTitle("GeoML — pretrained weights")
        self.setObjectName("GeoMLWeightsDialog")
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.details = QTextBrowser(self)
        self.details.setOpenExternalLinks(True)
        self.folderLabel = QLabel(self)
        self.folderLabel.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusLabel = QLabel(self)
        self.statusLabel.setWordWrap(True)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self.downloadButton = QPushButton("Download…", self)
        self.addButton = QPushButton("Add file…", self)
        self.verifyButton = QPushButton("Verify", self)
        self.removeButton = QPushButton("Remove", self)
        self.folderButton = QPushButton("Open folder", self)
        self.cancelButton = QPushButton("Cancel download", self)
        self.closeButton = QPushButton("Close", self)
        self.downloadButton.setToolTip("Download the selected weights (asks first: size, source, licence)")
        self.addButton.setToolTip("Add a weights file downloaded by hand (another computer, a shared drive): its "
                                  "published SHA-256 is checked before it is cached")
        self.verifyButton.setToolTip("Check the cached file against its published SHA-256")
        self.removeButton.setToolTip("Delete the cached file")
        self.cancelButton.setEnabled(False)
        buttons = QHBoxLayout()
        for b in (self.downloadButton, self.addButton, self.verifyButton, self.removeButton, self.folderButton, self.cancelButton):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.closeButton)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 3)
        layout.addWidget(self.details, 2)
        layout.addWidget(self.folderLabel)
        layout.addWidget(self.progress)
        layout.addWidget(self.statusLabel)
        layout.addLayout(buttons)
        self.table.itemSelectionChanged.connect(self.show_details)
        self.downloadButton.clicked.connect(self.download)
        self.addButton.clicked.connect(lambda: self.add_file())
        self.verifyButton.clicked.connect(self.verify)
        self.removeButton.clicked.connect(self.remove)
        self.folderButton.clicked.connect(self.open_folder)
        self.cancelButton.clicked.connect(self.cancel)
        self.closeButton.clicked.connect(self.close)
        self.resize(820, 560)
        self.refresh()

    # table -----------------------------------------------------------------------
    def entries(self) -> list:
        from ..core.finetune import weights_catalog

        return list(weights_catalog.CATALOGUE)

    def refresh(self) -> None:
        from ..core.finetune.pretrained import cache_dir, cached_path

        keep = self.current_name()
        entries = self.entries()
        self.table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            path = cached_path(e)
            cached = (f"yes, {os.path.getsize(path) / 1e6:.1f} MB" if os.path.isfile(path)
                      else "partly (resumes)" if os.path.isfile(path + ".part") else "no")
            for col, text in enumerate((e.name, e.arch, f"{len(e.bands)} ({e.sensor})", size_text(e), e.licence,
                                        cached)):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, e.name)
                item.setToolTip(e.describe())
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.folderLabel.setText(f"Cache folder: {cache_dir()}")
        if keep:
            self.select(keep)
        elif entries:
            self.table.selectRow(0)
        self.show_details()

    def select(self, name: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == name:
                self.table.selectRow(row)
                return

    def current_name(self) -> str:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else ""

    def current(self):
        name = self.current_name()
        return next((e for e in self.entries() if e.name == name), None)

    def show_details(self) -> None:
        from ..core.finetune.pretrained import cached_path

        e = self.current()
        busy = self.task is not None
        cached = e is not None and os.path.isfile(cached_path(e))
        self.downloadButton.setEnabled(e is not None and not cached and not busy)
        self.verifyButton.setEnabled(cached and not busy)
        self.removeButton.setEnabled(cached and not busy)
        if e is None:
            self.details.setPlainText("")
            return
        published = ", ".join(f"{k} {v}" for k, v in e.published.items())
        self.details.setPlainText(e.describe() + f"\nFile: {cached_path(e)}\nChecksum: SHA-256 starting with "
                                  f"{e.hash_prefix}\nFacts from: {e.source}"
                                  + (f"\nPublished accuracy (%, from the source, not measured by GeoML): {published}"
                                     if published else ""))

    # actions ---------------------------------------------------------------------
    def download(self) -> None:
        from ..core.finetune.pretrained import ensure_weights
        from ..proxy_settings import qgis_proxies

        e = self.current()
        if e is None or self.task is not None or not ask_download_consent(self, e):
            return
        proxies = qgis_proxies()
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancelButton.setEnabled(True)
        self.runner.start(lambda fb: ensure_weights(e, True, fb, proxies), f"GeoML: download {e.name}",
                          on_progress=lambda p: self.progress.setValue(int(p)), on_message=self.statusLabel.setText,
                          on_finished=self._downloaded, on_failed=self._downloaded, on_cancelled=self._downloaded)
        self.show_details()

    def _downloaded(self, task) -> None:
        """The end of the download (main thread): done, cancelled or failed."""
        self.progress.setVisible(False)
        self.cancelButton.setEnabled(False)
        if task.error is None:
            self.statusLabel.setText(f"Downloaded and verified: {task.result}")
        elif task.cancelled:
            self.statusLabel.setText("Download cancelled; nothing was cached (Download resumes it).")
        else:
            self.statusLabel.setText(task.error_text())
        self.refresh()

    def cancel(self) -> None:
        self.runner.cancel()

    def add_file(self, path: str = "") -> None:
        """Cache a file fetched by hand: the entry is found by the file's name or checksum (a renamed download
        is recognised), the published SHA-256 checked, and the file copied into the cache."""
        from ..core.errors import GeoMLError
        from ..core.finetune.pretrained import add_local_file

        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Add a weights file downloaded by hand", os.path.expanduser("~"),
                                                  "PyTorch weights (*.pth *.pt *.safetensors);;All files (*)")
        if not path:
            return
        try:
            entry, dest = add_local_file(path)
        except GeoMLError as exc:
            self.statusLabel.setText(str(exc))
            return
        self.refresh()
        self.select(entry.name)
        self.statusLabel.setText(f"Added '{entry.name}': {os.path.basename(path)} matches the published checksum and "
                                 f"was copied to {dest}.")

    def verify(self) -> None:
        from ..core.finetune.pretrained import verify_cached

        e = self.current()
        if e is None:
            return
        ok, digest = verify_cached(e)
        self.statusLabel.setText(f"{e.filename}: SHA-256 {digest} — "
                                 + ("matches the published checksum." if ok else
                                    f"does NOT start with the published {e.hash_prefix}; remove it and download "
                                    "again."))

    def remove(self) -> None:
        from ..core.finetune.pretrained import cached_path

        e = self.current()
        if e is None:
            return
        path = cached_path(e)
        answer = QMessageBox.question(self, "GeoML", f"Delete {path}?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        for p in (path, path + ".part"):
            if os.path.isfile(p):
                os.remove(p)
        self.statusLabel.setText(f"Removed {path}.")
        self.refresh()

    def open_folder(self) -> None:
        from ..core.finetune.pretrained import cache_dir

        os.makedirs(cache_dir(), exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(cache_dir()))

    def closeEvent(self, event):  # noqa: N802
        self.runner.detach()  # the download goes on; it must not call back into a closed dialog
        super().closeEvent(event)


def open_dialog(plugin):
    parent = plugin.iface.mainWindow() if plugin is not None and plugin.iface is not None else None
    if plugin is None:
        return WeightsDialog(None, parent)
    return show_single(plugin, "weights", lambda: WeightsDialog(plugin, parent))

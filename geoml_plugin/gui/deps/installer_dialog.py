"""GeoML → Install dependencies…: shows what will be installed where, runs pip
in the background with live output and Cancel, and makes the result usable
in this QGIS session without a restart where possible.

Two choices: the *full* install (PyTorch, torchvision, safetensors: every tool)
and the *apply-only* install (onnxruntime alone, tens of MB: ONNX models are
applied without PyTorch; see :data:`installer.APPLY_ONLY`).

The work is :func:`installer.run_plan` in a background task (its lifecycle:
:class:`~geoml_plugin.gui.task_controller.TaskController`); this module only
shows the plan, the log and the outcome.
"""
from __future__ import annotations

import html
import importlib
import os
import sys
from typing import Optional
from urllib.parse import quote

from qgis.core import Qgis, QgsSettings
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase, QGuiApplication
from qgis.PyQt.QtWidgets import QDialog, QFileDialog, QMessageBox, QPushButton

from ...core.errors import GeoMLError
from ...deps import detect, installer
from ...deps.gpu_driver import detect_nvidia
from ...deps.interpreter import python_executable
from ...tasks import GeoMLTask
from ..forms import load_ui
from ..messages import ask_about_running, push_to_bar
from ..single_instance import main_window, show_single
from ..task_controller import TaskController, current_task_property, failure_text
from .badge import check_in_background, collect_diagnostics

FORM = load_ui("installer_dialog.ui")


def qgis_proxy_env() -> dict:
    """QGIS's proxy (Settings ▸ Options ▸ Network) for pip, unless the environment already sets one.

    pip does not read QGIS's settings; without this, users behind a proxy who
    configured it only in QGIS would see downloads fail.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return {}
    s = QgsSettings()
    enabled = str(s.value("proxy/proxyEnabled", False)).lower() in ("true", "1")
    if not enabled or s.value("proxy/proxyType", "") not in ("HttpProxy", "HttpCachingProxy"):
        return {}
    host, port = str(s.value("proxy/proxyHost", "") or ""), str(s.value("proxy/proxyPort", "") or "")
    if not host:
        return {}
    user, password = str(s.value("proxy/proxyUser", "") or ""), str(s.value("proxy/proxyPassword", "") or "")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    url = f"http://{auth}{host}" + (f":{port}" if port and port != "0" else "")
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url}


def _color(text: str, color: str) -> str:
    return f"<span style='color:{color}'>{html.escape(text)}</span>"


class InstallerDialog(QDialog, FORM):
    installed = pyqtSignal(object)  # installer.InstallResult
    task = current_task_property()  # the running install, None when idle

    def __init__(self, plugin=None, parent=None, target=None, packages=None, source: str = "",
                 extra_env: Optional[dict] = None, apply_only: bool = False):
        """``target``/``packages``/``extra_env`` override the defaults (tests, administrators); ``target`` is
        the full install's folder (the apply-only install goes beside it). ``apply_only`` preselects the
        apply-only install."""
        super().__init__(parent)
        self.plugin = plugin
        self.setupUi(self)
        for button in self.findChildren(QPushButton):  # Enter in a field must not start a download of a gigabyte
            button.setAutoDefault(False)
            button.setDefault(False)
        self.target = target
        self.packages = packages
        self.extra_env = dict(extra_env or {})
        self.runner = TaskController()  # the install's lifecycle: start, progress, cancel, end
        self.plan: Optional[installer.InstallPlan] = None
        self.running_plan: Optional[installer.InstallPlan] = None
        self.result: Optional[installer.InstallResult] = None
        self.last_diagnostics = ""
        self.logView.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.planView.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.nvidia = detect_nvidia()
        self.recommended, self.reason = installer.choose_variant(self.nvidia)
        self.variantCombo.addItem(f"Recommended: {self.recommended.label}", self.recommended.key)
        for v in installer.VARIANTS:
            self.variantCombo.addItem(self._variant_text(v), v.key)
        self.sourceEdit.setText(source)
        self.fullRadio.setText(f"Full install: PyTorch, torchvision, safetensors — every tool: train, fine-tune, "
                               f"few-shot, GANs, apply any model ({installer.CPU_VARIANT.download} for the CPU, "
                               f"{installer.CUDA_VARIANTS[0].download} for an NVIDIA GPU)")
        self.applyOnlyRadio.setText(f"Apply-only: onnxruntime — apply ONNX models (.onnx) without PyTorch; no "
                                    f"training ({installer.APPLY_ONLY.download})")
        self.applyOnlyRadio.setToolTip("For applying models someone else trained, exported to ONNX (GeoML's Export… "
                                       "or Deepness models), with Apply model and geoml:predict. The other tools "
                                       "need the full install; installing it later keeps this one.")
        self.applyOnlyRadio.setChecked(apply_only)
        self.show_detection()
        self.applyOnlyRadio.toggled.connect(self.refresh_plan)
        self.variantCombo.currentIndexChanged.connect(self.refresh_plan)
        self.sourceEdit.textChanged.connect(self.refresh_plan)
        self.browseSourceButton.clicked.connect(self.browse_source)
        self.installButton.clicked.connect(self.install)
        self.cancelButton.clicked.connect(self.cancel)
        self.copyButton.clicked.connect(self.copy_diagnostics)
        self.removeButton.clicked.connect(self.remove)
        self.closeButton.clicked.connect(self.close)
        self.refresh_plan()

    # what and where ------------------------------------------------------------
    @staticmethod
    def _variant_text(v: installer.Variant) -> str:
        if v.cuda:
            return f"{v.label} build — NVIDIA GPU with a driver for CUDA {v.cuda[0]}.{v.cuda[1]} or newer"
        if v.key == "cpu":
            return "CPU only — works everywhere, smallest download"
        return f"{v.label} (Linux: CUDA, Windows: CPU, macOS)"

    def show_detection(self, st: Optional[detect.DepsStatus] = None) -> None:
        st = st or detect.cached_status() or detect.quick_status()
        if st.method == "quick" and not st.torch_missing:
            check_in_background(self.show_detection)  # fills in "Now:" when the check is done
        if st.torch_missing and detect.apply_only(st):
            runtime = st.package(detect.RUNTIME).shown_version
            now = (f"PyTorch is not installed; onnxruntime {runtime} is: applying ONNX models works, training needs "
                   "the full install.")
        elif st.torch_missing:
            now = "PyTorch is not installed."
        elif st.method == "quick":
            now = "PyTorch is installed; checking whether it works…"
        else:
            found = detect.problems(st)
            torch_version = st.packages["torch"].shown_version if "torch" in st.packages else ""
            where = detect.summary_of(st)
            where = (f"runs on the {where}" if where.startswith("GPU:") else
                     "runs on the CPU only" + where[len(detect.CPU_BADGE):] if where.startswith(detect.CPU_BADGE) else where)
            now = (f"Working: PyTorch {torch_version} {where}.".replace("  ", " ") if not found
                   else "Not working: " + " ".join(found))
            self._torch_works = not found
            self.installButton.setText("Reinstall" if not found else "Install")
            self.installButton.setToolTip("PyTorch works already: install again only to change the build (e.g. the "
                                          "CUDA build for a GPU)." if not found else "")
        import platform

        bits = sys.maxsize.bit_length() + 1
        self.detectionLabel.setText(
            f"System: {platform.system()} {platform.release()} ({platform.machine()}), "
            f"Python {sys.version.split()[0]} {bits}-bit at {python_executable() or 'NOT FOUND'}\n"
            f"GPU: {self.nvidia.describe()}\n"
            f"Now: {now}")

    def selected_variant(self) -> installer.Variant:
        """The PyTorch build chosen, or :data:`installer.APPLY_ONLY` for the apply-only install."""
        if self.applyOnlyRadio.isChecked():
            return installer.APPLY_ONLY
        return installer.variant_by_key(self.variantCombo.currentData())

    def plan_target(self, apply_only: bool):
        """The folder the chosen install goes into (None: the default)."""
        if self.target is None:
            return None
        return detect.apply_packages_dir(self.target) if apply_only else self.target

    def refresh_plan(self) -> None:
        v = self.selected_variant()
        apply_only = v.key == installer.APPLY_ONLY.key
        reason = self.reason if v.key == self.recommended.key else ""
        if v.cuda and self.nvidia.cuda_version and v.cuda > self.nvidia.cuda_version:
            reason = (f"Your NVIDIA driver supports CUDA up to {self.nvidia.cuda_version[0]}."
                      f"{self.nvidia.cuda_version[1]}: this build would not use the GPU. Update the driver or "
                      "choose the recommended build.")
        elif v.cuda and not self.nvidia.present:
            reason = "No NVIDIA GPU was found: this build would run on the CPU and is a much larger download."
        source = self.sourceEdit.text().strip() or None
        if apply_only:
            reason = ("Apply-only: Apply model and geoml:predict run ONNX models (GeoML's exports, Deepness "
                      "models) with onnxruntime. Fine-tuning, few-shot mapping, GANs and GeoML's .safetensors "
                      "models need the full install.")
        elif source:
            reason = "With a package source of your own, the packages come from there as they are."
        self.reasonLabel.setText(reason)
        self.variantCombo.setEnabled(source is None and not apply_only and self.task is None)
        try:
            self.plan = installer.make_plan(v, target=self.plan_target(apply_only), source=source,
                                            packages=self.packages, reason=reason)
        except GeoMLError as exc:
            self.plan = None
            self.planView.setPlainText(str(exc))
            self.statusLabel.setText(_color(str(exc), "#b00"))
            self.installButton.setEnabled(False)
            return
        proxy = qgis_proxy_env()
        self.plan.extra_env.update(proxy)
        self.plan.extra_env.update(self.extra_env)
        exists = self.plan.target.is_dir()
        self.targetLabel.setText(f"{self.plan.target}" + ("  (already there: it is replaced only when the new "
                                                           "installation works)" if exists else ""))
        text = self.plan.describe()
        if proxy:
            host = proxy["HTTPS_PROXY"].rsplit("@", 1)[-1]
            text += f"\nProxy: http://{host} (from QGIS's network settings)"
        self.planView.setPlainText(text)
        self.removeButton.setEnabled(exists and self.task is None)
        if self.task is None:
            self.statusLabel.setText("")
            self.installButton.setEnabled(self.plan.pip is not None)
            if self.plan.pip is None:
                self.statusLabel.setText(_color(f"pip is not available for {self.plan.python}. "
                                                + installer.NO_PIP_HINT, "#b00"))

    def browse_source(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with downloaded .whl files")
        if folder:
            self.sourceEdit.setText(folder)

    # installing ---------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        for w in (self.installButton, self.variantCombo, self.sourceEdit, self.browseSourceButton, self.removeButton,
                  self.fullRadio, self.applyOnlyRadio):
            w.setEnabled(not running)
        self.cancelButton.setEnabled(running)

    def install(self) -> Optional[GeoMLTask]:
        if self.task is not None or self.plan is None:
            return self.task
        plan = self.running_plan = self.plan
        self.result = None
        self.logView.clear()
        self.progressBar.setValue(0)
        self.statusLabel.setText("Installing… (see the log)" if plan.apply_only else
                                 "Installing… (the first install downloads a lot: see the log)")
        self.set_running(True)
        what = "onnxruntime (apply-only)" if plan.apply_only else "PyTorch"
        return self.runner.start(lambda fb: installer.run_plan(plan, fb), f"GeoML: installing {what}",
                                 on_progress=lambda p: self.progressBar.setValue(int(p)),
                                 on_message=self.logView.appendPlainText, **self._task_ends())

    def cancel(self) -> None:
        if self.task is not None:
            self.logView.appendPlainText("Cancelling…")
            self.runner.cancel()

    def _task_ends(self) -> dict:
        """The callbacks for the end of the install (:meth:`TaskController.finish`)."""
        return dict(on_finished=self._installed, on_failed=self._failed, on_cancelled=self._cancelled,
                    on_error=self._unexpected)

    def _done(self, task: GeoMLTask) -> None:
        """The end of the install ``task`` (main thread)."""
        self.runner.finish(task, **self._task_ends())

    def _ended(self) -> None:
        self.set_running(False)
        self.refresh_plan()

    def _installed(self, task: GeoMLTask) -> None:
        self._ended()
        plan = self.running_plan
        self.result = res = task.result
        if not res.pending:
            detect.activate_packages_dir(res.target)
        importlib.invalidate_caches()
        detect.invalidate()
        self.show_detection()
        self.progressBar.setValue(100)
        if res.restart:
            text = f"Installed into {res.target}. {res.restart}"
            self.statusLabel.setText(_color(text, "#a60"))
        else:
            full = plan is not None and set(plan.verify_names) == set(detect.REQUIRED)
            where = detect.summary_of(res.status) if full else ""
            text = "Installed. GeoML can use it now — no QGIS restart needed." + (f" {where}." if where else "")
            if plan is not None and plan.apply_only:
                text += (" Applying ONNX models works now; training, fine-tuning, few-shot mapping and GANs need "
                         "the full install.")
            self.statusLabel.setText(_color(text, "#080"))
        self._push(text, Qgis.MessageLevel.Success if not res.restart else Qgis.MessageLevel.Warning)
        self.installed.emit(res)

    def _cancelled(self, task: GeoMLTask) -> None:
        self._ended()
        self.progressBar.setValue(0)
        self.logView.appendPlainText("Cancelled; nothing was changed.")
        self.statusLabel.setText(_color("Cancelled; nothing was changed.", "#a60"))

    def _failed(self, task: GeoMLTask) -> None:
        self._ended()
        text = task.error_text()
        self.logView.appendPlainText("Failed: " + text)
        self.statusLabel.setText(_color("Installation failed: " + text + " Use “Copy diagnostics” to report it.",
                                        "#b00"))
        self.copyButton.setFocus()
        if not self.isVisible():  # kept installing in the background: say so where it shows
            what = "onnxruntime" if self.running_plan is not None and self.running_plan.apply_only else "PyTorch"
            self._push(f"Installing {what} failed: " + text + " GeoML ▸ Install dependencies… shows the log.",
                       Qgis.MessageLevel.Critical)

    def _unexpected(self, exc: Exception) -> None:
        """Showing the outcome failed (a bug): a message, not QGIS's Python error dialog."""
        text = failure_text("Finishing the installation", exc)
        self.statusLabel.setText(_color(text, "#b00"))
        self._push(text, Qgis.MessageLevel.Critical)

    def _push(self, text: str, level) -> None:
        push_to_bar(self.plugin, text, level, 10)

    # diagnostics and removal ---------------------------------------------------------
    def copy_diagnostics(self) -> None:
        extra = "Installer\n" + (self.plan.describe() if self.plan else "(no plan)")
        log = self.logView.toPlainText().splitlines()
        if log:
            extra += "\n\nInstaller log (last 300 lines):\n" + "\n".join(log[-300:])
        self.copyButton.setEnabled(False)
        self.statusLabel.setText("Collecting diagnostics…")

        def done(text: str) -> None:
            self.last_diagnostics = text
            QGuiApplication.clipboard().setText(text)
            self.copyButton.setEnabled(True)
            self.statusLabel.setText("Diagnostics copied to the clipboard: paste them into a bug report or e-mail.")

        collect_diagnostics(done, extra=extra)

    def remove(self) -> None:
        target = self.plan.target if self.plan else detect.packages_dir()
        answer = QMessageBox.question(
            self, "GeoML", f"Delete {target} and everything GeoML installed there?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        note = installer.remove_packages(target)
        self.statusLabel.setText(_color(note, "#a60") if note else "Removed.")
        self.refresh_plan()
        self.show_detection()

    def ask_about_running_install(self) -> str:
        """Closing while pip runs: 'background' (keep installing, the dialog hides; the outcome goes to the
        message bar), 'cancel' (cancel the install and close) or 'stay' (do not close)."""
        return ask_about_running(self, "PyTorch is still being installed.",
                                 "Keep installing in the background (progress in QGIS's task bar; the outcome is "
                                 "shown in the message bar), or cancel the install? Cancelling changes nothing.",
                                 "Keep installing", "Cancel install")

    def reject(self) -> None:
        """Escape, Close and the window's close box (QDialog's closeEvent calls this): while pip runs, ask
        whether to keep installing in the background, cancel the install, or stay."""
        if self.task is not None and not self.task.isCanceled():
            choice = self.ask_about_running_install()
            if choice == "stay":
                return
            if choice == "cancel":
                self.cancel()
        super().reject()


def open_dialog(plugin):
    return show_single(plugin, "installer", lambda: InstallerDialog(plugin, main_window(plugin)))

"""'Train GAN' dialog: runs core.gan.train in the background, then offers the result."""
from __future__ import annotations

import os

from qgis.core import Qgis, QgsMapLayerProxyModel
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap

from ..core.errors import InputError
from ..core.gan.train import GanTrainConfig
from ..core.outputs import default_output, output_name
from ..core.spec import spec_of
from ..file_filters import NEW_GEOML_MODEL
from .forms import load_ui
from .job_dialog import JobDialogBase
from .single_instance import show_single
from .spec_widgets import apply_spec, spec_default

FORM = load_ui("traingan_dialog.ui")

HELP = """<h3>Train GAN</h3>
<p><b>Without a target raster</b>: learns the look of the input (terrain from a DEM, texture from
imagery) and makes a <i>tile generator</i>. Then use <i>Generate tiles</i>: click on the map and a new,
georeferenced tile appears in the raster's units (e.g. metres); neighbouring tiles join without seams.</p>
<p><b>With a target raster</b>: learns to translate input into target on co-registered pixels
(pix2pix: e.g. RGB → NIR, imagery → map). The target is resampled onto the input's grid when needed.
Apply the model with <i>Apply model to raster</i> or Processing ‣ GeoML ‣ <i>Generate tiles / translate
raster (GAN)</i>.</p>
<ul><li><b>Tile size</b>: training crops (64 px is fast; 128/256 learn larger structures). Crops with
nodata are skipped; crops are rotated and flipped, so a small raster is enough.</li>
<li><b>Iterations</b>: the default trains in a few minutes on a CPU.</li>
<li><b>Architecture</b>: <i>automatic</i> picks dcgan_sn without a target raster, pix2pix with one.</li>
<li><b>Model file</b>: where the model (.safetensors) is saved, with its report beside it. Left empty, it
goes to a new temporary folder (<code>geoml_…</code> in the system's temp folder; the log shows the path),
which the system may clear: choose a file to keep the model.</li>
<li>The <b>report</b> (<code>x_report.png</code> beside <code>x.safetensors</code>, with the losses in
<code>x_report_losses.csv</code>) shows training tiles beside generated ones and the loss curves.</li>
<li>When the model, report or loss table exists, <b>Run</b> asks once, naming each existing file, before
replacing them; a model file just chosen with the file browser, which asked already, is not asked about
again, but an existing report or loss table beside it is.</li></ul>
<p>The same tool is in the Processing toolbox as <i>GeoML › Train GAN (tile generator or raster translator)</i>. The copy button beside <i>Run</i>
(<b>Copy as command line</b>) copies the <code>geoml traingan …</code> command of these settings, which trains
on a server or cluster without QGIS (also on several GPUs with <code>torchrun</code>).</p>
<p>Closing the dialog while it runs asks whether to keep the job running in the background, cancel it,
or stay.</p>"""


def dialog_arch_label(label: str) -> str:
    """Processing's architecture option text in this dialog's words: its field is 'Target raster', not TARGET."""
    return label.replace("without TARGET, pix2pix with TARGET", "without a target raster, pix2pix with one") \
        .replace("TARGET", "a target raster")


class TrainGanDialog(JobDialogBase, FORM):
    SETTINGS_KEY = "traingan"
    COMMAND = "traingan"
    HELP_HTML = HELP
    # widget → GanTrainConfig field: range, default and tooltip from the field's specification
    SPEC_WIDGETS = {"iterationsSpin": "iterations", "batchSpin": "batch_size", "l1Spin": "l1_weight",
                    "lrSpin": "learning_rate", "seedSpin": "seed", "archCombo": "architecture"}

    def __init__(self, plugin=None, parent=None):
        super().__init__(plugin, parent)
        self.inputLayer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.targetLayer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.targetLayer.setAllowEmptyLayer(True)
        self.targetLayer.setLayer(None)
        self.tileSizeCombo.addItems(["64", "128", "256"])
        arch = spec_of(GanTrainConfig, "architecture")
        for key, label in zip(arch.choices, arch.choice_labels):
            self.archCombo.addItem(dialog_arch_label(label), key)
        for widget, name in self.SPEC_WIDGETS.items():  # ranges and tooltips; the values not remembered
            apply_spec(getattr(self, widget), GanTrainConfig, name)
            if name not in ("iterations", "architecture"):
                getattr(self, widget).setValue(spec_default(GanTrainConfig, name))
        self.outputFile.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.outputFile.setFilter(NEW_GEOML_MODEL)
        self.watch_browse(self.outputFile)
        self.targetLayer.layerChanged.connect(self.update_mode)
        self.deviceCombo.setCurrentText(self.settings_value("device", "auto"))
        self.tileSizeCombo.setCurrentText(self.settings_value("tile", str(spec_default(GanTrainConfig, "tile_size"))))
        self.iterationsSpin.setValue(self.settings_value("iterations", spec_default(GanTrainConfig, "iterations"), int))
        self.update_mode()

    def update_mode(self, *_):
        has_target = self.targetLayer.currentLayer() is not None
        if not has_target:
            self.modeInfo.setText("No target: trains a tile generator (new tiles that look like the input).")
        else:
            self.modeInfo.setText("Target given: trains a translator input → target (pix2pix).")
        # the L1 weight and the target's bands are pix2pix settings: offered only with a target raster
        why = "" if has_target else "Only with a target raster (pix2pix)."
        for widget in (self.l1Spin, self.targetBandsEdit):
            widget.setEnabled(has_target)
            widget.setToolTip(why)

    def ask_about_running_job(self) -> str:
        """Closing while training: the job makes a model file, not a layer, so the question says so."""
        from .messages import ask_about_running

        return ask_about_running(self, "A GAN is still training.",
                                 "Keep it training in the background (progress in QGIS's task bar; the model file is "
                                 "saved when it ends and a tile generator opens in Generate tiles), or cancel it?",
                                 "Keep running", "Cancel job")

    def build_config(self):
        """The GanTrainConfig of the form's current settings (Run and Copy as command line)."""
        from ..core.gan.train import report_path_for

        layer = self.inputLayer.currentLayer()
        if layer is None:
            raise InputError("Choose an input raster layer.")
        target = self.targetLayer.currentLayer()
        out = self.outputFile.filePath()
        out = output_name(out, "model") if out else default_output(f"{layer.name()}_gan", "model")
        report = report_path_for(out) if self.reportCheck.isChecked() else None
        return GanTrainConfig(
            input_path=layer.source(), output_model=out, target_path=target.source() if target else None,
            bands=self.bandsEdit.text().strip() or None, target_bands=self.targetBandsEdit.text().strip() or None,
            tile_size=int(self.tileSizeCombo.currentText()), iterations=self.iterationsSpin.value(),
            batch_size=self.batchSpin.value(), architecture=self.archCombo.currentData(),
            l1_weight=self.l1Spin.value(), learning_rate=self.lrSpin.value(), device=self.deviceCombo.currentText(),
            seed=self.seedSpin.value(), report_path=report,
        )

    def make_job(self):
        from ..core.gan.train import output_paths, run_traingan

        cfg = self.build_config()
        layer = self.inputLayer.currentLayer()
        if not self.confirm_replace(output_paths(cfg), self.outputFile):  # the model, its report and loss table
            return None
        self.set_settings_value("device", cfg.device)
        self.set_settings_value("tile", str(cfg.tile_size))
        self.set_settings_value("iterations", cfg.iterations)
        return f"GeoML: train GAN on {layer.name()}", lambda fb: run_traingan(cfg, fb)

    def on_success(self, result) -> None:
        self.logView.appendPlainText(f"Done in {result.seconds:.0f} s → {result.model_path}")
        for k, v in result.metrics.items():
            self.logView.appendPlainText(f"  {k}: {v:.4g}")
        if result.report_path and os.path.exists(result.report_path):
            pix = QPixmap(result.report_path)
            self.reportPreview.setPixmap(pix.scaledToWidth(270, Qt.TransformationMode.SmoothTransformation))
            self.logView.appendPlainText(f"Report: {result.report_path}")
        if result.task == "generation" and self.plugin is not None and hasattr(self.plugin, "open_tool"):
            panel = self.plugin.open_tool("gui.gan_panel:open_panel")
            panel.modelFile.setFilePath(result.model_path)
            self.push_message("Tile generator trained: click on the map with 'Generate on click'.",
                              Qgis.MessageLevel.Success)
        else:
            self.push_message(f"Model saved: {result.model_path}", Qgis.MessageLevel.Success)


def open_dialog(plugin):
    parent = plugin.iface.mainWindow() if plugin.iface is not None else None
    return show_single(plugin, "traingan", lambda: TrainGanDialog(plugin, parent))

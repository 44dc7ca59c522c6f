"""Each tool's Processing parameters and dialog widgets match its one specification (``core/spec.py``): the
name, label, default, range and choices a user sees come from the job's Config, wherever they see them."""
from __future__ import annotations

import math
import sys

import pytest
from qgis.core import QgsProcessingParameterDefinition, QgsSettings

from geoml_plugin.core.fewshot.job import FewShotConfig
from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig
from geoml_plugin.core.finetune.job import FinetuneConfig
from geoml_plugin.core.gan.generate import GenerateConfig
from geoml_plugin.core.gan.train import GanTrainConfig
from geoml_plugin.core.predict import PredictConfig
from geoml_plugin.core.spec import choice_index, shell_default, shell_minimum, spec_help, tool_params
from tests.qgis.conftest import FakePlugin

TOOLS = {"predict": PredictConfig, "finetune": FinetuneConfig, "metatrain": MetaTrainConfig,
         "fewshot": FewShotConfig, "traingan": GanTrainConfig, "generate": GenerateConfig}
# Processing parameters that are not job settings with a spec: layers, files, destinations, the device
SHELL_ONLY = {
    "predict": {"INPUT", "MODEL", "EXTENT", "DEVICE", "OUTPUT", "OUTPUT_CONFIDENCE"},
    "finetune": {"INPUT", "LABELS", "DEVICE", "OUTPUT_MODEL", "OUTPUT_REPORT"},
    "metatrain": {"INPUT", "EXTRA_INPUTS", "LABELS", "LABEL_FIELD", "DEVICE", "OUTPUT_MODEL"},
    "fewshot": {"INPUT", "MODEL", "SUPPORT", "LABEL_FIELD", "DEVICE", "OUTPUT", "OUTPUT_CONFIDENCE", "OUTPUT_MODEL"},
    "traingan": {"INPUT", "TARGET", "DEVICE", "OUTPUT_MODEL", "OUTPUT_REPORT"},
    "generate": {"MODEL", "CENTER", "EXTENT", "INPUT", "DEVICE", "OUTPUT_CRS", "OUTPUT"},
}
OPEN_MAX = sys.float_info.max  # what Processing reports for a side left open


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_processing_parameters_come_from_the_spec(geoml_provider, tool):
    config = TOOLS[tool]
    alg = geoml_provider.algorithm(tool)
    params = {p.name(): p for p in alg.parameterDefinitions()}
    specs = tool_params(config)
    assert set(params) == {s.name for _, s, _ in specs} | SHELL_ONLY[tool]  # nothing exposed without a spec
    for field, spec, _default in specs:
        p = params[spec.name]
        assert p.description() == spec.label, field
        advanced = bool(p.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        assert advanced == spec.advanced, field
        if spec.kind in ("int", "float"):
            assert p.type() == "number" and p.defaultValue() == shell_default(config, field), field
            lo = shell_minimum(spec)
            assert p.minimum() == (-OPEN_MAX if lo is None else lo), field
            assert p.maximum() == (OPEN_MAX if spec.maximum is None else spec.maximum), field
        elif spec.kind == "enum":
            assert p.type() == "enum" and p.options() == list(spec.choice_labels), field
            assert p.defaultValue() == choice_index(config, field), field
        elif spec.kind == "bool":
            assert p.type() == "boolean" and p.defaultValue() == shell_default(config, field), field
        elif spec.kind in ("str", "tiles"):
            assert p.type() == "string", field
            assert (p.defaultValue() or "") == (shell_default(config, field) or ""), field
        assert spec_help(config, field) in alg.shortHelpString() or not spec_help(config, field), field


def test_spec_values_are_todays_processing_defaults(geoml_provider):
    """A few defaults and ranges users rely on, written out: the spec did not change them."""
    predict = geoml_provider.algorithm("predict")
    assert predict.parameterDefinition("BATCH_SIZE").defaultValue() == 16
    assert predict.parameterDefinition("STRIDE").minimum() == 0  # 0 = automatic
    assert predict.parameterDefinition("OVERLAP").defaultValue() == -1
    finetune = geoml_provider.algorithm("finetune")
    assert finetune.parameterDefinition("PATCH_SIZE").maximum() == 1024
    assert finetune.parameterDefinition("VALIDATION_FRACTION").maximum() == 1.0  # the core's range (was 0.9)
    traingan = geoml_provider.algorithm("traingan")
    assert traingan.parameterDefinition("ITERATIONS").defaultValue() == 1000
    assert traingan.parameterDefinition("ARCHITECTURE").options()[0].startswith("Automatic")
    generate = geoml_provider.algorithm("generate")
    assert generate.parameterDefinition("TILES").defaultValue() == "1x1"
    assert generate.parameterDefinition("STYLE").options() == ["auto", "pseudocolor", "hillshade", "rgb"]


@pytest.fixture()
def no_saved_settings():
    """The dialogs as a new user sees them: no remembered values (the test's own settings put back after)."""
    settings = QgsSettings()
    keys = [k for k in settings.allKeys() if k.startswith(("geoml/predict/", "geoml/finetune/", "geoml/traingan/",
                                                           "geoml/gan_panel/tile"))]
    saved = {k: settings.value(k) for k in keys}
    for k in keys:
        settings.remove(k)
    yield
    for k, v in saved.items():
        settings.setValue(k, v)


def _check_widget(widget, config, field):
    from geoml_plugin.core.spec import spec_of
    from geoml_plugin.gui.spec_widgets import spin_range

    spec = spec_of(config, field)
    default = shell_default(config, field)
    if hasattr(widget, "setRange"):
        decimals = widget.decimals() if hasattr(widget, "decimals") else None
        lo, hi = spin_range(spec, decimals)
        if lo is not None:
            assert widget.minimum() == pytest.approx(lo), field
        if hi is not None:
            assert widget.maximum() == pytest.approx(hi), field
        if decimals is not None and spec.maximum is not None and spec.maximum_exclusive:
            assert widget.maximum() < spec.maximum, field
        assert widget.value() == pytest.approx(default), field
    elif hasattr(widget, "currentData"):
        assert [widget.itemData(i) for i in range(widget.count())] == list(spec.choices), field
        assert widget.currentData() == default, field
    else:  # a check box
        assert widget.isChecked() == default, field


@pytest.mark.parametrize("dialog", ["predict", "finetune", "traingan"])
def test_dialog_widgets_take_range_and_default_from_the_spec(qtbot, qgis_iface, qgis_new_project, no_saved_settings,
                                                             dialog):
    from geoml_plugin.gui.finetune_dialog import FinetuneDialog
    from geoml_plugin.gui.predict_dialog import PredictDialog
    from geoml_plugin.gui.traingan_dialog import TrainGanDialog

    cls, config = {"predict": (PredictDialog, PredictConfig), "finetune": (FinetuneDialog, FinetuneConfig),
                   "traingan": (TrainGanDialog, GanTrainConfig)}[dialog]
    dlg = cls(FakePlugin(qgis_iface))
    qtbot.addWidget(dlg)
    assert dlg.SPEC_WIDGETS
    for widget, field in dlg.SPEC_WIDGETS.items():
        if widget == "viewsCombo":  # its items are the view counts as text
            assert dlg.viewsCombo.currentText() == str(shell_default(config, field))
            continue
        _check_widget(getattr(dlg, widget), config, field)


def test_dialogs_written_out(qtbot, qgis_iface, qgis_new_project, no_saved_settings):
    """The values a new user sees, written out (not derived from the spec)."""
    from geoml_plugin.gui.finetune_dialog import FinetuneDialog
    from geoml_plugin.gui.predict_dialog import PredictDialog
    from geoml_plugin.gui.traingan_dialog import TrainGanDialog

    predict = PredictDialog(FakePlugin(qgis_iface))
    finetune = FinetuneDialog(FakePlugin(qgis_iface))
    traingan = TrainGanDialog(FakePlugin(qgis_iface))
    for d in (predict, finetune, traingan):
        qtbot.addWidget(d)
    assert predict.batchSpin.value() == 16 and predict.strideSpin.minimum() == 0 and predict.overlapSpin.value() == -1
    assert finetune.batchSpin.value() == 32 and finetune.batchSpin.minimum() == 2
    assert finetune.valSpin.value() == pytest.approx(0.2) and finetune.valSpin.maximum() == pytest.approx(0.99)
    assert finetune.taskCombo.currentData() == "classification" and finetune.augmentCheck.isChecked()
    assert traingan.iterationsSpin.value() == 1000 and traingan.tileSizeCombo.currentText() == "64"
    assert math.isclose(traingan.lrSpin.value(), 2e-4) and traingan.lrSpin.minimum() == pytest.approx(1e-6)


def test_gan_panel_tile_size_default_is_the_spec(qtbot, qgis_iface, qgis_canvas, qgis_new_project, no_saved_settings):
    from geoml_plugin.gui.gan_panel import GanPanel

    panel = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    assert panel.tileSizeCombo.currentText() == str(shell_default(GenerateConfig, "tile_size")) == "256"

"""The tools' parameter specifications (``core/spec.py``): what validate() tells a user, and that every job
setting the shells expose has one specification, consistent in itself."""
from __future__ import annotations

import dataclasses

import pytest

from geoml_plugin.core.errors import InputError
from geoml_plugin.core.fewshot.job import FewShotConfig
from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig
from geoml_plugin.core.finetune.job import FinetuneConfig, check_config
from geoml_plugin.core.gan.generate import GenerateConfig
from geoml_plugin.core.gan.train import GanTrainConfig
from geoml_plugin.core.predict import PredictConfig
from geoml_plugin.core.spec import (
    param,
    plain_help,
    shell_default,
    spec_help,
    spec_of,
    to_core,
    tool_params,
    validate,
)

# the Processing name of every job setting each tool exposes (Processing, dialogs and the coming command line
# take it from the spec): a setting added to a tool without a spec fails here
EXPOSED = {
    PredictConfig: {"BATCH_SIZE", "STRIDE", "OVERLAP", "BANDS", "VIEWS", "MIN_REGION"},
    FinetuneConfig: {"INPUT_BANDS", "LABEL_FIELD", "TASK", "BACKBONE", "WEIGHTS", "DOWNLOAD_WEIGHTS", "WEIGHT_BANDS",
                     "PATCH_SIZE", "EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "VALIDATION_FRACTION", "FREEZE_BACKBONE",
                     "AUGMENT", "SEED", "MAX_SAMPLES"},
    MetaTrainConfig: {"ALGORITHM", "WAYS", "SHOTS", "QUERY", "INNER_STEPS", "INNER_LR", "META_BATCH", "ITERATIONS",
                      "BACKBONE", "PATCH_SIZE", "LEARNING_RATE", "SEED"},
    FewShotConfig: {"ADAPT_STEPS", "STRIDE", "VIEWS", "BATCH_SIZE", "SEED", "MIN_REGION"},
    GanTrainConfig: {"BANDS", "TARGET_BANDS", "TILE_SIZE", "ITERATIONS", "BATCH_SIZE", "ARCHITECTURE", "L1_WEIGHT",
                     "LEARNING_RATE", "SEED"},
    GenerateConfig: {"TILES", "TILE_SIZE", "PIXEL_SIZE", "SEED", "BANDS", "SCENE_NORMALISATION", "STYLE"},
}


@pytest.mark.parametrize("config", list(EXPOSED), ids=lambda c: c.__name__)
def test_every_exposed_setting_has_one_consistent_spec(config):
    specs = tool_params(config)
    assert {s.name for _, s, _ in specs} == EXPOSED[config]
    assert len({s.name for _, s, _ in specs}) == len(specs)  # one parameter per name
    fields = {f.name for f in dataclasses.fields(config)}
    for field, spec, default in specs:
        assert spec.label and spec.kind in ("int", "float", "bool", "str", "enum", "bands", "tiles"), field
        if spec.help_of:
            assert spec.help_of in fields and spec_of(config, spec.help_of).help, field
        if spec.choices:
            assert default in spec.choices and len(spec.choice_labels) == len(spec.choices), field
        elif default is not None and spec.kind in ("int", "float"):
            lo, hi = spec.minimum, spec.maximum
            assert lo is None or default > lo or (default == lo and not spec.minimum_exclusive), field
            assert hi is None or default < hi or (default == hi and not spec.maximum_exclusive), field
        if default is None and spec.kind in ("int", "float"):
            assert spec.auto is not None, f"{field}: an automatic value the shells can show"
    # the defaults validate
    required = {f.name: "x" for f in dataclasses.fields(config)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    validate(config(**required))


@pytest.mark.parametrize("config,changes,words", [
    (PredictConfig, {"batch_size": 0}, ["Batch size (BATCH_SIZE)", "at least 1", "it is 0"]),
    (PredictConfig, {"stride": 0}, ["Stride for patch classifiers (STRIDE)", "at least 1"]),
    (PredictConfig, {"views": 3}, ["Test-time views (VIEWS)", "1, 2, 4, 8"]),
    (FinetuneConfig, {"validation_fraction": 1.0}, ["Validation fraction (VALIDATION_FRACTION)", "below 1"]),
    (FinetuneConfig, {"patch_size": 4}, ["Patch size (PATCH_SIZE)", "from 8 to 1024"]),
    (FinetuneConfig, {"task": "detection"}, ["Task (TASK) 'detection'", "classification, segmentation, regression"]),
    (FinetuneConfig, {"max_raster_samples": 5}, ["(MAX_SAMPLES)", "at least 10"]),
    (MetaTrainConfig, {"algorithm": "maml", "inner_lr": 0.0}, ["MAML inner learning rate (INNER_LR)", "above 0"]),
    (GanTrainConfig, {"tile_size": 1024}, ["Tile size (TILE_SIZE)", "from 32 to 512"]),
    (GenerateConfig, {"pixel_size": -1.0}, ["Pixel size (PIXEL_SIZE)", "above 0"]),
    (GenerateConfig, {"style": "sepia"}, ["Style (STYLE) 'sepia'", "auto, pseudocolor, hillshade, rgb"]),
])
def test_validate_names_the_parameter_and_its_valid_values(config, changes, words):
    required = {f.name: "x" for f in dataclasses.fields(config)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    with pytest.raises(InputError) as err:
        validate(config(**{**required, **changes}))
    for w in words:
        assert w in str(err.value)


def test_validate_passes_automatic_values_and_skipped_fields():
    validate(PredictConfig("in.tif", stride=None, overlap=None))  # None = automatic
    validate(MetaTrainConfig(["r.tif"], "l.gpkg", "class", "m.safetensors", inner_lr=0.0), skip=("inner_lr",))
    with pytest.raises(InputError, match="nan"):
        validate(FinetuneConfig("in.tif", "l.gpkg", learning_rate=float("nan")))


def test_a_job_refuses_an_out_of_range_setting_before_any_work(tmp_path):
    """Fine-tune's own check now includes the spec's ranges: 20 000 epochs is refused with the valid range."""
    cfg = FinetuneConfig(str(tmp_path / "in.tif"), str(tmp_path / "l.gpkg"), "class",
                         output_model=str(tmp_path / "m.safetensors"), epochs=20000)
    with pytest.raises(InputError, match=r"Epochs \(EPOCHS\) must be from 0 to 10000; it is 20000"):
        check_config(cfg)
    with pytest.raises(InputError, match="VALIDATION_FRACTION must be at least 0 and below 1"):  # its own words
        check_config(dataclasses.replace(cfg, epochs=0, validation_fraction=1.5))


def test_shell_values_and_help():
    assert shell_default(PredictConfig, "stride") == 0 and to_core(PredictConfig, "stride", 0) is None
    assert to_core(PredictConfig, "stride", 8) == 8
    assert shell_default(PredictConfig, "overlap") == -1 and to_core(PredictConfig, "overlap", -1) is None
    assert to_core(FewShotConfig, "adapt_steps", -1) == -1  # a core value, not "automatic"
    assert shell_default(GenerateConfig, "tiles") == "1x1"
    assert spec_of(FinetuneConfig, "max_raster_samples").name == "MAX_SAMPLES"
    assert spec_help(FinetuneConfig, "learning_rate") == spec_help(FinetuneConfig, "epochs")  # one paragraph
    assert plain_help("<b>Batch size</b>: a &lt;b&gt;") == "Batch size: a <b>"


def test_param_gives_a_list_default_its_own_copy_and_refuses_an_unknown_kind():
    @dataclasses.dataclass
    class Tool:
        widths: list = param([1, 2], kind="str", label="Widths")

    a, b = Tool(), Tool()
    a.widths.append(3)
    assert b.widths == [1, 2]
    with pytest.raises(TypeError):
        param(object(), label="Thing")

"""Dense models on a CPU budget: the automatic schedule, rare classes, pixel functions, the time left."""
import re

import numpy as np
import pytest

from geoml_plugin.core import remaining
from geoml_plugin.core.errors import InputError
from geoml_plugin.core.finetune import job
from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.progress import Feedback
from tests.conftest import write_raster
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)


def read(path):
    from osgeo import gdal

    return gdal.Open(str(path)).ReadAsArray()


def test_the_dense_budget_scales_with_the_labelled_area_and_is_capped():
    full = job.dense_budget(4_000_000, 64)
    assert full == round(job.DENSE_VISITS_PER_PIXEL * 4_000_000 / 64**2)
    assert job.dense_budget(16_000_000, 64) == full  # a larger labelled area costs no more than 4 MP
    assert job.dense_budget(2_000_000, 64) == pytest.approx(full / 2, rel=1e-3)  # half the area, half the time
    assert job.dense_budget(1000, 64) == job.DENSE_MIN_PATCHES  # a tiny area still gets steps to learn from
    # the same pixel visits with larger patches: fewer patches
    assert job.dense_budget(4_000_000, 128) == pytest.approx(full / 4, rel=1e-3)
    assert job.auto_dense_epochs(4_000_000, 64, 1600) == -(-full // 1600)  # rounded up
    assert job.auto_dense_epochs(0, 64, 10**6) == 1


def test_automatic_patch_size_is_larger_for_dense_models_of_a_large_raster(tmp_path):
    big = job.AUTO_PATCH_AREAS * job.AUTO_SEGMENTATION_PATCH
    target = write_raster(tmp_path / "t.tif", np.zeros((8, 8), np.float32))
    seg = FinetuneConfig("a.tif", str(target), task="segmentation")
    assert seg.patch_size is None  # the default is automatic
    assert job.auto_patch_size(seg, big, big + 10) == job.AUTO_SEGMENTATION_PATCH == 96
    assert job.auto_patch_size(FinetuneConfig("a.tif", str(target), task="regression"), big, big) == 96  # pixels
    # too small a raster for that many validation areas along a side: the usual 64 px
    assert job.auto_patch_size(seg, big - 1, 4000) == job.AUTO_PATCH == 64
    points = str(tmp_path / "points.gpkg")  # not a raster: one value per patch, a patch model
    for task in ("classification", "regression"):
        assert job.auto_patch_size(FinetuneConfig("a.tif", points, task=task), big, big) == 64
    assert job.auto_patch_size(FinetuneConfig("a.tif", str(target), task="segmentation", patch_size=32), big, big) == 32


def striped_scene(folder, rare: bool = False):
    """A 384² RGB raster of bright (2) and dark (1) stripes; with ``rare``, a small third class (3) inside one
    96-px block of the label raster but across two 64-px ones."""
    rng = np.random.default_rng(0)
    size = job.AUTO_PATCH_AREAS * job.AUTO_SEGMENTATION_PATCH
    img = rng.normal(80, 6, (3, size, size)).astype(np.float32)
    lab = np.ones((size, size), np.uint8)
    for r in range(0, size, 96):
        img[0, r:r + 40, :] += 70
        lab[r:r + 40, :] = 2
    if rare:
        img[2, 50:70, 40:90] += 90
        lab[50:70, 40:90] = 3
    return write_raster(folder / "img.tif", img), write_raster(folder / "lab.tif", lab, nodata=0)


def test_automatic_patch_size_reaches_the_model_and_the_log(tmp_path):
    raster, labels = striped_scene(tmp_path)
    log = []
    res = run_finetune(FinetuneConfig(raster, labels, output_model=str(tmp_path / "m.safetensors"), epochs=1,
                                      task="segmentation", max_raster_samples=24, batch_size=8, device="cpu"),
                       Feedback(on_log=log.append))
    assert res.meta.patch_size == 96
    assert any(m.startswith("Patch size automatic: 96 px (a dense model") for m in log), log


def test_automatic_patch_size_falls_back_when_a_class_would_lie_in_one_validation_area(tmp_path):
    raster, labels = striped_scene(tmp_path, rare=True)
    cfg = dict(output_model=str(tmp_path / "m.safetensors"), epochs=1, task="segmentation", max_raster_samples=60,
               batch_size=8, device="cpu")
    with pytest.raises(InputError, match="Class '3' has only 1 labelled feature/area"):
        run_finetune(FinetuneConfig(raster, labels, patch_size=96, **cfg))  # asked for: refused, as before
    log = []
    res = run_finetune(FinetuneConfig(raster, labels, **cfg), Feedback(on_log=log.append))
    assert res.meta.patch_size == 64
    assert any(m.startswith("With 96 px patches: Class '3' has only 1") and m.endswith("Automatic patch size: 64 px "
                                                                                        "instead.") for m in log), log


def sparse_scene(folder, labelled_cols: int, seed: int = 0):
    """A 64×64 RGB raster with bright squares ('building', 2) on land (1); only the first ``labelled_cols``
    columns are labelled (0 = nodata elsewhere)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(80, 6, (3, 64, 64)).astype(np.float32)
    lab = np.ones((64, 64), np.uint8)
    for r, c in [(4, 4), (30, 10), (12, 40), (44, 44)]:
        img[0, r:r + 12, c:c + 12] += 70
        lab[r:r + 12, c:c + 12] = 2
    lab[:, labelled_cols:] = 0
    return write_raster(folder / "img.tif", img), write_raster(folder / "lab.tif", lab, nodata=0)


def test_the_automatic_schedule_counts_labelled_pixels_not_the_raster_and_epochs_win(tmp_path, monkeypatch):
    raster, labels = sparse_scene(tmp_path, labelled_cols=16)
    monkeypatch.setattr(job, "DENSE_MIN_PATCHES", 1)  # so the budget follows the area down to this tiny raster
    monkeypatch.setattr(job, "DENSE_VISITS_PER_PIXEL", 4)
    monkeypatch.setattr(job, "FULL_RES_VISITS_PER_PIXEL", 3)  # segmentation's U-Net: the full-resolution skip
    log = []
    res = run_finetune(FinetuneConfig(raster, labels, output_model=str(tmp_path / "m.safetensors"),
                                      task="segmentation", patch_size=16, max_raster_samples=40, device="cpu"),
                       Feedback(on_log=log.append))
    line = next(m for m in log if m.startswith("Training budget"))
    assert "0.00 MP labelled" in line  # 16 × 64 = 1024 pixels, not the raster's 4096
    assert "(3 visits per labelled pixel" in line and res.meta.arch_args["full_res"] is True
    assert res.epochs == job.auto_dense_epochs(16 * 64, 16, res.n_train, 3)
    assert res.epochs == max(1, -(-3 * 1024 // 16**2 // res.n_train))
    res2 = run_finetune(FinetuneConfig(raster, labels, output_model=str(tmp_path / "m2.safetensors"), epochs=2,
                                       task="segmentation", patch_size=16, max_raster_samples=40, device="cpu"))
    assert res2.epochs == 2  # the user's EPOCHS wins


def rare_scene(path_img, path_lab, seed: int):
    """A 96×96 RGB scene: land (1), bright 'building' squares (2) and a rare 'water' class (3), small dark-blue
    ponds covering about 1 % of the pixels."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 8, (3, 96, 96)).astype(np.float32)
    lab = np.ones((96, 96), np.uint8)
    for _ in range(6):
        r, c = rng.integers(0, 80, 2)
        img[:, r:r + 14, c:c + 14] += np.array([60, 50, 40], np.float32)[:, None, None]
        lab[r:r + 14, c:c + 14] = 2
    for _ in range(4):
        r, c = rng.integers(2, 90, 2)
        img[:, r:r + 5, c:c + 5] = rng.normal([[[40]], [[60]], [[150]]], 8, (3, 5, 5))
        lab[r:r + 5, c:c + 5] = 3
    return write_raster(path_img, img), write_raster(path_lab, lab, nodata=0), lab


def test_default_training_maps_a_rare_class(tmp_path):
    raster, labels, lab = rare_scene(tmp_path / "a.tif", tmp_path / "a_lab.tif", seed=1)
    assert (lab == 3).mean() < 0.02
    # the default loss, class weights and class-stratified sampling; a short run (small patches, 3 epochs)
    res = run_finetune(FinetuneConfig(raster, labels, output_model=str(tmp_path / "m.safetensors"),
                                      task="segmentation", patch_size=32, epochs=3, max_raster_samples=300,
                                      seed=0, device="cpu"))
    other, _, truth = rare_scene(tmp_path / "b.tif", tmp_path / "b_lab.tif", seed=2)
    run_predict(PredictConfig(other, res.model_path, str(tmp_path / "map.tif"), device="cpu"))
    values = {c.name: c.value for c in res.meta.classes}
    pred = read(tmp_path / "map.tif")
    rare_truth, rare_pred = truth == 3, pred == values["3"]
    iou = (rare_truth & rare_pred).sum() / (rare_truth | rare_pred).sum()
    assert iou > 0.3, iou
    assert (pred == np.where(truth == 1, values["1"], np.where(truth == 2, values["2"], values["3"]))).mean() > 0.9


def test_pixel_regression_recovers_a_non_linear_pixel_function(tmp_path):
    def scene(name, seed):
        rng = np.random.default_rng(seed)
        # fields constant over 4×4 blocks: the target is a function of each pixel's bands
        img = np.kron(rng.normal(0, 1, (3, 16, 16)), np.ones((4, 4))) + rng.normal(0, 0.05, (3, 64, 64))
        target = img[0] * img[1] + 0.5 * img[2] ** 2  # non-linear: no linear fit of the bands follows it
        return (write_raster(tmp_path / f"{name}.tif", (img * 20 + 100).astype(np.float32)),
                write_raster(tmp_path / f"{name}_t.tif", target.astype(np.float32)), target, img)

    raster, target_path, _, _ = scene("a", 0)
    res = run_finetune(FinetuneConfig(raster, target_path, output_model=str(tmp_path / "r.safetensors"),
                                      task="regression", patch_size=16, epochs=10, batch_size=8,
                                      max_raster_samples=200, seed=0, device="cpu"))
    other, _, truth, img = scene("b", 1)  # another scene drawn the same way
    run_predict(PredictConfig(other, res.model_path, str(tmp_path / "values.tif"), device="cpu"))
    mae = np.abs(read(tmp_path / "values.tif") - truth).mean()
    a = np.c_[img.reshape(3, -1).T, np.ones(64 * 64)]
    linear_mae = np.abs(a @ np.linalg.lstsq(a, truth.ravel(), rcond=None)[0] - truth.ravel()).mean()
    # measured: 0.41 against 0.80 for the best linear fit (fitted on the very scene it is scored on)
    assert mae < 0.7 * linear_mae, (mae, linear_mae)
    assert mae < 0.5 * truth.std(), (mae, truth.std())


def _seconds(text: str) -> float:
    m = re.search(r"about (?:(\d+) h )?(\d+) (s|min) left", text)
    h, v, unit = m.groups()
    return (int(h or 0) * 60 + int(v)) * 60 if unit == "min" else int(v)


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_remaining_time_is_reported_and_decreases(tmp_path, monkeypatch, task):
    """The progress text (what the dialog shows) and the epoch log lines carry 'about N s/min left' from the
    first steps on, never going up over a run (a deterministic clock: each reading 1 s later)."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(remaining, "_clock", lambda: float(next(ticks)))
    raster, labels, _ = rare_scene(tmp_path / "a.tif", tmp_path / "a_lab.tif", seed=1)
    progress, log = [], []
    fb = Feedback(on_progress=lambda f, m: progress.append(m), on_log=log.append)
    res = run_finetune(FinetuneConfig(raster, labels, output_model=str(tmp_path / "m.safetensors"), task=task,
                                      patch_size=16, epochs=3, batch_size=4, max_raster_samples=60, seed=0,
                                      device="cpu"), fb)
    shown = [m for m in progress if "left" in m]
    assert shown and "epoch 1/3" in shown[0]  # within the first epoch
    secs = [_seconds(m) for m in shown]
    assert all(b <= a for a, b in zip(secs, secs[1:])) and secs[-1] < secs[0]
    epoch_lines = [m for m in log if re.match(r"epoch \d/3:", m)]
    assert len(epoch_lines) == 3 and all("left" in m for m in epoch_lines[:2]) and "left" not in epoch_lines[2]
    est = [_seconds(m) for m in epoch_lines[:2]]
    # the classifier's last epoch sees its windows with context (9× the pixels of a 16-px window), which this
    # clock does not make slower: the estimate after epoch 2 is then above the shown one, which stays
    assert est[0] > est[1] if task == "segmentation" else est[0] >= est[1]
    assert res.epochs == 3


def test_the_time_left_reads_well():
    assert remaining.format_remaining(12) == "about 10 s left"
    assert remaining.format_remaining(70) == "about 1 min left"
    assert remaining.format_remaining(6 * 60 + 10) == "about 6 min left"
    assert remaining.format_remaining(3 * 3600 + 600) == "about 3 h 10 min left"
    r = remaining.RemainingTime(epochs=2, steps_per_epoch=20)
    assert r.text() == ""  # nothing before the first steps


def test_the_time_left_counts_the_dearer_epochs_still_to_come(monkeypatch):
    """Fine-tuning's last epochs see each 64-px window with 16 px of context: 2.25× the pixels per step. After
    the first epoch at 1 s a step, 2 cheap and 2 dear epochs of 10 steps are left: 20 + 45 s, not 40 s."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(remaining, "_clock", lambda: float(next(ticks)))
    r = remaining.RemainingTime(epochs=5, steps_per_epoch=10, epoch_costs=[1, 1, 1, 2.25, 2.25])
    r.start_epoch(0)
    for _ in range(10):
        r.step()
    r.start_epoch(1)
    assert r.estimate() == pytest.approx(2 * 10 * 1 + 2 * 10 * 2.25)
    plain = remaining.RemainingTime(epochs=5, steps_per_epoch=10)
    plain.steps_done, plain.units_done, plain.step_seconds, plain.epoch = 10, 10.0, 10.0, 1
    assert plain.estimate() == pytest.approx(40)
    # in a dear epoch, its steps count as dear ones: 1 s per unit still
    for _ in range(10):
        r.step()
    r.start_epoch(2)
    for _ in range(10):
        r.step()
    r.start_epoch(3)
    for _ in range(5):
        r._t -= 1.25  # these steps take 2.25 s
        r.step()
    assert r.estimate() == pytest.approx(5 * 2.25 + 10 * 2.25)


def test_context_epochs_cost_what_their_pixels_cost():
    from geoml_plugin.core.finetune.trainer import Trainer

    t = Trainer.__new__(Trainer)
    t.data = type("D", (), {"patch": 64, "context": 16})()
    t.spec = type("S", (), {"epochs": 10, "context_from": 0.7})()
    assert t._epoch_costs() == [1.0] * 7 + [2.25] * 3


def test_the_epochs_help_states_the_budget_in_force():
    from geoml_plugin.core.spec import spec_help

    text = spec_help(job.FinetuneConfig, "epochs")
    assert (f"about {job.FULL_RES_VISITS_PER_PIXEL} training visits per labelled pixel for segmentation" in text
            and f"and {job.DENSE_VISITS_PER_PIXEL} for pixel regression" in text)
    assert f"counted up to {job.DENSE_MAX_PIXELS // 1_000_000} megapixels" in text
    assert f"at least {job.DENSE_MIN_PATCHES:,} patches".replace(",", " ") in text


def test_a_label_raster_class_that_shares_every_area_with_another_is_still_split(tmp_path):
    """Each 16-px area of this raster holds land; the squares ('2') lie in areas with land. An area counted
    for the first class sampled in it (always land here) left '2' with one area at most and the default
    validation split refused the raster; each area now counts for the class with the fewest areas so far."""
    raster, labels = sparse_scene(tmp_path, labelled_cols=64)
    res = run_finetune(FinetuneConfig(raster, labels, output_model=str(tmp_path / "m.safetensors"),
                                      task="segmentation", patch_size=16, epochs=1, max_raster_samples=80,
                                      device="cpu"))
    per_class = res.metrics["per_class"]
    assert per_class["1"]["iou"] is not None and per_class["2"]["iou"] is not None  # both held out

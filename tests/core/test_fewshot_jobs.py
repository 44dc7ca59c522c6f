"""geoml:metatrain and geoml:fewshot core jobs on the small sample scene."""
import dataclasses
import os

import numpy as np
import pytest
import torch
from osgeo import gdal

from geoml_plugin.core.errors import InputError, JobCancelled, ModelFileError
from geoml_plugin.core.fewshot.job import FewShotConfig, adapt, classify, run_fewshot
from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain
from geoml_plugin.core.modelfile import load_state, read_metadata, save_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.progress import Feedback
from geoml_plugin.core.raster.io import category_names_of
from geoml_plugin.core.sampledata import CLASS_NAMES, EPSG, read_label_points
from tests.conftest import leftovers, write_raster

TINY = dict(label_field="class_name", ways=3, shots=2, query=3, patch_size=16, meta_batch=2, val_episodes=8,
            device="cpu")


@pytest.fixture(scope="module")
def meta_model(scene, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("meta") / "proto.safetensors")
    run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=path, iterations=40, **TINY))
    return path


def support_points(scene, per_class=5, seed=0):
    """(x, y, class name) of a few label points per class, as the map tool passes them."""
    xy, ids = read_label_points(scene.points)
    rng = np.random.default_rng(seed)
    pts = []
    for k, name in enumerate(CLASS_NAMES, start=1):
        for i in rng.choice(np.flatnonzero(ids == k), per_class, replace=False):
            pts.append((xy[i, 0], xy[i, 1], name))
    return pts


def agreement(pred_path, scene):
    """Share of valid pixels whose predicted class *name* is the true one."""
    names = category_names_of(pred_path)
    truth = gdal.Open(scene.landcover).ReadAsArray()
    pred = gdal.Open(pred_path).ReadAsArray()
    lut = np.array([CLASS_NAMES.index(n) + 1 if n in CLASS_NAMES else 0 for n in names])
    return float((lut[pred] == truth)[truth > 0].mean())


def test_metatrain_saves_a_meta_model_with_validation_accuracy(meta_model):
    meta = read_metadata(meta_model)
    assert meta.architecture == "meta_classifier" and meta.output == "patch"
    assert meta.extra["fewshot"]["algorithm"] == "protonet"
    assert [c.name for c in meta.classes] == sorted(CLASS_NAMES)
    acc = meta.metrics["meta_validation_accuracy"]
    assert 0.5 < acc <= 1.0  # 3-way episodes: chance is 0.33


def test_seeded_metatrain_is_reproducible(scene, tmp_path):
    a, b, c = (str(tmp_path / f"{n}.safetensors") for n in "abc")
    ra = run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=a, iterations=4, seed=7, **TINY))
    rb = run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=b, iterations=4, seed=7, **TINY))
    run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=c, iterations=4, seed=8, **TINY))
    sa, sb, sc = load_state(a), load_state(b), load_state(c)
    assert ra.val_accuracy == rb.val_accuracy and ra.history == rb.history
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_fewshot_maps_the_scene_from_five_points_per_class(scene, meta_model, out_dir):
    out, conf, model = out_dir / "fs.tif", out_dir / "fs_conf.tif", out_dir / "adapted.safetensors"
    res = run_fewshot(FewShotConfig(scene.image, meta_model, str(out), points=support_points(scene),
                                    confidence_path=str(conf), output_model=str(model), device="cpu", stride=4))
    assert res.class_counts == {n: 5 for n in CLASS_NAMES}
    assert category_names_of(str(out)) == [""] + CLASS_NAMES  # class order of the points
    assert agreement(str(out), scene) > 0.8
    c = gdal.Open(str(conf)).ReadAsArray()
    valid = gdal.Open(scene.landcover).ReadAsArray() > 0
    assert ((c[valid] >= 0.25) & (c[valid] <= 1.0)).all()
    # the adapted model is a normal classifier: geoml:predict gives the same map
    again = out_dir / "again.tif"
    run_predict(PredictConfig(scene.image, str(model), str(again), stride=4, device="cpu"))
    np.testing.assert_array_equal(gdal.Open(str(again)).ReadAsArray(), gdal.Open(str(out)).ReadAsArray())
    assert read_metadata(str(model)).extra["fewshot_adapted"]["method"] == res.method
    # a minimum region: the same map, sieved (GDAL, 8-connected) before it is written
    sieved = out_dir / "sieved.tif"
    run_fewshot(FewShotConfig(scene.image, meta_model, str(sieved), points=support_points(scene), device="cpu",
                              stride=4, min_region=30))
    ref = gdal.GetDriverByName("MEM").CreateCopy("", gdal.Open(str(out)))
    band = ref.GetRasterBand(1)
    gdal.SieveFilter(band, band.GetMaskBand(), band, 30, 8)
    np.testing.assert_array_equal(gdal.Open(str(sieved)).ReadAsArray(), band.ReadAsArray())


def test_fewshot_reads_a_support_layer_and_reports_ignored_points(scene, meta_model, out_dir):
    log = []
    res = run_fewshot(FewShotConfig(scene.image, meta_model, str(out_dir / "x.tif"), support=scene.points,
                                    label_field="class_name", device="cpu", stride=8),
                      Feedback(on_log=log.append))
    assert sum(res.class_counts.values()) == 100
    assert res.support_accuracy > 0.8
    assert any("support points of 4 classes" in m for m in log)


def test_classify_is_run_fewshots_second_step_with_its_checks_and_metadata(scene, meta_model, out_dir, tmp_path):
    """adapt + classify (what the few-shot panel runs) give geoml:fewshot's map, refuse the same outputs, and name
    the meta-model and the support in the raster's metadata."""
    import shutil

    support = str(shutil.copy(scene.points, tmp_path / "support.gpkg"))
    cfg = FewShotConfig(scene.image, meta_model, str(out_dir / "job.tif"), support=support, label_field="class_name",
                        device="cpu", stride=8, window=(16, 16, 64, 48))
    job = run_fewshot(cfg)
    steps = classify(dataclasses.replace(cfg, output_path=str(out_dir / "steps.tif")), adapt(cfg))
    assert (steps.method, steps.class_counts, steps.pixel_counts) == (job.method, job.class_counts, job.pixel_counts)
    assert (gdal.Open(steps.output_path).ReadAsArray() == gdal.Open(job.output_path).ReadAsArray()).all()
    for path in (job.output_path, steps.output_path):
        md = gdal.Open(path).GetMetadata()
        assert md["GEOML_MODEL"] == "proto.safetensors"
        assert md["GEOML_SUPPORT"] == ", ".join(f"{k}: {v}" for k, v in job.class_counts.items())
    before = open(support, "rb").read()
    with pytest.raises(InputError, match="is the support layer: writing it would destroy the support layer"):
        classify(dataclasses.replace(cfg, confidence_path=support), adapt(cfg))
    assert open(support, "rb").read() == before


def test_meta_models_pool_every_block_and_older_two_block_models_still_adapt(scene, meta_model, tmp_path):
    meta = read_metadata(meta_model)
    assert meta.arch_args["pool_blocks"] == 4  # features of every block: they transfer best to new classes
    old_args = dict(meta.arch_args, pool_blocks=2)  # what meta-models recorded until 2026-11
    torch.manual_seed(0)
    old = str(tmp_path / "old.safetensors")
    save_model(old, build_model("meta_classifier", **old_args), dataclasses.replace(meta, arch_args=old_args))
    ad = adapt(FewShotConfig(scene.image, old, points=support_points(scene), device="cpu", adapt_steps=2))
    assert ad.meta.arch_args["pool_blocks"] == 2
    widths = meta.arch_args["widths"]
    assert ad.model.head.weight.shape == (len(CLASS_NAMES), sum(widths[-2:]))
    assert load_state(meta_model)["head.weight"].shape[1] == sum(widths)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_maml_meta_model_adapts_and_is_refused_by_predict(scene, tmp_path, out_dir, algorithm):
    path = str(tmp_path / f"{algorithm}.safetensors")
    res = run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=path, algorithm=algorithm,
                                        iterations=3, inner_steps=2, **TINY))
    assert 0 <= res.val_accuracy <= 1
    meta = read_metadata(path)
    assert meta.extra["fewshot"]["initialisation_only"] and meta.arch_args["num_classes"] == 1
    with pytest.raises(ModelFileError, match="MAML meta-model"):
        run_predict(PredictConfig(scene.image, path, str(out_dir / "p.tif")))
    ad = adapt(FewShotConfig(scene.image, path, points=support_points(scene, 3), device="cpu", adapt_steps=3))
    assert ad.method == "MAML, 3 steps"
    assert ad.model.head.out_features == 4


def test_a_normal_classifier_works_as_a_starting_point(scene, tmp_path, out_dir):
    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model
    from geoml_plugin.core.raster.classes import make_classes

    torch.manual_seed(0)
    meta = ModelMetadata(architecture="small_cnn", arch_args={"in_bands": 4, "num_outputs": 2, "widths": [8, 8, 8, 8]},
                     task="classification", output="patch", in_bands=4, patch_size=16,
                     classes=make_classes(["x", "y"]), norm_mean=[1000] * 4, norm_std=[500] * 4)
    base = save_model(str(tmp_path / "cnn.safetensors"), build_model("small_cnn", **meta.arch_args), meta)
    res = run_fewshot(FewShotConfig(scene.image, base, str(out_dir / "c.tif"), points=support_points(scene),
                                    output_model=str(out_dir / "m.safetensors"), adapt_steps=5, device="cpu"))
    assert res.method == "nearest prototype + 5 fine-tuning steps"
    adapted = read_metadata(str(out_dir / "m.safetensors"))
    assert adapted.arch_args["num_outputs"] == 4 and [c.name for c in adapted.classes] == CLASS_NAMES
    run_predict(PredictConfig(scene.image, str(out_dir / "m.safetensors"), str(out_dir / "p.tif"), device="cpu"))
    # test-time views apply to an adapted classifier too (they were ignored): the confidence changes
    conf = {}
    for views in (1, 2):
        run_fewshot(FewShotConfig(scene.image, base, str(out_dir / f"v{views}.tif"), points=support_points(scene),
                                  confidence_path=str(out_dir / f"c{views}.tif"), adapt_steps=5, device="cpu",
                                  views=views))
        conf[views] = gdal.Open(str(out_dir / f"c{views}.tif")).ReadAsArray()
    assert not np.array_equal(conf[1], conf[2])


# -- bad input ---------------------------------------------------------------
def _fs(scene, meta_model, out_dir, **kw):
    return FewShotConfig(scene.image, meta_model, str(out_dir / "o.tif"), confidence_path=str(out_dir / "c.tif"),
                         device="cpu", **kw)


def test_support_with_one_class_is_refused(scene, meta_model, out_dir):
    pts = [p for p in support_points(scene) if p[2] == "Water"]
    with pytest.raises(InputError, match="all of one class \\('Water'\\)"):
        run_fewshot(_fs(scene, meta_model, out_dir, points=pts))
    assert list(out_dir.iterdir()) == []


def test_class_whose_points_are_all_outside_or_on_nodata_is_named(scene, meta_model, out_dir):
    x0, y0 = 500000.0, 5100000.0  # top-left corner of the scene
    pts = [p for p in support_points(scene) if p[2] != "Urban"]
    pts += [(x0 - 500, y0 + 500, "Urban"), (x0 + 10 * 126, y0 - 10 * 1.5, "Urban")]  # outside; nodata strip
    with pytest.raises(InputError, match=r"'Urban' have no usable support point \(ignored: 1 outside the raster, "
                                         r"1 on nodata pixels\)"):
        run_fewshot(_fs(scene, meta_model, out_dir, points=pts))
    assert list(out_dir.iterdir()) == []


def write_support(path, points) -> str:
    """A GeoPackage of (x, y, class) points in EPSG:32632, text field ``cls`` (None: NULL)."""
    from osgeo import ogr, osr

    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    lay = ds.CreateLayer("pts", srs, ogr.wkbPoint)
    lay.CreateField(ogr.FieldDefn("cls", ogr.OFTString))
    for x, y, name in points:
        f = ogr.Feature(lay.GetLayerDefn())
        if name is not None:
            f.SetField("cls", name)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({x} {y})"))
        lay.CreateFeature(f)
    ds = None
    return str(path)


def test_support_entirely_outside_the_raster_is_refused(scene, meta_model, out_dir, tmp_path):
    path = write_support(tmp_path / "far.gpkg", [(400000 + i, 5000000, name) for i, name in enumerate(["a", "b"])])
    with pytest.raises(InputError, match="None of the support points can be used: .*2 outside the raster"):
        run_fewshot(_fs(scene, meta_model, out_dir, support=path, label_field="cls"))
    assert list(out_dir.iterdir()) == []


def test_empty_or_blank_labels_are_skipped_like_null_not_made_a_class(scene, meta_model, out_dir, tmp_path):
    pts = support_points(scene, 3)
    path = write_support(tmp_path / "support.gpkg", pts + [(pts[0][0] + 20, pts[0][1], ""),
                                                           (pts[1][0] + 20, pts[1][1], "  "),
                                                           (pts[2][0] + 20, pts[2][1], None)])
    log = []
    res = run_fewshot(_fs(scene, meta_model, out_dir, support=path, label_field="cls", stride=8),
                      Feedback(on_log=log.append))
    assert sorted(res.classes) == sorted(CLASS_NAMES)
    assert category_names_of(str(out_dir / "o.tif")) == [""] + sorted(CLASS_NAMES)
    assert any("3 without a label value" in m for m in log), log
    # clicked points with an empty class name are skipped the same way
    res = run_fewshot(_fs(scene, meta_model, out_dir, points=pts + [(pts[0][0] + 20, pts[0][1], " ")], stride=8))
    assert res.classes == CLASS_NAMES


def test_a_window_reaching_past_the_top_left_corner_is_clipped_not_shifted(scene, meta_model, out_dir):
    res = run_fewshot(_fs(scene, meta_model, out_dir, points=support_points(scene, 2), adapt_steps=0, stride=8,
                          window=(-10, -20, 40, 50)))
    ds = gdal.Open(res.output_path)
    assert (ds.RasterXSize, ds.RasterYSize) == (30, 30)  # pixels 0..29 of the raster, as asked
    assert ds.GetGeoTransform() == gdal.Open(scene.image).GetGeoTransform()
    assert sum(res.pixel_counts.values()) <= 30 * 30


def test_outputs_over_an_input_are_refused_and_the_inputs_kept(scene, meta_model, tmp_path, out_dir):
    import shutil

    support = shutil.copy(scene.points, tmp_path / "support.gpkg")
    image = shutil.copy(scene.image, tmp_path / "image.tif")
    before = {p: open(p, "rb").read() for p in (support, image)}
    with pytest.raises(InputError, match="is the support layer: writing it would destroy"):
        run_fewshot(FewShotConfig(image, meta_model, str(out_dir / "o.tif"), support=support,
                                  label_field="class_name", output_model=support, device="cpu"))
    with pytest.raises(InputError, match="is the input raster"):
        run_fewshot(FewShotConfig(image, meta_model, image, points=support_points(scene), device="cpu"))
    with pytest.raises(InputError, match="is the labels"):
        run_metatrain(MetaTrainConfig([image], support, output_model=support, **TINY))
    with pytest.raises(InputError, match="is the training raster"):
        run_metatrain(MetaTrainConfig([image], support, output_model=image, **TINY))
    assert {p: open(p, "rb").read() for p in (support, image)} == before
    assert list(out_dir.iterdir()) == []


def test_a_band_the_meta_model_does_not_use_is_named_in_the_log(scene, meta_model, tmp_path):
    ds = gdal.Open(scene.image)
    five = np.concatenate([ds.ReadAsArray(), np.ones((1, ds.RasterYSize, ds.RasterXSize), np.uint16)])
    img = write_raster(tmp_path / "five.tif", five.astype(np.uint16), gt=ds.GetGeoTransform(), epsg=EPSG, nodata=0)
    log = []
    adapt(FewShotConfig(img, meta_model, "", points=support_points(scene), device="cpu"), Feedback(on_log=log.append))
    assert "The model uses bands 1, 2, 3, 4 of the raster's 5; band 5 is not used." in log


def test_meta_model_with_another_band_count_is_refused(meta_model, tmp_path, out_dir):
    img = write_raster(tmp_path / "rgb.tif", np.ones((3, 64, 64), np.uint16))
    with pytest.raises(InputError, match="expects 4 band"):
        run_fewshot(FewShotConfig(img, meta_model, str(out_dir / "o.tif"), points=[(500100, 5099900, "a")]))
    assert list(out_dir.iterdir()) == []


def test_fewer_labelled_classes_than_ways_is_refused(scene, out_dir):
    with pytest.raises(InputError, match="WAYS is 5 but the labels have only 4 class"):
        run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=str(out_dir / "m.safetensors"),
                                      **{**TINY, "ways": 5}))
    assert list(out_dir.iterdir()) == []


def test_automatic_ways_uses_every_labelled_class(scene, out_dir):
    logs = []
    path = str(out_dir / "auto.safetensors")
    run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=path, iterations=4,
                                  **{**TINY, "ways": None}), Feedback(on_log=logs.append))
    assert read_metadata(path).extra["fewshot"]["ways"] == 4  # the scene's 4 classes, all usable
    assert any("WAYS automatic: 4-way episodes" in m for m in logs)
    assert any("(4-way episodes)" in m for m in logs)  # meta-validation too


def test_more_shots_than_labelled_points_is_refused(scene, out_dir):
    with pytest.raises(InputError, match="at least 35 labelled patches each"):
        run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=str(out_dir / "m.safetensors"),
                                      **{**TINY, "shots": 30, "query": 5}))
    assert list(out_dir.iterdir()) == []


def test_cancel_leaves_nothing(scene, meta_model, out_dir):
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(JobCancelled):
        run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=str(out_dir / "m.safetensors"),
                                      iterations=50, **TINY), Feedback(is_cancelled=cancelled))
    seen = []  # cancel once adapted, while the raster is being classified
    with pytest.raises(JobCancelled):
        run_fewshot(_fs(scene, meta_model, out_dir, points=support_points(scene),
                        output_model=str(out_dir / "a.safetensors"), stride=2, batch_size=4),
                    Feedback(on_progress=lambda f, m: seen.append(m), is_cancelled=lambda: "adapting" in seen))
    assert list(out_dir.iterdir()) == [] and leftovers(out_dir) == []


def test_a_model_that_cannot_be_saved_replaces_no_map(scene, meta_model, out_dir, monkeypatch):
    """The adapted model is written before the maps are published: a full disk there changes nothing."""
    from geoml_plugin.core.fewshot import job as fewshot

    (out_dir / "o.tif").write_bytes(b"earlier map")

    def full_disk(path, model, meta):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fewshot, "save_model", full_disk)
    with pytest.raises(OSError, match="No space"):
        run_fewshot(_fs(scene, meta_model, out_dir, points=support_points(scene),
                        output_model=str(out_dir / "m.safetensors")))
    assert (out_dir / "o.tif").read_bytes() == b"earlier map"  # before: replaced by this run's map
    assert sorted(p.name for p in out_dir.iterdir()) == ["o.tif"] and leftovers(out_dir) == []


def test_prototypes_are_taken_from_windows_with_the_context_their_map_sees(scene, tmp_path):
    """A few-shot map scores every window in one pass over a tile, where each window's features see its
    neighbourhood (``window_scores.map_context``: 32 px for small_cnn). Episodes show the windows alone, but the
    prototypes — the training classes' in the meta-model, the support points' in adaptation — are taken from
    the windows with that context: what the map will compare them with."""
    from geoml_plugin.core.fewshot import metatrain
    from geoml_plugin.core.models.fewshot import MetaClassifier

    sizes = []
    real = MetaClassifier.embed

    def spy(self, x, context=0):
        if x.device.type != "meta":  # not the model file's shape check
            sizes.append((torch.is_grad_enabled(), x.shape[-1], context))
        return real(self, x, context)

    path = str(tmp_path / "ctx.safetensors")
    cfg = MetaTrainConfig([scene.image], scene.points, output_model=path, iterations=6,
                          **{**TINY, "patch_size": 32, "meta_batch": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MetaClassifier, "embed", spy)
        run_metatrain(cfg)
        train = {(w, c) for grad, w, c in sizes if grad}
        assert train == {(32, 0)}  # episodes: the windows alone
        assert sizes[-1] == (False, 32 + 64, 32)  # the training classes' prototypes
        sizes.clear()
        adapted = adapt(FewShotConfig(scene.image, path, points=support_points(scene), device="cpu"))
    assert adapted.method == "nearest prototype"  # the default: prototypes only, the map in seconds
    assert sizes and all(w == 32 + 64 and c == 32 for _, w, c in sizes)
    assert adapted.support_accuracy > 0.5
    # and the map made with those prototypes is the meta-model's own one-pass map: it agrees with the scene
    out = tmp_path / "map.tif"
    run_predict(PredictConfig(scene.image, path, str(out), device="cpu"))
    assert agreement(str(out), scene) > 0.5
    # MAML meta-trains and adapts on windows alone (its functional inner loop)
    assert metatrain.meta_context(dataclasses.replace(cfg, algorithm="fomaml")) == 0


def test_meta_training_killed_part_way_resumes_to_the_weights_of_an_uninterrupted_run(scene, tmp_path, monkeypatch):
    """``checkpoint_dir`` + ``resume``: a checkpoint every 3 iterations (safetensors + JSON, no pickle); a run
    killed in iteration 8 goes on after iteration 6 and ends with the model of an uninterrupted run (the same
    episodes, augmentation and best weights); a checkpoint of another run is refused."""
    import json

    from geoml_plugin.core.fewshot import metatrain

    for d in ("ck_full", "ck"):
        (tmp_path / d).mkdir()
    base = dict(TINY, iterations=10, val_every=5, checkpoint_every=3)
    full = run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=str(tmp_path / "full.safetensors"),
                                         checkpoint_dir=str(tmp_path / "ck_full"), **base))
    step = metatrain._Learner.step
    calls = {"n": 0}

    def killed_in_iteration_8(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("killed")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(metatrain._Learner, "step", killed_in_iteration_8)
    out = tmp_path / "resumed.safetensors"
    cfg = MetaTrainConfig([scene.image], scene.points, output_model=str(out), checkpoint_dir=str(tmp_path / "ck"),
                          resume=True, **base)
    with pytest.raises(RuntimeError, match="killed"):
        run_metatrain(cfg)
    monkeypatch.setattr(metatrain._Learner, "step", step)
    assert not out.exists()
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert state["iteration"] == 6 and sorted(os.listdir(tmp_path / "ck")) == ["checkpoint.json",
                                                                             "iteration-0000006.safetensors"]
    logs = []
    res = run_metatrain(cfg, Feedback(on_log=logs.append))
    assert any("Resumed from the checkpoint after iteration 6" in m for m in logs)
    assert res.history == full.history and res.best_iteration == full.best_iteration
    a, b = load_state(str(tmp_path / "full.safetensors")), load_state(str(out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match=r"different run \(ways differ\)"):
        run_metatrain(MetaTrainConfig([scene.image], scene.points, output_model=str(tmp_path / "o.safetensors"),
                                      checkpoint_dir=str(tmp_path / "ck"), resume=True, **dict(base, ways=2)))

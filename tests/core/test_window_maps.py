"""Maps of patch classifiers do not depend on where the window lattice falls (issue: maps as good as the models).

A tiny ``small_resnet`` is fine-tuned once on a mosaic of textured 32-px chips of three classes (the
default objective: shifts of up to the map's window spacing, with real neighbours). Then:

* a window moved off a chip's centre by up to the spacing keeps the chip's class;
* a straight boundary between two classes is mapped within a few pixels of where it is, whatever the
  lattice offset (the input cropped by k px);
* cropping the input by k px moves the map by k px (equivariance);
* the fully convolutional scorers equal the windows scored one by one by the plain network.
"""
import numpy as np
import pytest
import torch
from osgeo import gdal

from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune
from geoml_plugin.core.modelfile import load_model
from geoml_plugin.core.models import build_model
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.window_scores import DenseEmbedding, DenseWindows, fully_convolutional
from tests.conftest import write_raster
from tests.core.test_finetune import write_points
from tests.torch_threads import one_thread  # noqa: F401 (autouse fixture)

CHIP = 32
GT = (500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0)


def texture(cls: int, size, rng) -> np.ndarray:
    """(3, h, w) pixels of a class: its own colour and stripe direction, with noise."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = [np.sin(xx / 2.0), np.sin(yy / 2.0), np.sin((xx + yy) / 3.0)][cls]
    base = np.array([[80, 120, 60], [140, 90, 60], [60, 80, 150]][cls], float)[:, None, None]
    return (base + 25 * stripes[None] + rng.normal(0, 8, (3, h, w))).clip(1, 255)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model path, chip classes, folder): a 10×10 mosaic of 32-px chips, a point at each chip centre."""
    d = tmp_path_factory.mktemp("windows")
    rng = np.random.default_rng(0)
    n = 10
    cls = rng.integers(0, 3, (n, n))
    img = np.zeros((3, n * CHIP, n * CHIP))
    for i in range(n):
        for j in range(n):
            img[:, i * CHIP:(i + 1) * CHIP, j * CHIP:(j + 1) * CHIP] = texture(int(cls[i, j]), (CHIP, CHIP), rng)
    raster = write_raster(d / "mosaic.tif", img.astype(np.uint8), gt=GT)
    names = ["stripes_x", "stripes_y", "diagonal"]
    pts = [(i * CHIP + CHIP // 2, j * CHIP + CHIP // 2, names[cls[i, j]]) for i in range(n) for j in range(n)]
    points = write_points(d / "chips.gpkg", pts, gt=GT)
    torch.manual_seed(0)
    res = run_finetune(FinetuneConfig(raster, points, "label", str(d / "m.safetensors"), patch_size=CHIP, epochs=12,
                                      batch_size=16, validation_fraction=0, device="cpu", seed=0))
    return res.model_path, cls, d, names


def test_a_window_off_the_chip_centre_keeps_the_chip_class(trained):
    model_path, cls, d, names = trained
    model, meta = load_model(model_path, "cpu")
    step = CHIP // 8
    src = gdal.Open(str(d / "mosaic.tif")).ReadAsArray().astype(np.float32)
    x = (src - np.asarray(meta.norm_mean, np.float32)[:, None, None]) / np.asarray(meta.norm_std, np.float32)[:, None, None]
    order = [c.name for c in meta.classes]
    same, total = 0, 0
    with torch.no_grad():
        for i in range(1, cls.shape[0] - 1):
            for j in range(1, cls.shape[1] - 1):
                for dy in (-step, 0, step):
                    for dx in (-step, 0, step):
                        r0, c0 = i * CHIP + dy, j * CHIP + dx
                        win = torch.from_numpy(x[None, :, r0:r0 + CHIP, c0:c0 + CHIP])
                        same += order[int(model(win).argmax(1))] == names[cls[i, j]]
                        total += 1
    assert same / total >= 0.95


def _boundary_raster(path, rng, width=192, height=96, at=101):
    img = np.concatenate([texture(0, (height, at), rng), texture(2, (height, width - at), rng)], axis=2)
    return write_raster(path, img.astype(np.uint8), gt=GT), at


def _crop(path, k, out):
    gdal.Translate(str(out), gdal.Open(str(path)), srcWin=[k, k, gdal.Open(str(path)).RasterXSize - k,
                                                        gdal.Open(str(path)).RasterYSize - k])
    return str(out)


def test_a_straight_boundary_is_mapped_where_it_is_whatever_the_lattice_offset(trained):
    model_path, _, d, names = trained
    raster, at = _boundary_raster(d / "boundary.tif", np.random.default_rng(1))
    for k in range(0, CHIP // 8 + 1):
        src = _crop(raster, k, d / f"boundary_{k}.tif") if k else raster
        res = run_predict(PredictConfig(src, model_path, str(d / f"bmap_{k}.tif"), device="cpu"))
        m = gdal.Open(res.output_path).ReadAsArray()
        right = m == next(c.value for c in load_model(model_path, "cpu")[1].classes if c.name == names[2])
        rows = right[CHIP // 2: -CHIP // 2]  # away from the raster's top and bottom edges
        edge = np.argmax(rows, axis=1) + k  # first 'right' column of each row, in the uncropped raster's columns
        assert rows.all(axis=1).sum() == 0 and (~rows).all(axis=1).sum() == 0
        assert abs(np.median(edge) - at) <= 3, (k, np.median(edge))
        assert (np.abs(edge - at) <= 6).mean() >= 0.95


def test_moving_the_input_by_k_pixels_moves_the_map_by_k_pixels(trained):
    model_path, _, d, _ = trained
    raster = str(d / "mosaic.tif")
    full = gdal.Open(run_predict(PredictConfig(raster, model_path, str(d / "full.tif"), device="cpu")).output_path)
    ref = full.ReadAsArray()
    for k in (1, 2, 3, 5):
        res = run_predict(PredictConfig(_crop(raster, k, d / f"crop_{k}.tif"), model_path, str(d / f"m_{k}.tif"),
                                        device="cpu"))
        m = gdal.Open(res.output_path).ReadAsArray()
        core = (slice(CHIP, -CHIP), slice(CHIP, -CHIP))  # away from the edges, where fill differs
        differ = (m[core] != ref[k:, k:][core]).mean()
        unmoved = (m[core] != ref[: m.shape[0], : m.shape[1]][core]).mean()  # as if the map had not moved
        assert differ <= 0.1, (k, differ)
        if k > CHIP // 8:  # moved by more than the window spacing: clearly better than not moving the map
            assert differ < unmoved / 2, (k, differ, unmoved)


@pytest.mark.parametrize("arch,bands,centre", [("small_resnet", 4, 0.0), ("small_resnet", 4, 0.25),
                                               ("resnet18", 3, 0.0)])
def test_fully_convolutional_windows_equal_the_plain_network_on_its_pooling_grid(arch, bands, centre):
    """The one-pass map gives each window what the model's own head gives its cells (plain or
    centre-weighted pooling)."""
    torch.manual_seed(0)
    m = build_model(arch, in_bands=bands, num_outputs=5, centre_pool=centre).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.normal_(1, 0.1)
    patch, red = 64, m.backbone.reductions[-1]
    for step in (8, 16):
        scorer = fully_convolutional(m, patch, step)
        assert isinstance(scorer, DenseWindows) and scorer.step == step
        x = torch.randn(1, bands, patch + 12 * red, patch + 12 * red)
        with torch.no_grad():
            out = scorer.to("cpu")(x)
            f = m.backbone(x)
            n, r = patch // red, red // step
            for j in range(1, 10):  # windows whose corner lies on the plain network's pooling grid
                ref = m.head(f[:, :, j:j + n, j:j + n])
                assert torch.allclose(out[:, :, j * r, j * r], ref, atol=1e-4)
    if centre:  # the centre weighting is really there: the plain mean differs
        cells = f[:, :, 1:1 + n, 1:1 + n]
        plain = torch.nn.functional.linear(cells.mean((2, 3)), m.head[-1].weight, m.head[-1].bias)
        assert not torch.allclose(plain, m.head(cells), atol=1e-3)


def test_pixel_normalised_few_shot_models_score_windows_in_one_pass_group_normalised_ones_window_by_window():
    torch.manual_seed(0)
    args = dict(in_bands=3, num_classes=4, widths=[16, 16, 32, 32], stem_stride=2, pool_blocks=4)
    m = build_model("meta_classifier", norm="pixel", normalize=True, **args).eval()
    for p in m.parameters():
        p.data.normal_(0, 0.3)
    scorer = fully_convolutional(m, 64, 8)
    assert isinstance(scorer, DenseEmbedding) and scorer.step == 8
    x = torch.randn(1, 3, 64 + 16 * 8, 64 + 16 * 8)
    with torch.no_grad():
        out = scorer.to("cpu")(x)
        feats, h = [], x
        for blk in m.embedding.blocks:
            h = blk(h)
            feats.append(h)
        for j in (4, 8, 12):  # windows at multiples of 32 px: the plain network's pooling grid
            a = j * 8
            z = torch.cat([f[:, :, a // (4 * 2 ** i): a // (4 * 2 ** i) + 64 // (4 * 2 ** i),
                             a // (4 * 2 ** i): a // (4 * 2 ** i) + 64 // (4 * 2 ** i)].mean((2, 3))
                           for i, f in enumerate(feats)], 1)
            ref = m.head(torch.nn.functional.normalize(z, dim=1))
            assert torch.allclose(out[0, :, j, j], ref[0], atol=1e-4)
    assert fully_convolutional(build_model("meta_classifier", norm="group", **args), 64, 8) is None


def test_context_models_train_on_the_window_alone_first_then_with_the_context_the_map_sees(trained, monkeypatch):
    """The first CONTEXT_FROM of the epochs see each window cut out (cheaper); the rest see window + context,
    as ``geoml:predict`` scores it (``window_output``); validation always scores windows as the map does."""
    from geoml_plugin.core import window_scores
    from geoml_plugin.core.finetune import job
    from geoml_plugin.core.progress import Feedback

    _, _, d, _ = trained
    events = []
    real = window_scores.window_output

    def spy(model, x, context=0):
        events.append(("train" if torch.is_grad_enabled() else "val", x.shape[-1]))
        return real(model, x, context)

    monkeypatch.setattr(window_scores, "window_output", spy)
    fb = Feedback(on_log=lambda m: events.append(("log", m)))
    epochs = 10
    run_finetune(FinetuneConfig(str(d / "mosaic.tif"), str(d / "chips.gpkg"), "label", str(d / "ctx.safetensors"),
                                patch_size=CHIP, epochs=epochs, batch_size=16, validation_fraction=0.2, device="cpu",
                                seed=0), fb)
    ends = [i for i, e in enumerate(events) if e[0] == "log" and e[1].startswith("epoch ") and "train loss" in e[1]]
    assert len(ends) == epochs
    alone = round(job.CONTEXT_FROM * epochs)
    assert 0 < alone < epochs
    for k, end in enumerate(ends):
        start = ends[k - 1] if k else 0
        train = [w for kind, w in events[start:end] if kind == "train"]
        val = [w for kind, w in events[start:end] if kind == "val"]
        assert val and set(val) == {CHIP + 2 * 16}, k  # window + one 16-px cell of context on each side
        if k < alone:
            assert not train, k
        else:
            assert train and set(train) == {CHIP + 2 * 16}, k


@pytest.mark.parametrize("centre", [0.0, 0.25])
def test_a_few_shot_window_embedded_with_its_context_is_what_the_map_pass_gives_it(centre):
    """Prototypes and adaptation embed each support window with the neighbourhood the map's one pass
    over a tile shows it (``MetaClassifier.embed(x, context)``); embedded alone (zero padding at its edge)
    it differs — the mismatch that made a well-trained meta-model map 54–60 % where its chips scored 85 %.
    The same with the cells of every block pooled toward the window's centre (``centre_pool``)."""
    from geoml_plugin.core.window_scores import map_context

    torch.manual_seed(0)
    args = dict(in_bands=3, num_classes=4, widths=[16, 16, 32, 32], stem_stride=2, pool_blocks=4, centre_pool=centre)
    m = build_model("meta_classifier", norm="pixel", normalize=True, **args).eval()
    for p in m.parameters():
        p.data.normal_(0, 0.3)
    c = map_context(m, 64)
    assert c == 32
    assert map_context(build_model("meta_classifier", norm="group", **args), 64) == 0
    x = torch.randn(1, 3, 64 + 16 * 8, 64 + 16 * 8)
    with torch.no_grad():
        out = fully_convolutional(m, 64, 8).to("cpu")(x)
        for j in (4, 8, 12):  # window (j·8, j·8): with its context it starts 32 px before
            a = j * 8
            with_context = m(x[:, :, a - c:a + 64 + c, a - c:a + 64 + c], c)
            assert torch.allclose(out[0, :, j, j], with_context[0], atol=1e-4)
            alone = m(x[:, :, a:a + 64, a:a + 64])
            assert not torch.allclose(out[0, :, j, j], alone[0], atol=1e-2)
    if centre:  # the weighting is there: the plain mean embeds the window otherwise
        plain = build_model("meta_classifier", norm="pixel", normalize=True, **dict(args, centre_pool=0.0)).eval()
        plain.load_state_dict(m.state_dict())
        with torch.no_grad():
            assert not torch.allclose(plain(x[:, :, :64, :64]), m(x[:, :, :64, :64]), atol=1e-3)


def test_a_backbone_without_a_faithful_one_pass_map_is_scored_window_by_window_with_its_context(tmp_path):
    """MobileNetV2's features reach far past its training context, so its map cuts each window out with the
    context it was trained with (``window_context`` in the model file) and pools the window's cells, as in
    training: the class at each window's centre pixel is what ``window_output`` gives that cut-out."""
    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.progress import Feedback
    from geoml_plugin.core.raster.classes import make_classes
    from geoml_plugin.core.window_scores import window_output

    torch.manual_seed(0)
    m = build_model("mobilenet_v2", in_bands=3, num_outputs=3)
    for mod in m.modules():  # a random network whose outputs depend on its input: BatchNorm calibrated on noise
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
            mod.weight.data.normal_(1, 0.3)
            mod.bias.data.normal_(0, 0.3)
    with torch.no_grad():
        for _ in range(3):
            m.train()(torch.randn(16, 3, 96, 96) * 2 + 1)
    m.eval()
    assert fully_convolutional(m, 32, 8) is None
    meta = ModelMetadata(architecture="mobilenet_v2", arch_args={"in_bands": 3, "num_outputs": 3},
                         task="classification", output="patch", in_bands=3, patch_size=32,
                         classes=make_classes(["a", "b", "c"]), norm_mean=[0.0] * 3, norm_std=[1.0] * 3,
                         extra={"window_context": 32})
    path = save_model(str(tmp_path / "mn.safetensors"), m, meta)
    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, (3, 192, 192)).astype(np.float32)
    img[:, :, 96:] += 3.0  # two halves, so the classes are not all alike
    raster = write_raster(tmp_path / "img.tif", img, gt=GT)
    log = []
    res = run_predict(PredictConfig(raster, path, str(tmp_path / "map.tif"), str(tmp_path / "conf.tif"), device="cpu"),
                      Feedback(on_log=log.append))
    assert not res.fully_convolutional and res.window_step == 16
    assert any("window by window with the 32 px of context" in s for s in log)
    ds = gdal.Open(res.output_path)  # kept while its band is read
    got = ds.GetRasterBand(1).ReadAsArray()
    ds = gdal.Open(str(tmp_path / "conf.tif"))
    conf = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    centres = list(range(56, 137, 16))  # window centres (16 j + 8) whose window and context lie in the raster
    x = torch.from_numpy(img)
    cuts = torch.stack([x[:, cy - 48:cy + 48, cx - 48:cx + 48] for cy in centres for cx in centres])
    with torch.no_grad():
        prob = torch.softmax(window_output(m, cuts, 32), 1)
    want = prob.argmax(1).numpy() + 1  # class values are 1-based
    assert np.array_equal(got[np.ix_(centres, centres)].ravel(), want)
    at = conf[np.ix_(centres, centres)].ravel()
    np.testing.assert_allclose(at, prob.max(1).values.numpy(), atol=1e-4)
    assert at.std() > 1e-3  # the windows do differ: a wrong cut-out would show

"""A synthetic but realistic-looking sample scene, made on the fly.

Used by ``make demo``, the tests and the plugin's "sample data" action, so no
data has to ship with the plugin. The scene (UTM 32N, 10 m pixels) has:

* ``image.tif`` — 4 bands (red, green, blue, NIR: natural colour by default in QGIS), UInt16 reflectance × 10000,
  nodata 0, with four land-cover classes that differ in spectrum *and*
  texture (water smooth, forest grainy, cropland striped, urban blocky);
* ``landcover.tif`` — the true classes (1..4, 0 nodata) with category names;
* ``labels_points.gpkg`` / ``labels_polygons.gpkg`` — training labels with
  ``class_id`` and ``class_name``;
* ``canopy_height.tif`` — a continuous target (m) for regression;
* ``dem.tif`` — terrain (m) the land cover follows (water in the valleys).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from osgeo import ogr

from .raster.classes import category_names, color_table, make_classes
from .raster.io import RasterWriter, srs_from_wkt
from .raster.styles import TERRAIN, paletted_qml, pseudocolor_qml

CLASS_NAMES = ["Water", "Forest", "Cropland", "Urban"]
EPSG = 32632
PIXEL = 10.0
ORIGIN = (500000.0, 5100000.0)
# class mean reflectance (R, G, B, NIR) × 10000
_SPECTRA = np.array(
    [[700, 1000, 900, 400], [500, 800, 500, 3500], [1000, 1100, 700, 2600], [1600, 1500, 1500, 2000]],
    dtype=np.float32,
)


@dataclass
class SampleScene:
    folder: str
    image: str
    landcover: str
    points: str
    polygons: str
    canopy_height: str
    dem: str
    class_names: tuple = tuple(CLASS_NAMES)
    size: int = 0


def _wkt() -> str:
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    return srs.ExportToWkt()


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Gaussian-filtered white noise (via FFT), normalised to zero mean, unit std."""
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    kernel = np.exp(-2 * (np.pi * scale) ** 2 * (fx**2 + fy**2))
    out = np.real(np.fft.ifft2(np.fft.fft2(noise) * kernel))
    return (out - out.mean()) / (out.std() + 1e-9)


def make_terrain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-scale terrain in metres (ridges and valleys, 200–900 m)."""
    z = sum(a * smooth_noise(rng, h, w, s) for a, s in ((1.0, 40), (0.45, 16), (0.2, 6), (0.06, 2)))
    z = np.abs(z) ** 1.2 * np.sign(z)
    z = (z - z.min()) / (z.max() - z.min() + 1e-9)
    return (200 + 700 * z).astype(np.float32)


def _landcover(rng, dem: np.ndarray) -> np.ndarray:
    h, w = dem.shape
    zn = (dem - dem.mean()) / dem.std()
    fields = np.stack([smooth_noise(rng, h, w, 14) for _ in range(3)])
    water = zn < np.quantile(zn, 0.14)
    lc = np.argmax(fields, axis=0) + 2  # 2 forest, 3 cropland, 4 urban
    lc[(zn > 1.0) & (lc != 4)] = 2  # high ground is forested
    lc[water] = 1
    return lc.astype(np.uint8)


def _texture(rng, lc: np.ndarray) -> np.ndarray:
    h, w = lc.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = np.zeros((h, w), dtype=np.float32)
    grain = rng.standard_normal((h, w)).astype(np.float32)
    tex[lc == 1] = 0.05 * grain[lc == 1]
    tex[lc == 2] = 0.35 * grain[lc == 2] + 0.25 * smooth_noise(rng, h, w, 1.5).astype(np.float32)[lc == 2]
    stripes = np.sin((xx * 0.8 + yy * 0.35) * 0.9).astype(np.float32)
    tex[lc == 3] = 0.3 * stripes[lc == 3]
    blocks = (((xx // 6) + (yy // 6)) % 2 * 2 - 1).astype(np.float32)
    streets = ((xx % 12 < 2) | (yy % 12 < 2)).astype(np.float32)
    urban = 0.3 * blocks - 0.5 * streets
    tex[lc == 4] = urban[lc == 4]
    return tex


def make_sample_scene(folder: str, size: int = 256, seed: int = 0, points_per_class: int = 40) -> SampleScene:
    """Write the sample scene into ``folder`` (created if needed) and return its paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    h = w = int(size)
    dem = make_terrain(rng, h, w)
    lc = _landcover(rng, dem)
    tex = _texture(rng, lc)
    img = _SPECTRA[lc - 1].transpose(2, 0, 1)  # 4, h, w
    img = img * (1.0 + 0.25 * tex)[None] + rng.normal(0, 40, img.shape).astype(np.float32)
    img[3] += 300 * smooth_noise(rng, h, w, 10).astype(np.float32)  # vegetation vigour varies
    img = np.clip(img, 1, 10000).astype(np.uint16)
    img[:, :3, -5:] = 0  # a strip of nodata in the top-right corner, as real scenes have
    valid = (img != 0).all(axis=0)

    red, nir = img[0].astype(np.float32), img[3].astype(np.float32)
    ndvi = (nir - red) / (nir + red + 1e-6)
    height = np.where(lc == 2, 8 + 30 * np.clip(ndvi - 0.3, 0, 1) ** 1.2, 1.5 * np.clip(ndvi, 0, 1))
    height = np.where(lc == 1, 0.0, height).astype(np.float32)
    height[~valid] = -9999.0

    gt = (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL)
    wkt = _wkt()
    classes = make_classes(CLASS_NAMES)
    paths = {k: os.path.join(folder, f) for k, f in dict(
        image="image.tif", landcover="landcover.tif", points="labels_points.gpkg",
        polygons="labels_polygons.gpkg", canopy_height="canopy_height.tif", dem="dem.tif").items()}
    common = dict(width=w, height=h, geotransform=gt, crs_wkt=wkt)
    with RasterWriter(paths["image"], bands=4, dtype=np.uint16, nodata=0,
                      band_descriptions=["red", "green", "blue", "nir"], **common) as wr:
        wr.write(img, 0, 0)
    lc_out = np.where(valid, lc, 0).astype(np.uint8)
    with RasterWriter(paths["landcover"], bands=1, dtype=np.uint8, nodata=0, category_names=category_names(classes),
                      color_table=color_table(classes), qml=paletted_qml(classes), **common) as wr:
        wr.write(lc_out, 0, 0)
    with RasterWriter(paths["canopy_height"], bands=1, dtype=np.float32, nodata=-9999.0,
                      band_descriptions=["canopy height (m)"], qml=pseudocolor_qml(0, 30), **common) as wr:
        wr.write(height, 0, 0)
    with RasterWriter(paths["dem"], bands=1, dtype=np.float32, nodata=-9999.0, band_descriptions=["elevation (m)"],
                      qml=pseudocolor_qml(float(dem.min()), float(dem.max()), TERRAIN), **common) as wr:
        wr.write(dem, 0, 0)

    _write_labels(paths["points"], paths["polygons"], lc_out, gt, wkt, rng, points_per_class)
    return SampleScene(folder=folder, size=size, **paths)


def _pure(lc: np.ndarray, r: int, c: int, half: int) -> bool:
    win = lc[max(0, r - half) : r + half + 1, max(0, c - half) : c + half + 1]
    return win.size > 0 and (win == lc[r, c]).mean() > 0.9 and lc[r, c] != 0


def _write_labels(points_path, polygons_path, lc, gt, wkt, rng, per_class) -> None:
    srs = srs_from_wkt(wkt)
    drv = ogr.GetDriverByName("GPKG")
    for p in (points_path, polygons_path):
        if os.path.exists(p):
            drv.DeleteDataSource(p)
    pds = drv.CreateDataSource(points_path)
    play = pds.CreateLayer("labels", srs, ogr.wkbPoint)
    gds = drv.CreateDataSource(polygons_path)
    glay = gds.CreateLayer("labels", srs, ogr.wkbPolygon)
    for lay in (play, glay):
        lay.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
        lay.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    h, w = lc.shape
    for k, name in enumerate(CLASS_NAMES, start=1):
        rows, cols = np.nonzero(lc == k)
        order = rng.permutation(len(rows))
        n_pts = n_polys = 0
        for i in order:
            r, c = int(rows[i]), int(cols[i])
            if n_pts < per_class and _pure(lc, r, c, 4):
                x, y = gt[0] + (c + 0.5) * gt[1], gt[3] + (r + 0.5) * gt[5]
                f = ogr.Feature(play.GetLayerDefn())
                f.SetField("class_id", k)
                f.SetField("class_name", name)
                f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({x} {y})"))
                play.CreateFeature(f)
                n_pts += 1
            elif n_polys < 6 and _pure(lc, r, c, 7) and 8 < r < h - 8 and 8 < c < w - 8:
                x0, y0 = gt[0] + (c - 6) * gt[1], gt[3] + (r - 6) * gt[5]
                x1, y1 = gt[0] + (c + 7) * gt[1], gt[3] + (r + 7) * gt[5]
                f = ogr.Feature(glay.GetLayerDefn())
                f.SetField("class_id", k)
                f.SetField("class_name", name)
                f.SetGeometry(ogr.CreateGeometryFromWkt(
                    f"POLYGON (({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
                glay.CreateFeature(f)
                n_polys += 1
            if n_pts >= per_class and n_polys >= 6:
                break
    pds = gds = None


def read_label_points(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(xy, class_id) of a sample label layer (in the scene CRS)."""
    ds = ogr.Open(path)
    lay = ds.GetLayer(0)
    xy, ids = [], []
    for f in lay:
        g = f.GetGeometryRef()
        xy.append((g.GetX(), g.GetY()))
        ids.append(f.GetField("class_id"))
    return np.asarray(xy, dtype=np.float64), np.asarray(ids, dtype=np.int64)


def make_sample_model(scene: SampleScene, path: str) -> str:
    """Fit a per-pixel linear discriminant (LDA) on the label points and save
    it as a GeoML model: a real, if simple, model for the demo and tests."""
    from .modelfile import ModelMetadata, new_provenance, save_model
    from .models import build_model
    from .raster.io import RasterReader

    torch = __import__("torch")
    xy, ids = read_label_points(scene.points)
    with RasterReader(scene.image) as r:
        mean, std, _ = r.band_statistics()
        gt = r.info.geotransform
        samples = []
        for (x, y) in xy:
            c, row = int((x - gt[0]) / gt[1]), int((y - gt[3]) / gt[5])
            d, v = r.read(c - 1, row - 1, 3, 3)
            samples.append(d.reshape(d.shape[0], -1)[:, v.ravel()].T)
    counts = [len(s) for s in samples]
    X = (np.concatenate(samples) - mean) / std
    y = np.repeat(ids, counts)
    K = len(CLASS_NAMES)
    mus = np.stack([X[y == k].mean(axis=0) for k in range(1, K + 1)])
    cov = sum(np.cov(X[y == k].T) * (np.sum(y == k) - 1) for k in range(1, K + 1)) / (len(y) - K)
    inv = np.linalg.inv(cov + 1e-3 * np.eye(cov.shape[0]))
    w = mus @ inv
    b = -0.5 * np.einsum("kc,kc->k", w, mus)
    model = build_model("pixel_linear", in_bands=4, out_channels=K)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w[:, :, None, None]).float())
        model.bias.copy_(torch.from_numpy(b).float())
    acc = float(((X @ w.T + b).argmax(axis=1) + 1 == y).mean())
    meta = ModelMetadata(
        architecture="pixel_linear", arch_args={"in_bands": 4, "out_channels": K}, task="segmentation",
        output="dense", in_bands=4, patch_size=16, band_indices=[1, 2, 3, 4], band_names=["red", "green", "blue", "nir"],
        norm_mean=mean.tolist(), norm_std=std.tolist(), classes=make_classes(CLASS_NAMES),
        pixel_size=[PIXEL, PIXEL], crs_wkt=_wkt(),
        provenance=new_provenance(method="linear discriminant analysis on sample label points", source=scene.image),
        metrics={"training_accuracy": round(acc, 4)},
    )
    return save_model(path, model, meta)

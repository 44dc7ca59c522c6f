"""Scoring the map a user gets (not the chips): shared by the EuroSAT benchmarks.

A map made by ``run_predict`` / ``run_fewshot`` is read

* at held-out chip centres (accuracy of the map where the chips' classes are known), and
* over every pixel of the held-out chips, against ``eurosat_rgb_train_labels.tif`` (pixel accuracy; every
  640 m of the mosaic is a chip, hence a class boundary, so this figure is bounded below 100 % for any map
  that is not exactly right at chip edges).

``shifted_input`` crops the raster by k px in x and y (a VRT, no copy), which moves the window lattice
relative to the chips: a map that does not depend on the lattice's alignment scores the same at every k.
"""
from __future__ import annotations

import os

import numpy as np


def shifted_input(raster: str, k: int, folder: str) -> str:
    """``raster`` without its first ``k`` columns and rows (same georeference for the rest), as a VRT."""
    from osgeo import gdal

    if k == 0:
        return raster
    src = gdal.Open(raster)
    path = os.path.join(folder, f"shift_{k}.vrt")
    gdal.Translate(path, src, format="VRT", srcWin=[k, k, src.RasterXSize - k, src.RasterYSize - k])
    return path


def split_raster(raster: str, folder: str) -> tuple[str, str]:
    """The western and eastern halves of ``raster`` as two separate GeoTIFF files (tiled, DEFLATE)."""
    from osgeo import gdal

    src = gdal.Open(raster)
    w, h = src.RasterXSize, src.RasterYSize
    out = []
    for name, x0, width in (("west", 0, w // 2), ("east", w // 2, w - w // 2)):
        path = os.path.join(folder, f"{name}.tif")
        gdal.Translate(path, src, srcWin=[x0, 0, width, h], creationOptions=["TILED=YES", "COMPRESS=DEFLATE"])
        out.append(path)
    return out[0], out[1]


def write_points(src: str, dst: str, keep) -> str:
    """A GeoPackage layer "labels" of the points of ``src`` (all fields, same CRS) for which
    ``keep(fid, x, y, class_id)`` is true."""
    from osgeo import ogr

    ds = ogr.Open(src)
    lay = ds.GetLayerByName("labels") or ds.GetLayer(0)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(dst)
    dlay = out.CreateLayer("labels", lay.GetSpatialRef(), ogr.wkbPoint)
    defn = lay.GetLayerDefn()
    for i in range(defn.GetFieldCount()):
        dlay.CreateField(defn.GetFieldDefn(i))
    n = 0
    for f in lay:
        g = f.GetGeometryRef()
        if keep(f.GetFID(), g.GetX(), g.GetY(), int(f.GetField("class_id"))):
            h = ogr.Feature(dlay.GetLayerDefn())
            h.SetFrom(f)
            dlay.CreateFeature(h)
            n += 1
    out = ds = None
    if not n:
        raise SystemExit(f"no points selected for {dst}")
    return dst


def read_points(points: str, class_field: str = "class_name") -> tuple[np.ndarray, list]:
    """(x, y) world coordinates and class names of the points of a GeoPackage layer."""
    from osgeo import ogr

    ds = ogr.Open(points)
    lay = ds.GetLayer(0)
    xy, names = [], []
    for f in lay:
        g = f.GetGeometryRef()
        xy.append((g.GetX(), g.GetY()))
        names.append(f.GetField(class_field))
    return np.asarray(xy, float), names


def score_map(map_path: str, points: str, labels_raster: str, chip: int = 64, class_field: str = "class_name") -> dict:
    """Accuracy of a class map at the points' pixels, and pixel accuracy over the ``chip``-px squares centred on
    them against the labels raster (class_id + 1 per pixel, category names in the same order as the map's)."""
    xy, names = read_points(points, class_field)
    return score_map_at(map_path, xy, names, labels_raster, chip)


def score_map_at(map_path: str, xy, names: list, labels_raster: str, chip: int = 64) -> dict:
    """:func:`score_map` at map coordinates ``xy`` whose classes are ``names``."""
    from osgeo import gdal

    m = gdal.Open(map_path)
    gt = m.GetGeoTransform()
    cats = m.GetRasterBand(1).GetCategoryNames() or []
    arr = m.GetRasterBand(1).ReadAsArray()
    lab_ds = gdal.Open(labels_raster)
    gdal.Info(lab_ds)  # loads the .aux.xml category names (GDAL 3.6)
    lab_names = lab_ds.GetRasterBand(1).GetCategoryNames() or []
    lgt = lab_ds.GetGeoTransform()
    lab = lab_ds.GetRasterBand(1).ReadAsArray()
    # map value → name → labels-raster value
    name_of_map = {i: n for i, n in enumerate(cats) if n}
    lab_value = {n: i for i, n in enumerate(lab_names) if n}
    to_lab = np.zeros(max(len(cats), 1) + 1, np.int64) - 1
    for v, n in name_of_map.items():
        to_lab[v] = lab_value.get(n, -2)
    hit, pix_ok, pix_n = 0, 0, 0
    for (x, y), name in zip(xy, names):
        c = int(np.floor((x - gt[0]) / gt[1]))
        r = int(np.floor((y - gt[3]) / gt[5]))
        if 0 <= r < arr.shape[0] and 0 <= c < arr.shape[1]:
            hit += int(name_of_map.get(int(arr[r, c])) == name)
        lc = int(np.floor((x - lgt[0]) / lgt[1]))
        lr = int(np.floor((y - lgt[3]) / lgt[5]))
        truth = lab[lr - chip // 2: lr + chip // 2, lc - chip // 2: lc + chip // 2]
        # the map pixels over the same ground (the map may be a shifted crop of the labels' grid)
        dc, dr = int(round((lgt[0] - gt[0]) / gt[1])), int(round((lgt[3] - gt[3]) / gt[5]))
        r0, c0 = lr - chip // 2 + dr, lc - chip // 2 + dc
        r1, c1 = r0 + truth.shape[0], c0 + truth.shape[1]
        rr0, cc0 = max(0, r0), max(0, c0)
        pred = arr[rr0:r1, cc0:c1]
        t = truth[rr0 - r0: rr0 - r0 + pred.shape[0], cc0 - c0: cc0 - c0 + pred.shape[1]]
        mapped = to_lab[np.clip(pred.astype(np.int64), 0, len(to_lab) - 1)]
        ok = t > 0
        pix_ok += int(((mapped == t) & ok).sum())
        pix_n += int(ok.sum())
    return {"map_accuracy_at_chip_centres": round(hit / max(len(names), 1), 4),
            "map_pixel_accuracy_on_chips": round(pix_ok / max(pix_n, 1), 4), "points": len(names),
            "chip_pixels": pix_n}

#!/usr/bin/env python3
"""Stitch Dubai parts of one tile into one raster and label raster, for training on more of the area.

``--leave-out`` parts are not stitched (the parts to map); the others are laid out ``--columns`` to a row, each in a
cell of the largest part's size, the image reflected at the part's edges to fill its cell and the labels 0
(unlabelled) there. The output folder also gets links to every part of the data folder, so that
``bench/segmentation_dubai.py --data OUT --pairs <name>:<part>`` trains on the stitched raster and maps a part.
The nine tile1 parts 3 × 3 (``--columns 3``, nothing left out) are the 4.6 MP raster of the README's timing.

    python bench/dubai_stitch.py --tile tile1 --leave-out tile1_part009 --out /tmp/dubai_more
    python bench/segmentation_dubai.py --data /tmp/dubai_more --pairs tile1_but_part009:tile1_part009
"""
from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stitch(data: str, tile: str, leave_out: list, out: str, columns: int = 4) -> tuple[str, float]:
    """(the stitched raster's name without .tif, labelled megapixels)."""
    import numpy as np
    from osgeo import gdal

    parts = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(data, f"{tile}_part*.tif"))
                   if not p.endswith("_labels.tif"))
    parts = [p for p in parts if p not in leave_out]
    if not parts:
        raise SystemExit(f"No parts of {tile} in {data} besides those left out.")
    imgs = [gdal.Open(os.path.join(data, f"{p}.tif")).ReadAsArray() for p in parts]
    labs = [gdal.Open(os.path.join(data, f"{p}_labels.tif")).ReadAsArray() for p in parts]
    H, W = max(a.shape[1] for a in imgs), max(a.shape[2] for a in imgs)
    rows = -(-len(parts) // columns)
    cols = min(columns, len(parts))
    big = np.zeros((imgs[0].shape[0], rows * H, cols * W), imgs[0].dtype)
    lab = np.zeros((rows * H, cols * W), labs[0].dtype)
    for k, (im, lb) in enumerate(zip(imgs, labs)):
        r, c = divmod(k, columns)
        h, w = lb.shape
        big[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = np.pad(im, ((0, 0), (0, H - h), (0, W - w)), mode="reflect")
        lab[r * H:r * H + h, c * W:c * W + w] = lb
    name = f"{tile}_but_{'_'.join(p.split('_', 1)[1] for p in leave_out)}" if leave_out else f"{tile}_all"
    src = gdal.Open(os.path.join(data, f"{parts[0]}.tif"))
    src_lab_ds = gdal.Open(os.path.join(data, f"{parts[0]}_labels.tif"))  # kept open: its band needs it
    gdal.Info(src_lab_ds, format="json")  # loads the .aux.xml with the class names (GDAL 3.6 quirk)
    src_lab = src_lab_ds.GetRasterBand(1)
    drv = gdal.GetDriverByName("GTiff")
    opts = ["TILED=YES", "COMPRESS=DEFLATE"]
    ds = drv.Create(os.path.join(out, f"{name}.tif"), cols * W, rows * H, big.shape[0], gdal.GDT_Byte, opts)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for b in range(big.shape[0]):
        ds.GetRasterBand(b + 1).WriteArray(big[b])
    ds = None
    dl = drv.Create(os.path.join(out, f"{name}_labels.tif"), cols * W, rows * H, 1, gdal.GDT_Byte, opts)
    dl.SetGeoTransform(src.GetGeoTransform())
    dl.SetProjection(src.GetProjection())
    band = dl.GetRasterBand(1)
    band.WriteArray(lab)
    band.SetNoDataValue(0)
    if src_lab.GetCategoryNames():  # the class names (building, land, …) the benchmark scores by
        band.SetCategoryNames(src_lab.GetCategoryNames())
    if src_lab.GetColorTable():
        band.SetColorTable(src_lab.GetColorTable())
    band = dl = src_lab = src_lab_ds = None
    return name, float((lab > 0).sum()) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "segmentation" / "dubai"))
    ap.add_argument("--tile", required=True, help="tile1, tile2 or tile3")
    ap.add_argument("--leave-out", default="", help="comma-separated parts not stitched (e.g. tile1_part009)")
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--out", required=True, help="a folder (created); the data folder's parts are linked into it")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    name, mp = stitch(args.data, args.tile, [p for p in args.leave_out.split(",") if p], args.out, args.columns)
    for f in glob.glob(os.path.join(args.data, "tile*")):
        link = os.path.join(args.out, os.path.basename(f))
        if not os.path.exists(link):
            os.symlink(os.path.abspath(f), link)
    print(f"{os.path.join(args.out, name)}.tif: {mp:.2f} MP labelled")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Few-shot demo: meta-train on the sample scene, then map a *new* scene from 3 points per class.

The new region is another synthetic scene (different terrain and layout, same
kinds of land cover); its classes are named by the analyst ("lake", "woods",
…), so nothing but the clicked points tells the model what they are.
"""
from __future__ import annotations

import numpy as np
from osgeo import gdal, ogr

NEW_NAMES = {1: "lake", 2: "pinewood", 3: "rapeseed", 4: "village"}  # alphabetical = palette order
POINTS_PER_CLASS = 3


def _support_layer(scene, path: str, seed: int = 0) -> str:
    """A few label points per class of ``scene``, renamed, as an analyst would click them."""
    from geoml_plugin.core.raster.io import srs_from_wkt
    from geoml_plugin.core.sampledata import read_label_points

    xy, ids = read_label_points(scene.points)
    rng = np.random.default_rng(seed)
    drv = ogr.GetDriverByName("GPKG")
    ds = drv.CreateDataSource(path)
    lay = ds.CreateLayer("support", srs_from_wkt(gdal.Open(scene.image).GetProjection()), ogr.wkbPoint)
    lay.CreateField(ogr.FieldDefn("cover", ogr.OFTString))
    for k, name in NEW_NAMES.items():
        for i in rng.choice(np.flatnonzero(ids == k), POINTS_PER_CLASS, replace=False):
            f = ogr.Feature(lay.GetLayerDefn())
            f.SetField("cover", name)
            f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({xy[i, 0]} {xy[i, 1]})"))
            lay.CreateFeature(f)
    ds = None
    return path


def run(ctx) -> None:
    from geoml_plugin.core.raster.io import category_names_of
    from geoml_plugin.core.sampledata import make_sample_scene

    meta = ctx.out / "fewshot_meta.safetensors"
    res = ctx.run_alg("geoml:metatrain", {
        "INPUT": ctx.scene.image, "LABELS": ctx.scene.points, "LABEL_FIELD": "class_name", "ALGORITHM": 0,
        "WAYS": 3, "SHOTS": 3, "QUERY": 5, "META_BATCH": 2, "ITERATIONS": 150, "PATCH_SIZE": 32, "DEVICE": 0,
        "SEED": ctx.seed, "OUTPUT_MODEL": str(meta)})
    print(f"  meta-validation accuracy (3-way 3-shot episodes): {res['VAL_ACCURACY']:.1%}")

    region = make_sample_scene(str(ctx.out / "fewshot_new_region"), size=256, seed=7)
    support = _support_layer(region, str(ctx.out / "fewshot_support.gpkg"))
    print(f"  new region: {region.image} with {POINTS_PER_CLASS} points per class ({', '.join(NEW_NAMES.values())})")
    out, conf = ctx.out / "fewshot_landcover.tif", ctx.out / "fewshot_confidence.tif"
    adapted = ctx.out / "fewshot_adapted.safetensors"
    res = ctx.run_alg("geoml:fewshot", {
        "INPUT": region.image, "MODEL": str(meta), "SUPPORT": support, "LABEL_FIELD": "cover", "ADAPT_STEPS": -1,
        "DEVICE": 0, "OUTPUT": str(out), "OUTPUT_CONFIDENCE": str(conf), "OUTPUT_MODEL": str(adapted)})
    names = category_names_of(str(out))
    lut = np.array([0] + [next(k for k, v in NEW_NAMES.items() if v == n) for n in names[1:]])
    pred = lut[gdal.Open(str(out)).ReadAsArray()]
    truth = gdal.Open(region.landcover).ReadAsArray()
    print(f"  adapted with {res['METHOD']}; agreement with the true land cover: {(pred == truth)[truth > 0].mean():.1%}")
    ctx.made += [meta, support, out, conf, adapted]
    ctx.render([out], ctx.out / "fewshot_landcover.png")
    ctx.render([conf], ctx.out / "fewshot_confidence.png")
    ctx.render([region.image], ctx.out / "fewshot_new_region.png")

"""Foundation demo: fit the built-in sample model and apply it with geoml:predict."""
from __future__ import annotations

from osgeo import gdal


def run(ctx) -> None:
    from geoml_plugin.core.sampledata import make_sample_model

    model = make_sample_model(ctx.scene, str(ctx.out / "sample_lda.safetensors"))
    print("  sample model: per-pixel linear discriminant fitted on the label points")
    out = ctx.out / "predict_landcover.tif"
    conf = ctx.out / "predict_confidence.tif"
    ctx.run_alg("geoml:predict", {"INPUT": ctx.scene.image, "MODEL": model, "OUTPUT": str(out),
                                  "OUTPUT_CONFIDENCE": str(conf), "DEVICE": 0})
    pred = gdal.Open(str(out)).ReadAsArray()
    truth = gdal.Open(ctx.scene.landcover).ReadAsArray()
    acc = float((pred == truth)[truth > 0].mean())
    print(f"  agreement with the true land cover: {acc:.1%}")
    ctx.made += [model, out, conf]
    ctx.render([out], ctx.out / "predict_landcover.png")
    ctx.render([ctx.scene.image], ctx.out / "sample_image.png")

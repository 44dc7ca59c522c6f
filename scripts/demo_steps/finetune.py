"""Fine-tuning demo: train a CNN on the sample label points (geoml:finetune), classify the scene (geoml:predict)."""
from __future__ import annotations

import json

import numpy as np
from osgeo import gdal


def run(ctx) -> None:
    from geoml_plugin.core.modelfile import read_metadata

    model = ctx.out / "finetune_model.safetensors"
    report = ctx.out / "finetune_report.html"
    res = ctx.run_alg("geoml:finetune", {
        "INPUT": ctx.scene.image, "LABELS": ctx.scene.points, "LABEL_FIELD": "class_name",
        "OUTPUT_MODEL": str(model), "OUTPUT_REPORT": str(report),
        "PATCH_SIZE": 32, "SEED": ctx.seed, "DEVICE": 0,  # 32-px patches: the scene's fields are small
    })
    metrics = json.loads(res["METRICS"])
    print(f"  validation: overall accuracy {metrics['overall_accuracy']:.1%}, kappa {metrics['kappa']:.3f} "
          f"({metrics['samples']} held-out label points)")
    out = ctx.out / "finetune_landcover.tif"
    conf = ctx.out / "finetune_confidence.tif"
    ctx.run_alg("geoml:predict", {"INPUT": ctx.scene.image, "MODEL": str(model), "OUTPUT": str(out),
                                  "OUTPUT_CONFIDENCE": str(conf), "STRIDE": 4, "DEVICE": 0})
    # agreement with the true land cover, matching classes by name
    names = [c.name for c in read_metadata(str(model)).classes]
    truth_names = list(ctx.scene.class_names)
    lut = np.zeros(len(names) + 1, np.int64)
    for i, n in enumerate(names, start=1):
        lut[i] = truth_names.index(n) + 1
    pred = lut[gdal.Open(str(out)).ReadAsArray()]
    truth = gdal.Open(ctx.scene.landcover).ReadAsArray()
    print(f"  agreement of the classified scene with the true land cover: {(pred == truth)[truth > 0].mean():.1%}")
    ctx.made += [model, report, report.with_suffix(".json"), out, conf]
    ctx.render([out], ctx.out / "finetune_landcover.png")

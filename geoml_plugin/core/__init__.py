"""GeoML core: the machine-learning and raster code, free of QGIS and Qt.

Everything here runs under plain Python (pytest, scripts, notebooks) with
numpy, GDAL, torch and safetensors. The QGIS shell (dialogs, tasks, Processing
algorithms) is a thin layer over these functions. A test imports every module
of this package with ``qgis`` and Qt blocked, so keep it that way.

Packages, one per capability, over shared modules:

* ``raster/`` — GDAL reading and writing, georeferencing, tiling, labels, classes, styles;
* ``finetune/`` — ``geoml:finetune``: training data, training loop, backbones, pretrained weights, report;
* ``fewshot/`` — ``geoml:metatrain`` and ``geoml:fewshot``: episodes, MAML, prototypical networks;
* ``gan/`` — ``geoml:traingan`` and ``geoml:generate``: GAN training, tile generation, the map tool's tiles;
* shared: ``errors``, ``progress``, ``device``, ``outputs`` (file safety), ``modelfile``, ``models/``,
  ``predict`` (and ONNX), ``window_scores``.

Every job and its configuration can be imported from here, e.g.
``from geoml_plugin.core import run_finetune, FinetuneConfig``. They are loaded on first use,
so importing this package stays cheap (no numpy, GDAL or torch).
"""
from __future__ import annotations

import importlib

# name -> module (relative to this package) that defines it
_EXPORTS = {
    "PredictConfig": "predict",
    "run_predict": "predict",
    "run_predict_many": "predict_many",
    "run_predict_onnx": "predict",
    "FinetuneConfig": "finetune.job",
    "run_finetune": "finetune.job",
    "MetaTrainConfig": "fewshot.metatrain",
    "run_metatrain": "fewshot.metatrain",
    "FewShotConfig": "fewshot.job",
    "run_fewshot": "fewshot.job",
    "GanTrainConfig": "gan.train",
    "run_traingan": "gan.train",
    "GenerateConfig": "gan.generate",
    "run_generate": "gan.generate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

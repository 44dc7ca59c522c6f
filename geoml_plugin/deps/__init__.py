"""Dependency management: are torch, torchvision and safetensors usable in this QGIS, and installing them.

* :mod:`.detect`: GeoML's private package folder, the dependency status (checked
  in a separate process), its explanations, the GPU badge text and the
  diagnostics report;
* :mod:`.torch_probe`: the standard-library-only script :mod:`.detect` runs
  (by file path) in a separate Python process to import torch & co.;
* :mod:`.installer`: pip into the private folder (CPU/CUDA build choice,
  prune, verify, swap);
* :mod:`.interpreter`, :mod:`.gpu_driver`: QGIS's Python interpreter and pip;
  the NVIDIA driver through ``nvidia-smi``;
* :mod:`.torch_preload`: keeps Triton out of QGIS and imports torch on the main thread.

No Qt or QGIS import at module level; the dialogs are in :mod:`geoml_plugin.gui.deps`.
"""

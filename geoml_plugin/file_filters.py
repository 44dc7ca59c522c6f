"""File-dialog filters for model files, shared by the dialogs (``gui/``) and the Processing algorithms
(``processing/``): plain text, no Qt or QGIS import, so the gui does not import processing for them."""

ALL_FILES = "All files (*.*)"
# a model GeoML reads: its own files (``.geoml`` is the older suffix)
GEOML_MODEL = "GeoML model (*.safetensors *.geoml)"
# a model GeoML writes
NEW_GEOML_MODEL = "GeoML model (*.safetensors)"
ONNX_MODEL = "ONNX model (*.onnx)"

MODEL_FILTER = f"{GEOML_MODEL};;{ALL_FILES}"
# models that can be applied: GeoML files and ONNX models (GeoML exports, Deepness Segmentor/Regressor)
APPLY_MODEL_FILTER = f"Models (*.safetensors *.geoml *.onnx);;{GEOML_MODEL};;{ONNX_MODEL};;{ALL_FILES}"

"""Which layers a GeoML dialog or panel preselects.

QGIS's layer combo boxes pick the first layer alphabetically, which in a
project GeoML has worked in is often one of its own outputs (a class map, a
confidence raster), and Fine-tune offered the input raster itself as its
labels. The rule here (issue 21): the layer last used for that role, if it is
in the project; else a plausible one: multi-band imagery for an input raster,
point then polygon layers for labels; never a GeoML output, never the input
itself as its labels. Ties go to the layer highest in the layer tree.

A combo the user set by hand keeps the user's choice; one the dialog set is
re-picked when layers are added (a point layer added after the dialog opened).
"""
from __future__ import annotations

import os
from typing import Optional

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer, QgsWkbTypes

LAST = "geoml/last_layers/"  # role → the source of the layer last used for it (shared by every dialog)
OUTPUT_PROPERTY = "geoml/output"  # custom layer property of layers GeoML added as outputs
_outputs_cache: dict = {}  # (source, mtime) → written by GeoML


def mark_output(layer: QgsMapLayer) -> None:
    """Mark ``layer`` as a GeoML output (never preselected as an input)."""
    layer.setCustomProperty(OUTPUT_PROPERTY, True)


def is_geoml_output(layer: QgsMapLayer) -> bool:
    """A layer GeoML added, or a raster GeoML wrote (its GDAL metadata has GEOML_ keys: maps, confidence,
    tiles), e.g. reopened from disk in a later session."""
    if layer.customProperty(OUTPUT_PROPERTY, False) in (True, "true", "True", 1):
        return True
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return False
    source = layer.source()
    try:
        key = (source, os.path.getmtime(source))
    except OSError:
        return False
    if key not in _outputs_cache:
        from osgeo import gdal

        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            ds = gdal.Open(source)
            meta = (ds.GetMetadata() or {}) if ds is not None else {}
        except RuntimeError:
            meta = {}
        finally:
            gdal.PopErrorHandler()
        _outputs_cache[key] = any(k.startswith("GEOML_") for k in meta)
    return _outputs_cache[key]


def remember(role: str, layer: Optional[QgsMapLayer]) -> None:
    if layer is not None:
        QgsSettings().setValue(LAST + role, layer.source())


def remembered(role: str, project: Optional[QgsProject] = None, exclude=()) -> Optional[QgsMapLayer]:
    source = QgsSettings().value(LAST + role, "")
    if not isinstance(source, str) or not source:
        return None
    for layer in _tree_order(project):
        if layer.source() == source and layer not in exclude:
            return layer
    return None


def _tree_order(project: Optional[QgsProject] = None) -> list:
    """The project's layers, top of the layer tree first (then any not in the tree)."""
    project = project or QgsProject.instance()
    ordered = [node.layer() for node in project.layerTreeRoot().findLayers() if node.layer() is not None]
    rest = [lyr for lyr in project.mapLayers().values() if lyr not in ordered]
    return [lyr for lyr in ordered + rest if lyr.isValid()]


def pick_input_raster(role: str = "input", project: Optional[QgsProject] = None,
                      exclude=()) -> Optional[QgsRasterLayer]:
    """The raster to preselect as a job's input: the last used, else multi-band imagery, else any raster that
    GeoML did not write; None when the project holds only GeoML outputs (or nothing)."""
    last = remembered(role, project, exclude)
    if isinstance(last, QgsRasterLayer):
        return last
    rasters = [lyr for lyr in _tree_order(project) if isinstance(lyr, QgsRasterLayer) and lyr not in exclude
               and not is_geoml_output(lyr)]
    multi = [lyr for lyr in rasters if lyr.bandCount() >= 3]
    return (multi or rasters or [None])[0]


def pick_labels(role: str = "labels", project: Optional[QgsProject] = None, input_layer=None,
                allow_raster: bool = True) -> Optional[QgsMapLayer]:
    """The labels to preselect: the last used (a label raster only when it was chosen before), else a point
    layer, else a polygon layer; never ``input_layer`` nor a GeoML output; None when there is none."""
    last = remembered(role, project, exclude=(input_layer,))
    if last is not None and (allow_raster or isinstance(last, QgsVectorLayer)):
        return last
    vectors = [lyr for lyr in _tree_order(project) if isinstance(lyr, QgsVectorLayer) and not is_geoml_output(lyr)]
    for geometry in (QgsWkbTypes.GeometryType.PointGeometry, QgsWkbTypes.GeometryType.PolygonGeometry):
        found = [lyr for lyr in vectors if lyr.geometryType() == geometry]
        if found:
            return found[0]
    return None


class ComboDefaults:
    """Keeps a QgsMapLayerComboBox on its preselected layer until the user picks one by hand.

    ``pick()`` returns the layer to preselect (or None). It is applied now, when layers are added to the
    project while the combo was not set by hand, and after a new project (which also forgets a hand pick)."""

    def __init__(self, combo, pick, owner=None):
        self.combo, self.pick = combo, pick
        self.by_hand = False
        combo.activated.connect(self._picked)
        project = QgsProject.instance()
        project.layersAdded.connect(self._layers_added)
        project.cleared.connect(self._cleared)
        if owner is not None:  # a dialog deleted before the project: stop listening
            owner.destroyed.connect(self.disconnect)
        self.apply()

    def _picked(self, *_args) -> None:
        self.by_hand = True

    def apply(self) -> None:
        layer = self.pick()
        if layer is not None and layer is not self.combo.currentLayer():
            self.combo.setLayer(layer)
        elif layer is None and self.combo.allowEmptyLayer():
            self.combo.setLayer(None)

    def _layers_added(self, *_args) -> None:
        if not self.by_hand:
            try:
                self.apply()
            except RuntimeError:  # the combo was deleted with its dialog
                self.disconnect()

    def _cleared(self) -> None:
        self.by_hand = False

    def disconnect(self, *_args) -> None:
        project = QgsProject.instance()
        for signal, slot in ((project.layersAdded, self._layers_added), (project.cleared, self._cleared)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass

"""The clicked support points of the few-shot panel, and their markers.

Points are kept in the CRS of the map canvas at the moment they were clicked
(each point remembers it) and transformed to the raster's CRS only when the
model is adapted, so changing the project CRS or the raster never moves them.
"""
from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsVectorLayer,
)
from qgis.gui import QgsVertexMarker
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from ..core.errors import InputError
from ..core.raster.classes import make_styled_classes


@dataclass
class SupportPoint:
    point: QgsPointXY
    crs: QgsCoordinateReferenceSystem
    class_name: str


class SupportPointSet:
    """Classes (in the order they were added, each with a colour) and points."""

    def __init__(self):
        self.classes: list[str] = []
        self.points: list[SupportPoint] = []

    def add_class(self, name: str) -> str:
        name = name.strip()
        if name and name not in self.classes:
            self.classes.append(name)
        return name

    def remove_class(self, name: str) -> None:
        self.classes = [c for c in self.classes if c != name]
        self.points = [p for p in self.points if p.class_name != name]

    def color(self, name: str) -> str:
        """The class's colour on the map (as the few-shot job styles it): by its name where it has a usual one
        (water blue, forest green…), else a palette colour unlike the others and the low-confidence overlay."""
        if name not in self.classes:
            return "#000000"
        return make_styled_classes(self.classes)[self.classes.index(name)].color

    def add(self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem, class_name: str) -> SupportPoint:
        self.add_class(class_name)
        p = SupportPoint(QgsPointXY(point), QgsCoordinateReferenceSystem(crs), class_name)
        self.points.append(p)
        return p

    def undo(self):
        return self.points.pop() if self.points else None

    def nearest(self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem, tolerance: float):
        """Index of the point nearest to ``point`` (in ``crs``) within ``tolerance`` map units, or None."""
        best, best_d = None, tolerance
        for i, p in enumerate(self.points):
            q = self._to(p, crs)
            d = q.distance(point)
            if d <= best_d:
                best, best_d = i, d
        return best

    def remove(self, index: int) -> SupportPoint:
        return self.points.pop(index)

    def counts(self) -> dict:
        return {c: sum(1 for p in self.points if p.class_name == c) for c in self.classes}

    @staticmethod
    def _to(p: SupportPoint, crs: QgsCoordinateReferenceSystem) -> QgsPointXY:
        if p.crs == crs or not crs.isValid() or not p.crs.isValid():
            return QgsPointXY(p.point)
        return QgsCoordinateTransform(p.crs, crs, QgsProject.instance()).transform(p.point)

    def in_crs(self, crs: QgsCoordinateReferenceSystem) -> list[tuple[float, float, str]]:
        """(x, y, class) of every point in ``crs`` (e.g. the raster's): what the core job takes."""
        out = []
        for p in self.points:
            try:
                q = self._to(p, crs)
            except QgsCsException as exc:
                raise InputError(
                    f"A '{p.class_name}' point at ({p.point.x():.6g}, {p.point.y():.6g}) in {p.crs.authid()} cannot be "
                    f"transformed to {crs.authid() or 'the raster CRS'}.", "Remove it (right click) and click again."
                ) from exc
            out.append((q.x(), q.y(), p.class_name))
        return out

    def to_layer(self, crs: QgsCoordinateReferenceSystem, name: str = "few-shot points") -> QgsVectorLayer:
        """A memory point layer with a ``class_name`` field, in ``crs``."""
        layer = QgsVectorLayer(f"Point?crs={crs.authid() or crs.toWkt()}", name, "memory")
        prov = layer.dataProvider()
        prov.addAttributes([QgsField("class_name", QVariant.String)])
        layer.updateFields()
        feats = []
        for x, y, cls in self.in_crs(crs):
            f = QgsFeature(layer.fields())
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
            f.setAttribute("class_name", cls)
            feats.append(f)
        prov.addFeatures(feats)
        layer.updateExtents()
        return layer

    def save(self, path: str, crs: QgsCoordinateReferenceSystem, name: str = "few-shot points") -> QgsVectorLayer:
        """Write the points to the GeoPackage ``path`` (replacing it) and return it opened as a layer."""
        from qgis.core import QgsVectorFileWriter

        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = "points"
        err = QgsVectorFileWriter.writeAsVectorFormatV3(self.to_layer(crs, name), path,
                                                        QgsProject.instance().transformContext(), options)
        if err[0] != QgsVectorFileWriter.WriterError.NoError:
            raise InputError(f"The points could not be saved to '{path}': {err[1] or err[0]}.",
                             "Choose another file or folder.")
        layer = QgsVectorLayer(f"{path}|layername=points", name, "ogr")
        if not layer.isValid():
            raise InputError(f"QGIS cannot open the saved points '{path}'.")
        return layer


class MarkerSet:
    """Canvas markers of the support points (two per point: a white halo and the class colour)."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.markers: list = []

    def rebuild(self, points: SupportPointSet) -> None:
        self.clear()
        crs = self.canvas.mapSettings().destinationCrs()
        for p in points.points:
            try:
                centre = points._to(p, crs)
            except QgsCsException:
                continue  # not representable in the current map CRS
            # a white ring under a ring in the class colour: visible on any background
            for color, size, width in (("#ffffff", 16, 6), (points.color(p.class_name), 14, 3)):
                m = QgsVertexMarker(self.canvas)
                m.setCenter(centre)
                m.setColor(QColor(color))
                m.setIconType(QgsVertexMarker.IconType.ICON_CIRCLE)
                m.setIconSize(size)
                m.setPenWidth(width)
                m.setToolTip(p.class_name)
                self.markers.append(m)

    def clear(self) -> None:
        for m in self.markers:
            self.canvas.scene().removeItem(m)
        self.markers = []

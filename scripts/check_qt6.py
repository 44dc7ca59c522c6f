#!/usr/bin/env python3
"""Qt6 / QGIS 4 readiness check for GeoML's Python code.

    python scripts/check_qt6.py [paths …]      (default: geoml_plugin/)

Prints one ``file:line:col: message`` per finding, each with the replacement
to use, and exits with status 1 when there is any. Rules:

* ``qt-import``: PyQt5/PyQt6/PySide/sip imported directly instead of through
  ``qgis.PyQt`` (``from qgis.PyQt.QtCore import …``, ``from qgis.PyQt import sip``).
* ``qt-moved``: ``QAction``/``QActionGroup``/``QShortcut``/… imported from
  ``QtWidgets``, or used as ``QtWidgets.QAction`` (they live in ``QtGui`` in Qt6): use
  ``geoml_plugin.qt_compat``.
* ``qt-removed``: classes gone in Qt6 (``QRegExp``, ``QDesktopWidget``, …).
* ``qt-exec``: ``exec_()`` (gone in PyQt6): use ``exec()``.
* ``QVariant.Type.String`` is a ``qt-removed`` finding: PyQt6 has no ``QVariant.Type``;
  ``QVariant.String`` works on QGIS 3 and on QGIS's Qt6 builds (which patch it in as the
  matching ``QMetaType.Type`` value), so unscoped ``QVariant.X`` is not a ``qt-enum`` finding.
* ``qt-enum``: an unscoped enum value such as ``Qt.AlignLeft``,
  ``QgsTask.CanCancel``, ``QMessageBox.Yes``, ``QDialogButtonBox.Ok``,
  ``Qgis.Info``: PyQt6 only knows ``Qt.AlignmentFlag.AlignLeft`` etc.
  Decided by introspection: the chain's class is imported (through
  ``qgis.PyQt``/``qgis.core``/``qgis.gui``) and the member's value is checked
  for being an enum member whose enum type is not the container — which also
  yields the exact scoped spelling. Where Qt cannot be imported, a curated
  table of common members and a rule for the ``Qt`` namespace are used.
"""
from __future__ import annotations

import argparse
import ast
import enum
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
DIRECT_QT = ("PyQt5", "PyQt6", "PySide2", "PySide6", "sip")
MOVED_TO_QTGUI = ("QAction", "QActionGroup", "QShortcut", "QUndoCommand", "QUndoGroup", "QUndoStack",
                  "QFileSystemModel")
REMOVED = {"QRegExp": "QRegularExpression (QtCore)", "QRegExpValidator": "QRegularExpressionValidator (QtGui)",
           "QDesktopWidget": "QScreen (QGuiApplication.screens())", "QGLWidget": "QOpenGLWidget",
           "QSound": "QSoundEffect (QtMultimedia)", "QMatrix": "QTransform"}
SEARCH_MODULES = ("qgis.PyQt.QtCore", "qgis.PyQt.QtGui", "qgis.PyQt.QtWidgets", "qgis.core", "qgis.gui")
COMPAT_FILES = ("qt_compat.py",)  # the one place allowed to import QAction from QtWidgets (as a fallback)

# Qt5 aliases that Qt6 dropped (member → (enum type, Qt6 name)): introspecting Qt5 would suggest the alias itself.
QT6_DROPPED = {"MidButton": ("MouseButton", "MiddleButton")}

# Used only when Qt/QGIS cannot be imported: common unscoped members → scoped spelling.
CURATED = {
    "Qt.AlignLeft": "Qt.AlignmentFlag.AlignLeft", "Qt.AlignRight": "Qt.AlignmentFlag.AlignRight",
    "Qt.AlignCenter": "Qt.AlignmentFlag.AlignCenter", "Qt.AlignTop": "Qt.AlignmentFlag.AlignTop",
    "Qt.AlignBottom": "Qt.AlignmentFlag.AlignBottom", "Qt.AlignVCenter": "Qt.AlignmentFlag.AlignVCenter",
    "Qt.AlignHCenter": "Qt.AlignmentFlag.AlignHCenter", "Qt.Horizontal": "Qt.Orientation.Horizontal",
    "Qt.Vertical": "Qt.Orientation.Vertical", "Qt.Checked": "Qt.CheckState.Checked",
    "Qt.Unchecked": "Qt.CheckState.Unchecked", "Qt.UserRole": "Qt.ItemDataRole.UserRole",
    "Qt.DisplayRole": "Qt.ItemDataRole.DisplayRole", "Qt.LeftButton": "Qt.MouseButton.LeftButton",
    "Qt.RightButton": "Qt.MouseButton.RightButton", "Qt.WaitCursor": "Qt.CursorShape.WaitCursor",
    "Qt.ItemIsEnabled": "Qt.ItemFlag.ItemIsEnabled", "Qt.ItemIsEditable": "Qt.ItemFlag.ItemIsEditable",
    "Qt.RichText": "Qt.TextFormat.RichText", "Qt.Key_Escape": "Qt.Key.Key_Escape",
    "Qt.WindowModal": "Qt.WindowModality.WindowModal", "Qt.QueuedConnection": "Qt.ConnectionType.QueuedConnection",
    "QgsTask.CanCancel": "QgsTask.Flag.CanCancel", "Qgis.Info": "Qgis.MessageLevel.Info",
    "Qgis.Warning": "Qgis.MessageLevel.Warning", "Qgis.Critical": "Qgis.MessageLevel.Critical",
    "Qgis.Success": "Qgis.MessageLevel.Success", "QMessageBox.Yes": "QMessageBox.StandardButton.Yes",
    "QMessageBox.No": "QMessageBox.StandardButton.No", "QMessageBox.Ok": "QMessageBox.StandardButton.Ok",
    "QMessageBox.Cancel": "QMessageBox.StandardButton.Cancel",
    "QDialogButtonBox.Ok": "QDialogButtonBox.StandardButton.Ok",
    "QDialogButtonBox.Cancel": "QDialogButtonBox.StandardButton.Cancel",
    "QDialogButtonBox.Close": "QDialogButtonBox.StandardButton.Close",
    "QDialog.Accepted": "QDialog.DialogCode.Accepted", "QDialog.Rejected": "QDialog.DialogCode.Rejected",
    "QSizePolicy.Expanding": "QSizePolicy.Policy.Expanding", "QSizePolicy.Fixed": "QSizePolicy.Policy.Fixed",
    "QFrame.HLine": "QFrame.Shape.HLine", "QHeaderView.Stretch": "QHeaderView.ResizeMode.Stretch",
    "QAbstractItemView.NoEditTriggers": "QAbstractItemView.EditTrigger.NoEditTriggers",
    "QFileDialog.ShowDirsOnly": "QFileDialog.Option.ShowDirsOnly", "QLineEdit.Password": "QLineEdit.EchoMode.Password",
    "QPainter.Antialiasing": "QPainter.RenderHint.Antialiasing", "QImage.Format_ARGB32": "QImage.Format.Format_ARGB32",
    "QProcess.MergedChannels": "QProcess.ProcessChannelMode.MergedChannels",
    "QgsMapLayerProxyModel.RasterLayer": "QgsMapLayerProxyModel.Filter.RasterLayer",
    "QgsMapLayerProxyModel.VectorLayer": "QgsMapLayerProxyModel.Filter.VectorLayer",
    "QgsFileWidget.SaveFile": "QgsFileWidget.StorageMode.SaveFile",
    "QgsFileWidget.GetDirectory": "QgsFileWidget.StorageMode.GetDirectory",
    "QgsProcessingParameterNumber.Integer": "QgsProcessingParameterNumber.Type.Integer",
    "QgsProcessingParameterNumber.Double": "QgsProcessingParameterNumber.Type.Double",
    "QgsProcessingParameterDefinition.FlagAdvanced": "QgsProcessingParameterDefinition.Flag.FlagAdvanced",
    "QgsProcessingParameterFile.File": "QgsProcessingParameterFile.Behavior.File",
    "QgsProcessingParameterFile.Folder": "QgsProcessingParameterFile.Behavior.Folder",
    "QgsProcessing.TypeRaster": "QgsProcessing.SourceType.TypeRaster",
    "QgsProcessing.TypeVectorPoint": "QgsProcessing.SourceType.TypeVectorPoint",
    "QgsWkbTypes.PointGeometry": "QgsWkbTypes.GeometryType.PointGeometry",
    "QgsWkbTypes.PolygonGeometry": "QgsWkbTypes.GeometryType.PolygonGeometry",
}
# Enum *types* of the Qt namespace: ``Qt.<one of these>`` is fine, any other ``Qt.Xxx`` is a value.
QT_ENUM_TYPES = {
    "AlignmentFlag", "Alignment", "Orientation", "Orientations", "CheckState", "ItemDataRole", "ItemFlag", "ItemFlags",
    "MouseButton", "MouseButtons", "Key", "KeyboardModifier", "KeyboardModifiers", "WindowType", "WindowFlags",
    "WindowState", "WindowStates", "WindowModality", "CursorShape", "PenStyle", "PenCapStyle", "PenJoinStyle",
    "BrushStyle", "GlobalColor", "TextFormat", "TextInteractionFlag", "TextInteractionFlags", "ScrollBarPolicy",
    "SortOrder", "CaseSensitivity", "MatchFlag", "MatchFlags", "FocusPolicy", "FocusReason", "ContextMenuPolicy",
    "DockWidgetArea", "DockWidgetAreas", "ToolBarArea", "ToolButtonStyle", "TransformationMode", "AspectRatioMode",
    "ConnectionType", "WidgetAttribute", "ApplicationAttribute", "LayoutDirection", "DateFormat", "TimeSpec",
    "TextElideMode", "FillRule", "SizeMode", "DropAction", "DropActions", "EventPriority", "InputMethodQuery",
    "ItemSelectionMode", "ShortcutContext", "TextFlag", "ArrowType", "Corner", "Edge", "ImageConversionFlag",
}


@dataclass
class Finding:
    path: str
    line: int
    col: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: [{self.rule}] {self.message}"


def _is_enum_value(v) -> bool:
    return isinstance(v, enum.Enum) or type(type(v)).__name__ == "enumtype"


def _chain(node) -> Optional[list]:
    """``a.b.c`` → ['a', 'b', 'c']; None for anything that is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


class Resolver:
    """Resolves dotted names of a file to Qt/QGIS objects, through its imports."""

    def __init__(self, introspect: bool = True):
        self.introspect = introspect
        self._global: dict = {}
        self.available = False
        if introspect:
            for mod in SEARCH_MODULES:
                try:
                    m = importlib.import_module(mod)
                except Exception:
                    continue
                self.available = True
                for name in dir(m):
                    if name.startswith("Q") and name not in self._global:
                        self._global[name] = getattr(m, name)

    def scope(self, tree: ast.AST) -> dict:
        names: dict = {}
        if not self.available:
            return names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qgis":
                try:
                    mod = importlib.import_module(node.module)
                except Exception:
                    continue
                for a in node.names:
                    obj = getattr(mod, a.name, None)
                    if obj is None:
                        try:
                            obj = importlib.import_module(f"{node.module}.{a.name}")
                        except Exception:
                            continue
                    names[a.asname or a.name] = obj
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "qgis" and a.asname:
                        try:
                            names[a.asname] = importlib.import_module(a.name)
                        except Exception:
                            pass
        return names

    def resolve(self, parts: list, scope: dict):
        obj = scope.get(parts[0])
        if obj is None and parts[0].startswith("Q"):
            obj = self._global.get(parts[0])
        if obj is None:
            return None
        for p in parts[1:]:
            obj = getattr(obj, p, None)
            if obj is None:
                return None
        return obj


def _enum_finding(parts: list, resolver: Resolver, scope: dict) -> Optional[str]:
    """The scoped spelling for ``parts`` when it is an unscoped enum value, else None."""
    dotted = ".".join(parts)
    if parts[-1] in QT6_DROPPED:
        etype, new = QT6_DROPPED[parts[-1]]
        owner = ".".join(parts[:-1])
        if parts[-2] == etype:
            return f"{dotted} does not exist in Qt6: use {owner}.{new}"
        if parts[-2] == "Qt":
            return f"unscoped enum {dotted}: use {owner}.{etype}.{new} ({parts[-1]} does not exist in Qt6)"
    if resolver.available:
        container = resolver.resolve(parts[:-1], scope)
        if container is None or not isinstance(container, type):
            return _fallback(parts)
        try:
            value = getattr(container, parts[-1])
        except Exception:
            return None
        if isinstance(value, type) or not _is_enum_value(value) or type(value) is container:
            return None
        etype = type(value)
        qual = etype.__qualname__
        prefix = ".".join(parts[:-1])
        if "." in qual and qual.split(".")[0] == parts[-2]:
            scoped = f"{prefix}.{qual.split('.', 1)[1]}.{parts[-1]}"
        elif "." in qual:
            scoped = f"{qual}.{parts[-1]}"
        else:
            scoped = f"{qual}.{parts[-1]}" if qual != parts[-2] else f"{prefix}.{parts[-1]}"
        return f"unscoped enum {dotted}: use {scoped}"
    return _fallback(parts)


def _fallback(parts: list) -> Optional[str]:
    key = ".".join(parts[-2:])
    if key in CURATED:
        return f"unscoped enum {'.'.join(parts)}: use {'.'.join(parts[:-2] + [CURATED[key]])}"
    if len(parts) >= 2 and parts[-2] == "Qt" and parts[-1][:1].isupper() and parts[-1] not in QT_ENUM_TYPES:
        return (f"unscoped enum {'.'.join(parts)}: use Qt.<EnumType>.{parts[-1]} "
                "(look up the enum type in the Qt documentation)")
    return None


def check_source(source: str, path: str = "<string>", resolver: Optional[Resolver] = None) -> list:
    resolver = resolver or Resolver()
    tree = ast.parse(source, filename=path)
    scope = resolver.scope(tree)
    name = Path(path).name
    out: list = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = _import_findings(node)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found = _import_from_findings(node, name)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exec_":
            found = [("qt-exec", "exec_() does not exist in PyQt6: use exec()")]
        elif isinstance(node, ast.Attribute):
            found = _attribute_findings(node, name, resolver, scope)
        else:
            found = []
        out += [Finding(path, node.lineno, node.col_offset + 1, rule, message) for rule, message in found]
    return sorted(out, key=lambda f: (f.line, f.col))


def _import_findings(node: ast.Import) -> list:
    """(rule, message) for ``import PyQt5...`` and other direct Qt imports."""
    found = []
    for a in node.names:
        top = a.name.split(".")[0]
        if top in DIRECT_QT:
            found.append(("qt-import", f"direct import of {a.name}: use "
                          f"{'from qgis.PyQt import sip' if top == 'sip' else 'qgis.PyQt' + a.name[len(top):]}"))
    return found


def _import_from_findings(node: ast.ImportFrom, name: str) -> list:
    """(rule, message) for ``from ... import``: direct Qt modules, classes moved to QtGui, removed names."""
    found = []
    top = node.module.split(".")[0]
    if top in DIRECT_QT and node.level == 0:
        repl = "from qgis.PyQt import sip" if top == "sip" else f"from qgis.PyQt{node.module[len(top):]} import …"
        found.append(("qt-import", f"direct import from {node.module}: use {repl}"))
    if node.module == "qgis.PyQt.QtWidgets" and name not in COMPAT_FILES:
        for a in node.names:
            if a.name in MOVED_TO_QTGUI:
                fix = ("from geoml_plugin.qt_compat import QAction (relative: from .qt_compat / "
                       "from ..qt_compat)") if a.name == "QAction" else "add it to geoml_plugin/qt_compat.py"
                found.append(("qt-moved", f"{a.name} moved to QtGui in Qt6: {fix}"))
    for a in node.names:
        if top in ("qgis", *DIRECT_QT) and a.name in REMOVED:
            found.append(("qt-removed", f"{a.name} does not exist in Qt6: use {REMOVED[a.name]}"))
    return found


def _attribute_findings(node: ast.Attribute, name: str, resolver: Resolver, scope) -> list:
    """(rule, message) for an attribute chain: QVariant.Type, QtWidgets classes moved to QtGui, unscoped enums."""
    parts = _chain(node)
    if parts and len(parts) >= 3 and parts[-3:-1] == ["QVariant", "Type"]:
        return [("qt-removed", f"QVariant.Type does not exist in PyQt6: use QVariant.{parts[-1]} "
                 "(QGIS's Qt6 builds patch it in)")]
    if (parts and len(parts) >= 2 and parts[-2] == "QtWidgets" and parts[-1] in MOVED_TO_QTGUI
            and name not in COMPAT_FILES):
        return [("qt-moved", f"{parts[-1]} moved to QtGui in Qt6: "
                 + ("from geoml_plugin.qt_compat import QAction" if parts[-1] == "QAction"
                    else "add it to geoml_plugin/qt_compat.py"))]
    if parts and len(parts) >= 2 and parts[-2] == "QVariant":
        return []  # QVariant.Int etc.: the spelling that works on QGIS 3 and (patched in by QGIS) on Qt6
    if parts and len(parts) >= 2 and (parts[-2][:1] == "Q" or parts[-1] in QT6_DROPPED) and parts[-1][:1].isupper():
        msg = _enum_finding(parts, resolver, scope)
        if msg:
            return [("qt-enum", msg)]
    return []


def iter_files(paths) -> list:
    files = []
    for p in paths:
        p = Path(p)
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return [f for f in files if "__pycache__" not in f.parts]


def check_paths(paths, introspect: bool = True) -> list:
    resolver = Resolver(introspect)
    out = []
    for f in iter_files(paths):
        try:
            rel = str(f.resolve().relative_to(ROOT))
        except ValueError:
            rel = str(f)
        out += check_source(f.read_text(encoding="utf-8"), rel, resolver)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT / "geoml_plugin")])
    ap.add_argument("--no-introspection", action="store_true", help="use only the curated table (no Qt import)")
    args = ap.parse_args(argv)
    findings = check_paths(args.paths, introspect=not args.no_introspection)
    for f in findings:
        print(f)
    print(f"{len(findings)} Qt6 readiness problem(s) in {len(iter_files(args.paths))} file(s).", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

"""QGIS 4 / Qt6 readiness: Qt only through qgis.PyQt, scoped enums, QAction via qt_compat.

The checker is ``scripts/check_qt6.py``; these tests run it on the plugin and
show on bad snippets that it finds what it must (so a pass means something).
"""
import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_qt6", ROOT / "scripts" / "check_qt6.py")
check_qt6 = importlib.util.module_from_spec(spec)
sys.modules["check_qt6"] = check_qt6
spec.loader.exec_module(check_qt6)

BAD = """\
import PyQt5.QtCore
from PyQt5.QtWidgets import QDialog
from qgis.PyQt.QtWidgets import QAction, QMessageBox, QDialogButtonBox
from qgis.PyQt.QtCore import Qt, QRegExp
from qgis.PyQt import QtCore
from qgis.core import QgsTask, Qgis, QgsProcessingParameterRasterDestination, QgsField

x = Qt.AlignLeft | Qt.AlignmentFlag.AlignTop
t = QgsTask("x", QgsTask.CanCancel)
b = QMessageBox.Yes
o = QDialogButtonBox.Ok
lvl = Qgis.Info
f = QgsProcessingParameterRasterDestination.FlagAdvanced
c = QtCore.Qt.Horizontal
d.exec_()
fld = QgsField("name", QVariant.Type.String)
from qgis.PyQt import QtWidgets
act = QtWidgets.QAction("x", None)
mid = Qt.MidButton
mid2 = Qt.MouseButton.MidButton
"""

GOOD = """\
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QDialogButtonBox, QMessageBox
from qgis.core import Qgis, QgsTask
from geoml_plugin.qt_compat import QAction

x = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
t = QgsTask("x", QgsTask.Flag.CanCancel)
b = QMessageBox.StandardButton.Yes
o = QDialogButtonBox.StandardButton.Ok
lvl = Qgis.MessageLevel.Info
d.exec()
QMessageBox.warning(None, "t", "m")
flags = QgsTask.Flag
from qgis.PyQt.QtCore import QVariant
fld = QgsField("name", QVariant.String)
"""

EXPECTED = [
    (1, "qt-import", "direct import of PyQt5.QtCore: use qgis.PyQt.QtCore"),
    (2, "qt-import", "direct import from PyQt5.QtWidgets: use from qgis.PyQt.QtWidgets import …"),
    (3, "qt-moved", "QAction moved to QtGui in Qt6: from geoml_plugin.qt_compat import QAction"),
    (4, "qt-removed", "QRegExp does not exist in Qt6: use QRegularExpression"),
    (8, "qt-enum", "unscoped enum Qt.AlignLeft: use Qt.AlignmentFlag.AlignLeft"),
    (9, "qt-enum", "unscoped enum QgsTask.CanCancel: use QgsTask.Flag.CanCancel"),
    (10, "qt-enum", "unscoped enum QMessageBox.Yes: use QMessageBox.StandardButton.Yes"),
    (11, "qt-enum", "unscoped enum QDialogButtonBox.Ok: use QDialogButtonBox.StandardButton.Ok"),
    (12, "qt-enum", "unscoped enum Qgis.Info: use Qgis.MessageLevel.Info"),
    (14, "qt-enum", "unscoped enum QtCore.Qt.Horizontal: use QtCore.Qt.Orientation.Horizontal"),
    (15, "qt-exec", "exec_() does not exist in PyQt6: use exec()"),
    # PyQt6 has no QVariant.Type; QGIS's Qt6 builds patch QVariant.String etc. back in (as QMetaType.Type)
    (16, "qt-removed", "QVariant.Type does not exist in PyQt6: use QVariant.String"),
    (18, "qt-moved", "QAction moved to QtGui in Qt6"),
    # Qt6 has only MiddleButton (MidButton was a Qt5 alias of it)
    (19, "qt-enum", "unscoped enum Qt.MidButton: use Qt.MouseButton.MiddleButton"),
    (20, "qt-enum", "Qt.MouseButton.MidButton does not exist in Qt6: use Qt.MouseButton.MiddleButton"),
]


def _found(findings):
    return [(f.line, f.rule, f.message) for f in findings]


@pytest.mark.parametrize("introspect", [True, False], ids=["introspection", "curated-table"])
def test_checker_finds_qt5_only_code(introspect):
    found = _found(check_qt6.check_source(BAD, "bad.py", check_qt6.Resolver(introspect)))
    for line, rule, text in EXPECTED:
        assert any(f[0] == line and f[1] == rule and f[2].startswith(text) for f in found), (line, text, found)
    if introspect:  # only introspection knows the enum inherited from QgsProcessingParameterDefinition
        assert (13, "qt-enum", "unscoped enum QgsProcessingParameterRasterDestination.FlagAdvanced: use "
                "QgsProcessingParameterDefinition.Flag.FlagAdvanced") in found


@pytest.mark.parametrize("introspect", [True, False], ids=["introspection", "curated-table"])
def test_checker_accepts_qt6_ready_code(introspect):
    assert check_qt6.check_source(GOOD, "good.py", check_qt6.Resolver(introspect)) == []


def test_finding_names_file_line_and_replacement(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from qgis.PyQt.QtCore import Qt\nx = Qt.AlignLeft\n")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_qt6.py"), str(bad)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1
    assert f"{bad}:2:5: [qt-enum] unscoped enum Qt.AlignLeft: use Qt.AlignmentFlag.AlignLeft" in res.stdout


def test_plugin_code_is_qt6_ready():
    findings = check_qt6.check_paths([ROOT / "geoml_plugin"])
    assert not findings, "\n".join(map(str, findings))


def test_metadata_declares_qgis4_without_supports_qt6():
    cp = configparser.ConfigParser()
    cp.read(ROOT / "metadata.txt", encoding="utf-8")
    general = cp["general"]
    assert general["qgisMaximumVersion"] == "4.99"
    assert "supportsQt6" not in general


def test_qaction_comes_from_qt_compat():
    from geoml_plugin.qt_compat import QAction

    assert QAction.__name__ == "QAction" and QAction.__module__.split(".")[-1] in ("QtWidgets", "QtGui")

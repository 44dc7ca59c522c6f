"""core/ must import with qgis and Qt unavailable (it runs under plain Python)."""
import subprocess
import sys
from pathlib import Path

import geoml_plugin.core as core_pkg

CORE = Path(core_pkg.__file__).parent
ROOT = CORE.parent.parent

BLOCKER = r"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"core imported {name}")
sys.meta_path.insert(0, Block())
import geoml_plugin.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "geoml_plugin.core.")]
for n in names:
    importlib.import_module(n)
leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
assert not leaked, leaked
print(len(names), "modules")
"""


def test_every_core_module_imports_without_qgis_or_qt():
    res = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[0]) >= 10


def test_no_qgis_or_qt_import_statement_in_core_sources():
    bad = []
    for f in CORE.rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            s = line.strip()
            if s.startswith(("import ", "from ")) and s.split()[1].split(".")[0] in ("qgis", "PyQt5", "PyQt6"):
                bad.append(f"{f.name}:{i}: {s}")
    assert not bad, bad

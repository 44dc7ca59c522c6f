"""ruff (pyproject.toml settings) finds nothing in the plugin, tests, scripts and benchmarks; kept complexity
exceptions say why."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff not installed")
    res = subprocess.run([exe, "check", "geoml_plugin", "tests", "scripts", "bench"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:]


def test_complexity_exceptions_give_a_reason():
    """Every function kept over the complexity limits (C90, PLR0912, PLR0915) says why on its noqa comment."""
    rules = ("C901", "PLR0912", "PLR0915")
    bare = []
    for top in ("geoml_plugin", "tests", "scripts", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf8").splitlines(), 1):
                _, sep, comment = line.partition("# noqa:")
                if sep and any(r in comment for r in rules) and "reason:" not in comment:
                    bare.append(f"{path.relative_to(ROOT)}:{n}")
    assert not bare, "complexity exceptions without '# noqa: ...  reason: ...': " + ", ".join(bare)

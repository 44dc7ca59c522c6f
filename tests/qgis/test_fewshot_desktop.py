"""The few-shot panel in a real QGIS desktop (Xvfb): adapt & classify must not crash QGIS.

Regression test: PyTorch's lazy ``import triton`` (first optimizer) crashed QGIS
desktop; see geoml_plugin/deps/torch_preload.py.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None, reason="needs qgis + xvfb")
def test_panel_adapts_and_classifies_in_qgis_desktop(scene, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from demo_steps.fewshot import _support_layer
    finally:
        sys.path.pop(0)
    from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain

    demo = tmp_path / "demo"
    (demo / "fewshot_new_region").mkdir(parents=True)
    for f in Path(scene.image).parent.iterdir():  # the scene stands in for the new region
        shutil.copy(f, demo / "fewshot_new_region" / f.name)
    run_metatrain(MetaTrainConfig([scene.image], scene.points, "class_name", str(demo / "fewshot_meta.safetensors"),
                                  ways=3, shots=2, query=3, patch_size=16, iterations=10, device="cpu"))
    _support_layer(scene, str(demo / "fewshot_support.gpkg"))
    out = tmp_path / "shot.png"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "fewshot_screenshot.py"), "--demo", str(demo),
                          "--out", str(out), "--width", "600"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Classified 128×128 px" in res.stdout
    assert out.stat().st_size > 10_000

"""Dependency detection and diagnostics (geoml_plugin/deps/detect.py, deps/torch_probe.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from geoml_plugin.deps import detect as deps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_cache():
    deps.invalidate()
    yield
    deps.invalidate()


BLOCK_TORCH = r"""
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'onnxruntime'):  # onnxruntime too: nothing installed
            raise ImportError('No module named ' + name)
sys.meta_path.insert(0, NoTorch())
from geoml_plugin.deps import detect as deps
st = deps.dependency_status()
print(json.dumps({"method": st.method, "problems": deps.problems(st), "badge": deps.gpu_summary(),
                  "quick": deps.quick_problem(), "report": deps.diagnostics(st)}))
print('torch' in sys.modules)
"""


def test_torch_made_unimportable_is_reported_without_importing_it():
    res = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out, loaded = res.stdout.strip().splitlines()[-2:]
    data = json.loads(out)
    assert loaded == "False"
    assert data["method"] == "quick"  # answered without a subprocess or an import
    assert any("PyTorch (torch) cannot be found: ImportError: No module named torch" in p for p in data["problems"])
    assert data["badge"] == deps.NOT_INSTALLED_BADGE and "Install dependencies" in data["badge"]
    assert "PyTorch (torch)" in data["quick"]
    report = data["report"]
    assert "torch        NOT INSTALLED" in report and "torchvision  NOT INSTALLED" in report
    assert "safetensors  " in report and "Status: NOT READY" in report
    assert "Fix: Raster ▸ GeoML ▸ Install dependencies…" in report
    assert f"Python {sys.version.split()[0]}" in report and "GeoML package folder:" in report


def test_missing_torch_via_sys_modules_marker(monkeypatch):
    """``sys.modules[name] = None`` (what a failed optional import leaves) counts as missing."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not the apply-only state either
    st = deps.dependency_status()
    assert st.torch_missing and st.method == "quick"
    assert deps.problems(st)[0] == "PyTorch (torch) is not installed in this QGIS."
    assert deps.gpu_summary(block=False) == deps.NOT_INSTALLED_BADGE


def _fake_torchvision(folder: Path, version: str, requires: str, error: str) -> Path:
    pkg = folder / "torchvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise RuntimeError({error!r})\n")
    info = folder / f"torchvision-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\n"
                                   f"Requires-Dist: {requires}\n")
    return folder


def test_mismatched_torchvision_is_detected_and_explained(tmp_path):
    """A torchvision from another build than torch fails to import: say which pair and what to do."""
    import torch

    fake = _fake_torchvision(tmp_path, "0.99.0+cu118", "torch==1.0.0", "operator torchvision::nms does not exist")
    st = deps.probe_subprocess(extra_paths=[fake])
    assert st.method == "subprocess" and st.probe_error is None
    tv = st.package("torchvision")
    assert tv.found and not tv.imported and tv.dist_version == "0.99.0+cu118"
    assert tv.origin.startswith(str(fake))
    assert st.package("torch").ok and st.package("torch").version == torch.__version__
    text = deps.problem_text(st)
    assert "torchvision 0.99.0+cu118 cannot be imported: RuntimeError: operator torchvision::nms does not exist" in text
    assert f"torch {torch.__version__}" in text and "torchvision 0.99.0+cu118 (CUDA 11.8)" in text
    assert "install both from the same build" in text
    assert not st.ok
    assert deps.summary_of(st).startswith("PyTorch not usable")
    report = deps.diagnostics(st)
    assert "torchvision  0.99.0+cu118 BROKEN at " + str(fake) in report and "Status: NOT READY" in report


def _ok_pair(torch_cuda, tv_cuda, torch_version="2.5.1", tv_version="0.20.1", tv_requires=()):
    st = deps.DepsStatus(method="subprocess", torch_cuda_build=torch_cuda, torchvision_cuda_build=tv_cuda)
    for name, version, req in (("torch", torch_version, []), ("torchvision", tv_version, list(tv_requires)),
                               ("safetensors", "0.4.5", [])):
        st.packages[name] = deps.PackageState(name, found=True, imported=True, version=version, dist_version=version,
                                              location=f"/x/{name}/__init__.py", origin=f"/x/{name}/__init__.py",
                                              requires=req)
    return st


def test_cpu_torch_with_cuda_torchvision_is_a_problem():
    st = _ok_pair(None, "12.1", "2.5.1+cpu", "0.20.1+cu121")
    text = deps.problem_text(st)
    assert "torch 2.5.1+cpu (CPU-only) and torchvision 0.20.1+cu121 (CUDA 12.1)" in text
    assert "different CUDA versions" in text
    assert _ok_pair("12.1", "12.1").ok and _ok_pair(None, None).ok
    assert deps.build_from_version("2.5.1+cu124") == "CUDA 12.4"
    assert deps.build_from_version("2.5.1+cpu") == "CPU-only"
    assert deps.build_from_version("0.28.0") == deps.PYPI_BUILD  # no label: CUDA on Linux, CPU elsewhere


def test_torchvision_requirement_on_torch_version_is_checked():
    st = _ok_pair("12.4", "12.4", "2.5.1+cu124", "0.19.0+cu124", ["numpy", "torch (==2.4.0)", "pillow"])
    assert deps.problem_text(st) == "torchvision 0.19.0+cu124 needs torch ==2.4.0, but torch 2.5.1+cu124 is installed."
    ok = _ok_pair("12.4", "12.4", "2.4.0+cu124", "0.19.0+cu124", ["torch (==2.4.0)"])
    assert ok.ok


def test_compiled_ops_failure_is_a_mismatch():
    st = _ok_pair("12.4", "12.4")
    st.ops_error = "RuntimeError: Couldn't load custom C++ ops"
    assert "compiled operators do not load" in deps.problem_text(st)


def test_badge_texts():
    st = _ok_pair("12.4", "12.4")
    st.cuda_available = True
    st.gpus = [{"name": "NVIDIA RTX A5000", "memory_gb": 23.6, "capability": "8.6"}]
    assert deps.summary_of(st) == "GPU: NVIDIA RTX A5000 (24 GB)"
    st.gpus.append({"name": "NVIDIA RTX A5000", "memory_gb": 23.6, "capability": "8.6"})
    assert deps.summary_of(st) == "GPU: NVIDIA RTX A5000 (24 GB) + 1 more"
    st.cuda_available, st.gpus = False, []
    assert deps.summary_of(st).startswith("CPU only — jobs will be slower")
    assert deps.summary_of(deps.DepsStatus(method="quick")) == deps.NOT_INSTALLED_BADGE


def test_python_crash_while_importing_is_reported(tmp_path):
    """A torch whose import kills Python (a segfault in a bad build) must not take QGIS down."""
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nos._exit(139)\n")
    st = deps.probe_subprocess(extra_paths=[tmp_path])
    assert st.probe_error.startswith("Python stopped while importing torch (exit code 139)")
    assert not st.ok and deps.problems(st)[0] == st.probe_error


def test_diagnostics_with_torch_present():
    import torch

    st = deps.probe_subprocess()
    assert st.probe_error is None and st.ok, deps.problems(st)
    assert st.package("torch").location == torch.__file__
    assert st.torch_cuda_build == torch.version.cuda
    assert st.cuda_available == torch.cuda.is_available()
    report = deps.diagnostics(st)
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
    assert f"torch        {torch.__version__}  [{build} build]  from {torch.__file__}" in report
    assert f"CUDA available: {'yes' if torch.cuda.is_available() else 'no'}" in report
    assert "imported in a separate Python process" in report
    assert "Status: OK — GeoML can run jobs." in report
    assert "QGIS 3." in report and "Python used for pip and checks: " + sys.executable in report
    if torch.cuda.is_available():
        assert deps.summary_of(st).startswith(f"GPU: {torch.cuda.get_device_name(0)} (")
    else:
        assert deps.summary_of(st) == deps.CPU_BADGE


def test_private_folder_goes_first_on_sys_path_and_pending_install_is_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = tmp_path / "py3x"
    assert deps.activate_packages_dir(target) is False and str(target) not in sys.path
    new = deps.staging_dir(target)
    (new / "newpkg").mkdir(parents=True)
    (new / deps.COMPLETE_MARK).write_text("complete\n")
    target.mkdir()
    (target / "oldpkg").mkdir()
    assert deps.activate_packages_dir(target) is True
    assert sys.path[0] == str(target)
    assert (target / "newpkg").is_dir() and not (target / "oldpkg").exists() and not new.exists()
    monkeypatch.setenv(deps.ENV_DIR, str(target))
    assert deps.packages_dir() == target and deps.is_on_sys_path(target)

"""The installer, run for real with pip on wheels built here (no network)."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from geoml_plugin.core.errors import JobCancelled
from geoml_plugin.core.progress import Feedback
from geoml_plugin.deps import detect as deps
from geoml_plugin.deps import installer
from geoml_plugin.deps.gpu_driver import NvidiaGpu, NvidiaInfo, detect_nvidia
from tests.deps.wheels import ISOLATED_PIP_ENV, HangingServer, local_wheels, make_wheel


@pytest.fixture(autouse=True)
def fresh_cache():
    deps.invalidate()
    yield
    deps.invalidate()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return local_wheels(tmp_path_factory.mktemp("wheels"))


def _plan(target, source, packages):
    plan = installer.make_plan(installer.CPU_VARIANT, target=target, source=str(source), packages=packages)
    plan.extra_env.update(ISOLATED_PIP_ENV)
    return plan


def _nvidia(cuda, driver, cap=(8, 6), name="NVIDIA GeForce RTX 3060"):
    return NvidiaInfo(smi_path="/usr/bin/nvidia-smi", driver_version=driver, cuda_version=cuda,
                      gpus=[NvidiaGpu(name, 12.0, cap)])


@pytest.mark.parametrize("nvidia, system, key", [
    (NvidiaInfo(), "Linux", "cpu"),
    (NvidiaInfo(), "Windows", "cpu"),
    (_nvidia((12, 4), "550.54.14"), "Linux", "cu126"),  # minor-version compatibility within CUDA 12
    (_nvidia((12, 8), "570.86.10"), "Windows", "cu128"),
    (_nvidia((13, 0), "580.65.06"), "Linux", "cu130"),
    (_nvidia((13, 0), "580.65.06", cap=(6, 1), name="GeForce GTX 1080"), "Linux", "cu126"),  # Pascal: no CUDA 13
    (_nvidia((12, 8), "570.86.10", cap=(12, 0), name="RTX 5090"), "Linux", "cu128"),  # Blackwell needs ≥ 12.8
    (_nvidia((11, 4), "470.82.01"), "Linux", "cu118"),
    (_nvidia((10, 2), "440.33"), "Linux", "cpu"),  # driver too old for any CUDA build
    (_nvidia(None, "560.35.03"), "Linux", "cu126"),  # CUDA version estimated from the driver
    (_nvidia((12, 4), "550.54.14"), "Darwin", "pypi"),
])
def test_build_choice_follows_driver_and_os(nvidia, system, key):
    variant, reason = installer.choose_variant(nvidia, system)
    assert variant.key == key, reason
    if key == "cpu" and nvidia.present:
        assert "too old" in reason and "Update the NVIDIA driver" in reason


def test_nvidia_smi_output_is_read(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   'case "$1" in\n'
                   "  --query-gpu=*) echo 'NVIDIA GeForce RTX 3060, 12288, 550.54.14, 8.6' ;;\n"
                   "  *) echo '| NVIDIA-SMI 550.54.14    Driver Version: 550.54.14    CUDA Version: 12.4 |' ;;\n"
                   "esac\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info = detect_nvidia(refresh=True)
    try:
        assert info.present and info.smi_path == str(smi)
        assert info.driver_version == "550.54.14" and info.cuda_version == (12, 4)
        assert info.gpus[0].name == "NVIDIA GeForce RTX 3060" and info.gpus[0].memory_gb == 12.0
        assert info.gpus[0].capability == (8, 6)
        assert installer.choose_variant(info, "Linux")[0].key == "cu126"
        assert "NVIDIA driver 550.54.14 (supports CUDA up to 12.4)" in info.describe()
    finally:
        monkeypatch.undo()
        detect_nvidia(refresh=True)


def test_default_plan_commands(tmp_path):
    plan = installer.make_plan(installer.CPU_VARIANT, target=tmp_path / "py3x")
    torch_cmd, st_cmd = (plan.command(s) for s in plan.steps)
    assert torch_cmd[:4] == [plan.python, "-m", "pip", "install"] or torch_cmd[1].endswith("pip")
    for cmd in (torch_cmd, st_cmd):
        assert cmd[cmd.index("--target") + 1] == str(tmp_path / "py3x.new")
        assert "--upgrade" in cmd and "--constraint" in cmd
        assert "--user" not in cmd and "--prefix" not in cmd and "--break-system-packages" not in cmd
    assert torch_cmd[-2:] == ["torch", "torchvision"]
    assert torch_cmd[torch_cmd.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert st_cmd[-1] == "safetensors" and "--index-url" not in st_cmd  # from PyPI / the user's pip config
    text = plan.describe()
    assert str(tmp_path / "py3x") in text and "https://download.pytorch.org/whl/cpu" in text
    assert "No administrator rights" in text and "numpy" in text
    assert installer.numpy_constraint().startswith("numpy<")
    cu = installer.make_plan(installer.variant_by_key("cu126"), target=tmp_path / "x")
    assert "https://download.pytorch.org/whl/cu126" in cu.command(cu.steps[0])
    pinned = installer.make_plan(installer.CPU_VARIANT, target=tmp_path / "x", packages=["torch==2.5.1", "geomltest-a"])
    assert pinned.steps[0].packages == ["torch==2.5.1", "geomltest-a"]
    assert pinned.primary == ["torch", "geomltest-a"] and pinned.verify_names == ["torch", "geomltest_a"]


def _outside(folder: Path, wheel: Path) -> Path:
    """Install a wheel into a folder standing for QGIS's own site-packages."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(folder), str(wheel)], check=True, env={**os.environ, **ISOLATED_PIP_ENV})
    return folder


def test_install_local_wheel_for_real(tmp_path, wheels, monkeypatch):
    """pip installs into the private folder; numpy and satisfied dependencies are not duplicated."""
    qgis_site = _outside(tmp_path / "qgis_site", make_wheel(tmp_path / "w2", "geomltest-b", "2.5",
                                                             {"geomltest_b/__init__.py": "B = 25\n"}))
    monkeypatch.setattr(sys, "path", [*sys.path, str(qgis_site)])
    target = tmp_path / "profile" / "python" / "geoml_packages" / "py3x"
    lines = []
    res = installer.run_plan(_plan(target, wheels, ["geomltest-a"]), Feedback(on_log=lines.append))
    assert res.target == target and res.restart is None and not res.pending
    assert (target / "geomltest_a" / "__init__.py").is_file()
    assert not (target / "numpy").exists(), "QGIS's numpy must never be shadowed"
    assert not (target / "geomltest_b").exists(), "QGIS's geomltest-b 2.5 satisfies >=2: not duplicated"
    assert any(r.startswith("numpy 1.0.0 (QGIS has ") for r in res.removed)
    assert "geomltest-b 2.0 (QGIS has 2.5)" in res.removed
    assert not deps.staging_dir(target).exists() and not (target.parent / "tmp").exists()
    assert any("Successfully installed" in ln for ln in lines) and res.log_path.is_file()
    code = (f"import sys; sys.path[:0] = [{str(target)!r}, {str(qgis_site)!r}]; import numpy, geomltest_a, geomltest_b;"
            "print(numpy.__file__, geomltest_a.VALUE, geomltest_b.B)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    import numpy

    assert out == [numpy.__file__, "42", "25"]


def test_dependency_older_than_required_is_kept(tmp_path, wheels, monkeypatch):
    qgis_site = _outside(tmp_path / "qgis_site", make_wheel(tmp_path / "w2", "geomltest-b", "1.5",
                                                             {"geomltest_b/__init__.py": "B = 15\n"}))
    monkeypatch.setattr(sys, "path", [*sys.path, str(qgis_site)])
    target = tmp_path / "py3x"
    res = installer.run_plan(_plan(target, wheels, ["geomltest-a"]))
    assert (target / "geomltest_b").is_dir() and not any(r.startswith("geomltest-b") for r in res.removed)


def test_failed_install_keeps_previous_one(tmp_path, wheels):
    target = tmp_path / "py3x"
    installer.run_plan(_plan(target, wheels, ["geomltest-b"]))
    with pytest.raises(installer.InstallError) as err:
        installer.run_plan(_plan(target, wheels, ["geomltest-does-not-exist"]))
    assert "pip failed" in str(err.value) and "No build of these packages was found" in str(err.value)
    assert (target / "geomltest_b").is_dir() and not deps.staging_dir(target).exists()
    log = (tmp_path / "install-py3x.log").read_text()
    assert "geomltest-does-not-exist" in log


def test_package_that_does_not_import_is_not_installed(tmp_path, wheels):
    target = tmp_path / "py3x"
    installer.run_plan(_plan(target, wheels, ["geomltest-b"]))
    with pytest.raises(installer.InstallError) as err:
        installer.run_plan(_plan(target, wheels, ["geomltest-broken"]))
    assert "installed but do not work" in str(err.value) and "DLL load failed" in str(err.value)
    assert not (target / "geomltest_broken").exists() and (target / "geomltest_b").is_dir()


def test_cancel_stops_pip_and_changes_nothing(tmp_path, wheels):
    target = tmp_path / "py3x"
    installer.run_plan(_plan(target, wheels, ["geomltest-b"]))
    server = HangingServer()
    cancel = threading.Event()
    cancelled_at = []

    def cancel_when_pip_waits():  # like a user pressing Cancel while the download hangs
        deadline = time.monotonic() + 60
        while not server.conns and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_when_pip_waits, daemon=True).start()

    plan = installer.make_plan(installer.CPU_VARIANT, target=target, source=server.url, packages=["geomltest-a"])
    # without a working Cancel, pip gives up after 30 s with an error instead: the test fails, it does not hang
    plan.extra_env.update({**ISOLATED_PIP_ENV, "PIP_DEFAULT_TIMEOUT": "30", "PIP_RETRIES": "0"})
    try:
        with pytest.raises(JobCancelled):
            installer.run_plan(plan, Feedback(is_cancelled=cancel.is_set))
    finally:
        server.close()
    assert time.monotonic() - cancelled_at[0] < 10, "Cancel must stop pip at once, not when pip gives up"
    assert server.conns, "pip never reached the index: the test would not show that Cancel stops it"
    assert (target / "geomltest_b").is_dir() and not (target / "geomltest_a").exists()
    assert not deps.staging_dir(target).exists()


def test_restart_needed_only_for_loaded_packages():
    assert installer.restart_reason(["geomltest_never_loaded"]) is None
    text = installer.restart_reason(["json"])
    assert "already loaded json" in text and "Restart QGIS" in text


def test_remove_packages(tmp_path, wheels, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = tmp_path / "py3x"
    installer.run_plan(_plan(target, wheels, ["geomltest-b"]))
    deps.activate_packages_dir(target)
    assert installer.remove_packages(target) is None
    assert not target.exists() and str(target) not in sys.path


def test_pip_wheel_fallback_runs_without_an_installed_pip():
    from geoml_plugin.deps.interpreter import bundled_pip_wheels

    wheels = bundled_pip_wheels(sys.executable)
    if not wheels:
        pytest.skip("no bundled pip wheel on this machine")
    res = subprocess.run([sys.executable, os.path.join(wheels[0], "pip"), "--version"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("pip ")


def test_interpreter_found_is_this_python():
    from geoml_plugin.deps.interpreter import expected_tag, python_executable

    py = python_executable(refresh=True)
    res = subprocess.run([py, "-c", "import sys, struct; print('%d.%d %d' % (*sys.version_info[:2], "
                                    "struct.calcsize('P') * 8))"], capture_output=True, text=True)
    assert res.stdout.strip() == expected_tag()


def test_a_same_version_python_of_another_installation_is_not_taken(tmp_path, monkeypatch):
    """A pyenv/conda Python of the same major.minor earlier on PATH (embedded Python may even report it as
    sys.executable) has another standard library: probing torch with QGIS's sys.path there fails."""
    import geoml_plugin.deps.interpreter as interp

    other = tmp_path / "other" / "bin" / "python3"
    other.parent.mkdir(parents=True)
    # answers like a real Python 3.x of another installation: its version, and its base prefix if asked
    other.write_text(f"#!/bin/sh\necho '{interp.expected_tag()}'\n"
                     f"case \"$2\" in *base_prefix*) echo '{tmp_path / 'other'}';; esac\n")
    other.chmod(0o755)
    assert not interp._matches(str(other))
    monkeypatch.setattr(interp, "_cache", {})  # this test's finding must not outlive it
    monkeypatch.setattr(interp.sys, "executable", str(other))
    assert interp.python_executable() != str(other)


# -- the apply-only install (issue 23): onnxruntime alone, beside the full install ---------------------------
def test_apply_only_plan_installs_onnxruntime_and_no_torch(tmp_path, monkeypatch):
    monkeypatch.setenv(deps.ENV_DIR, str(tmp_path / "geoml_packages" / "py3x"))
    plan = installer.make_plan(installer.APPLY_ONLY)
    assert plan.apply_only and plan.target == tmp_path / "geoml_packages" / "py3x-onnxruntime"
    assert plan.target == deps.apply_packages_dir() != deps.packages_dir()  # never replaces the full install
    assert len(plan.steps) == 1
    cmd = plan.command(plan.steps[0])
    assert cmd[-1] == "onnxruntime" and plan.steps[0].packages == ["onnxruntime"]
    assert not any(a.startswith("torch") or a == "safetensors" for a in cmd), cmd
    assert "--index-url" not in cmd  # from PyPI / the user's pip configuration, not PyTorch's index
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "geoml_packages" / "py3x-onnxruntime.new")
    assert "--upgrade" in cmd and "--constraint" in cmd and "--user" not in cmd and "--prefix" not in cmd
    assert plan.primary == ["onnxruntime"] and plan.verify_names == ["onnxruntime"]
    text = plan.describe()
    assert "1. onnxruntime" in text and "torch" not in text.split("Python:")[0]
    assert "Download: about 20–60 MB" in text and "need the full install" in text
    full = installer.make_plan(installer.CPU_VARIANT)
    assert full.target == tmp_path / "geoml_packages" / "py3x" and not full.apply_only
    # a folder of wheels (offline) or a mirror: still onnxruntime only
    offline = installer.make_plan(installer.APPLY_ONLY, source=str(tmp_path))
    assert offline.steps[0].packages == ["onnxruntime"] and "--no-index" in offline.command(offline.steps[0])
    assert offline.verify_names == ["onnxruntime"]


APPLY_ONLY_STATE = r"""
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ImportError('No module named ' + name)
sys.meta_path.insert(0, NoTorch())
# this Python's own site-packages (which has onnxruntime) hidden: only GeoML's folders count
sys.path[:] = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]
from geoml_plugin.deps import detect as deps
deps.activate_packages_dir(sys.argv[1])
st = deps.dependency_status()
print(json.dumps({"apply_only": deps.apply_only(st), "badge": deps.gpu_summary(), "problem": deps.quick_problem(),
                  "report": deps.diagnostics(st)}))
"""


def _state_without_torch(full_target: Path) -> dict:
    import json

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", APPLY_ONLY_STATE, str(full_target)], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_apply_only_install_for_real_keeps_the_full_one_and_says_onnx_models_work(tmp_path, wheels):
    """pip installs onnxruntime (a stand-in wheel) beside the full install, which stays; with PyTorch missing,
    the state, badge, job message and diagnostics then say that ONNX models can be applied and training needs the
    full install."""
    from tests.deps.wheels import make_wheel

    make_wheel(wheels, "onnxruntime", "1.99.0", {"onnxruntime/__init__.py": "__version__ = '1.99.0'\n"})
    full = tmp_path / "geoml_packages" / "py3x"
    installer.run_plan(_plan(full, wheels, ["geomltest-b"]))  # stands for the full install's folder
    before = _state_without_torch(full)
    assert not before["apply_only"] and before["badge"] == deps.NOT_INSTALLED_BADGE
    assert "Status: NOT READY" in before["report"] and "onnxruntime  not installed" in before["report"]

    plan = installer.make_plan(installer.APPLY_ONLY, target=deps.apply_packages_dir(full), source=str(wheels))
    plan.extra_env.update(ISOLATED_PIP_ENV)
    lines = []
    res = installer.run_plan(plan, Feedback(on_log=lines.append))
    assert res.target == tmp_path / "geoml_packages" / "py3x-onnxruntime" and not res.pending
    assert (res.target / "onnxruntime" / "__init__.py").is_file()
    assert (full / "geomltest_b").is_dir(), "the apply-only install must not remove the full one"
    assert any("onnxruntime" in ln and "Successfully installed" in ln for ln in lines)
    assert res.status.package("onnxruntime").ok  # imported in a separate process before the swap

    after = _state_without_torch(full)
    assert after["apply_only"] and after["badge"] == deps.APPLY_ONLY_BADGE
    assert "ONNX models work" in after["badge"] and "training needs PyTorch" in after["badge"]
    assert "PyTorch (torch) cannot be found" in after["problem"] and "full install" in after["problem"]
    assert "onnxruntime  1.99.0 (found, not imported)  at " + str(res.target) in after["report"]
    assert "Status: APPLY-ONLY — ONNX models (.onnx) can be applied with onnxruntime" in after["report"]


def test_apply_only_install_cancel_and_failure_change_nothing(tmp_path, wheels):
    """The same safety as the full install: a failed apply-only install leaves the previous one as it was."""
    target = deps.apply_packages_dir(tmp_path / "py3x")
    empty = tmp_path / "no_wheels"
    empty.mkdir()
    plan = installer.make_plan(installer.APPLY_ONLY, target=target, source=str(empty))
    plan.extra_env.update(ISOLATED_PIP_ENV)
    with pytest.raises(installer.InstallError) as err:
        installer.run_plan(plan)
    assert "while installing onnxruntime" in str(err.value) and "No build of these packages was found" in str(err.value)
    assert not target.exists() and not deps.staging_dir(target).exists()

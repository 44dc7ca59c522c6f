"""Inside QGIS (desktop or qgis_process): loading the plugin makes OpenMP wait passively before any job
imports torch, and QGIS's setting ``geoml/threads`` chooses a job's threads in its worker thread."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT

CODE = r"""
import json, sys, threading
from qgis.core import QgsApplication, QgsSettings
app = QgsApplication([], False); app.initQgis()
SETTING
import geoml_plugin
p = geoml_plugin.classFactory(None); p.initProcessing()
from geoml_plugin.core.device import resolve_device
seen = {}
def job():  # what a QgsTask's run() does first
    resolve_device('cpu')
    import torch
    x = torch.randn(64, 64); (x @ x).sum()
    seen['threads'] = torch.get_num_threads()
t = threading.Thread(target=job); t.start(); t.join()
import os
from geoml_plugin.core.threads import physical_cores
print(json.dumps(dict(seen, wait=os.environ.get('OMP_WAIT_POLICY'), cores=physical_cores())))
"""


def _run(tmp_path, setting: str = "") -> tuple[dict, str]:
    code = CODE.replace("SETTING", f"QgsSettings().setValue('geoml/threads', {setting!r})" if setting else "")
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "OMP_DISPLAY_ENV": "verbose"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def test_plugin_load_makes_openmp_wait_passively_and_the_setting_chooses_threads(tmp_path):
    info, stderr = _run(tmp_path)
    assert info["wait"] == "PASSIVE" and info["threads"] == info["cores"]  # automatic: the physical cores
    m = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)  # GNU libgomp's start-up report (Linux wheels)
    assert m is None or m.group(1) == "0", stderr
    info, _ = _run(tmp_path, "1")
    assert info["threads"] == 1

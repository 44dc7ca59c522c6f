"""Inside QGIS (desktop or qgis_process): loading the plugin makes OpenMP wait passively before any job
imports torch, and QGIS's setting ``geoml/threads`` chooses a job's threads in its worker thread, read
again when a job starts."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT

CODE = r"""
import json, os, sys, threading
from qgis.core import QgsApplication, QgsSettings
app = QgsApplication([], False); app.initQgis()
SETTING
import geoml_plugin
p = geoml_plugin.classFactory(None); p.initProcessing()
from geoml_plugin.core.device import resolve_device
from geoml_plugin.core.threads import physical_cores
seen = {'wait': os.environ.get('OMP_WAIT_POLICY'), 'cores': physical_cores()}
def job(key):  # what a QgsTask's run() does first
    resolve_device('cpu')
    import torch
    x = torch.randn(64, 64); (x @ x).sum()
    seen[key] = torch.get_num_threads()
def in_thread(key):
    t = threading.Thread(target=job, args=(key,)); t.start(); t.join()
in_thread('first')
QgsSettings().setValue('geoml/threads', 1)  # changed while QGIS runs: the next job uses it
from geoml_plugin.tasks import GeoMLTask
task = GeoMLTask('next job', lambda fb: None)
in_thread('next')
print(json.dumps(seen))
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
    assert info["wait"] == "PASSIVE"
    assert info["first"] == info["cores"]  # automatic: torch's default, the physical cores
    assert info["next"] == 1  # the setting, read again when the next job's task is made
    m = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)  # GNU libgomp's start-up report (Linux wheels)
    assert m is None or m.group(1) == "0", stderr
    info, _ = _run(tmp_path, "3")  # set before QGIS starts: the first job already uses it
    assert info["first"] == 3

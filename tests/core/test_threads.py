"""GeoML's CPU thread policy (core/threads.py): OpenMP waits passively, set before torch loads it, and a
user's own choice of threads or waiting wins. The checks that need a fresh OpenMP run in a subprocess."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from geoml_plugin.core import threads
from tests.conftest import ROOT

THREAD_VARS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT", "KMP_LIBRARY", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "GEOML_THREADS", "OMP_DISPLAY_ENV")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """``python -c code`` with none of the thread variables of this process, plus ``env``;
    libgomp prints the settings it started with on stderr (OMP_DISPLAY_ENV=verbose)."""
    e = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    e.update(PYTHONPATH=str(ROOT), OMP_DISPLAY_ENV="verbose", **env)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=str(ROOT),
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res


def spin_count(stderr: str):
    """GNU libgomp's spin count as it read it at start-up (None: another OpenMP runtime)."""
    m = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    return int(m.group(1)) if m else None


# the command line's start (`geoml version` imports torch), then what a job does first (resolve_device)
COMMAND = ("import json\n"
           "from geoml_plugin.cli import main\n"
           "main(['version', '--json'] + ARGS)\n"
           "from geoml_plugin.core.device import resolve_device\n"
           "resolve_device('cpu')\n"
           "from geoml_plugin.core.threads import describe\n"
           "print(json.dumps(describe()))\n")


def command_line(*args, **env) -> tuple[dict, str]:
    """The thread facts of a job started by ``geoml … args`` with ``env``, and libgomp's start-up report."""
    res = run_python(COMMAND.replace("ARGS", repr(list(args))), **env)
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def test_command_line_makes_openmp_wait_passively_before_torch_loads():
    res = run_python("from geoml_plugin.cli import main; main(['diagnostics', '--json'])")
    info, stderr = json.loads(res.stdout)["threads"], res.stderr  # `geoml diagnostics` reports it
    assert info["omp_wait_policy"] == "PASSIVE" and info["wait_set_by_geoml"]
    assert not info["torch_loaded_before_geoml"]
    assert info["torch_threads"] == threads.physical_cores() and info["threads_chosen"] is None
    if info["openmp"] == "GNU libgomp":  # the runtime itself read it: no spinning before a thread sleeps
        assert spin_count(stderr) == 0, stderr
    # without GeoML's entry point the same torch spins (the behaviour the policy replaces)
    bare = run_python("import torch; torch.ones(2) + 1")
    if spin_count(bare.stderr) is not None:
        assert spin_count(bare.stderr) > 0


def test_a_users_own_wait_policy_and_omp_threads_are_kept():
    info, stderr = command_line(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert info["omp_wait_policy"] == "ACTIVE" and not info["wait_set_by_geoml"]
    assert info["torch_threads"] == 1 and info["threads_chosen"] is None
    assert info["threads_source"] == "OMP_NUM_THREADS"
    if info["openmp"] == "GNU libgomp":
        assert spin_count(stderr) > 10**9  # ACTIVE: spin (almost) for ever, as the user asked
    info, stderr = command_line(GOMP_SPINCOUNT="1000")
    assert not info["wait_set_by_geoml"] and info["omp_wait_policy"].startswith("(OpenMP default")
    if info["openmp"] == "GNU libgomp":
        assert spin_count(stderr) == 1000


def test_geoml_threads_and_the_threads_option_choose_torch_threads():
    info, _ = command_line(GEOML_THREADS="1")
    assert info["torch_threads"] == 1 and info["threads_source"] == "GEOML_THREADS"
    # the option beats the variable, the variable beats OMP_NUM_THREADS
    info, _ = command_line("--threads", "1", GEOML_THREADS="2", OMP_NUM_THREADS="2")
    assert info["torch_threads"] == 1 and info["threads_source"] == "--threads"


def test_the_count_is_set_in_the_job_thread_and_a_users_torch_count_stays():
    """A QgsTask runs its job in a worker thread: a chosen count applies there. Without a choice GeoML
    leaves the count the user set (e.g. in the QGIS Python console) alone."""
    code = (
        "import json, threading\n"
        "from geoml_plugin.core import threads\n"
        "threads.configure()\n"
        "import torch\n"
        "from geoml_plugin.core.device import resolve_device\n"
        "seen = {}\n"
        "def job(key):\n"
        "    resolve_device('cpu')\n"
        "    x = torch.randn(64, 64); (x @ x).sum()\n"
        "    seen[key] = torch.get_num_threads()\n"
        "def in_thread(key):\n"
        "    t = threading.Thread(target=job, args=(key,)); t.start(); t.join()\n"
        "in_thread('default')\n"
        "torch.set_num_threads(1)\n"
        "in_thread('user')\n"
        "threads.configure(setting='3')\n"
        "in_thread('chosen')\n"
        "print(json.dumps(seen))\n"
    )
    seen = json.loads(run_python(code).stdout)
    assert seen == {"default": threads.physical_cores(), "user": 1, "chosen": 3}


def test_job_threads_precedence_and_parsing():
    env = {"GEOML_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert threads.job_threads("2", "4", env) == (2, "--threads")
    assert threads.job_threads(None, "4", env) == (3, "GEOML_THREADS")
    assert threads.job_threads(None, "4", {"OMP_NUM_THREADS": "5"}) == (4, "setting geoml/threads")
    assert threads.job_threads(None, "0", {"OMP_NUM_THREADS": "5"}) == (None, "OMP_NUM_THREADS")
    assert threads.job_threads(None, None, {"GEOML_THREADS": "many"})[0] is None
    assert [threads.parse_threads(t) for t in ("2", " 4 ", "0", "-1", "", None, "x")] == [2, 4, None, None, None,
                                                                                         None, None]
    assert 1 <= threads.physical_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("user", [{}, {"OMP_WAIT_POLICY": ""}, {"KMP_BLOCKTIME": "200"}, {"GOMP_SPINCOUNT": "1k"}])
def test_prepare_environment_only_where_the_user_chose_nothing(user):
    env = dict(user)
    made = threads.prepare_environment(env)
    if user:
        assert made == {} and env == user
    else:
        assert made == env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}

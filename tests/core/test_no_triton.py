"""Training jobs must never import triton: inside the QGIS desktop its LLVM, loaded beside the one of
QGIS's OpenGL driver, kills QGIS (geoml:traingan did, on creating its first optimizer)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import sys
import torch
dev = torch.device("cpu")
"""

# triton's own modules loaded (a guarded import leaves none, or the None marker)
CHECK = """
loaded = sorted(k for k, v in sys.modules.items() if (k == "triton" or k.startswith("triton.")) and v is not None)
print("TRITON-LOADED", loaded if loaded else "")
print("OK")
"""

JOBS = {
    "tile GAN": """
from geoml_plugin.core.gan.trainers import TileGanTrainer
TileGanTrainer(1, 32, "dcgan_sn", dev, {})
""",
    "pix2pix": """
from geoml_plugin.core.gan.trainers import Pix2PixTrainer
Pix2PixTrainer(1, 1, dev, {})
""",
    "few-shot fine-tuning": """
from geoml_plugin.core.fewshot.job import fine_tune
from geoml_plugin.core.progress import Feedback
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
fine_tune(model, torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), 1, 1e-3, 0, Feedback())
""",
    "meta-training": """
from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, _Learner
cfg = MetaTrainConfig(["x.tif"], "l.gpkg", "c", "m.safetensors", device="cpu")
_Learner(cfg, torch.nn.Linear(2, 2), dev)
""",
}


@pytest.mark.parametrize("job", list(JOBS))
def test_training_never_imports_triton(job):
    res = subprocess.run([sys.executable, "-c", PRELUDE + JOBS[job] + CHECK], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK" in res.stdout
    assert "TRITON-LOADED \n" in res.stdout, res.stdout

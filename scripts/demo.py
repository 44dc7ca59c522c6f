#!/usr/bin/env python3
"""`make demo`: GeoML's main job, headless, on sample data it makes itself.

Starts a real QGIS (no window), registers the GeoML Processing provider and
runs each capability's demo step (scripts/demo_steps/<name>.py, listed in
STEPS) through ``processing.run`` — the same code path as the toolbox, batch
mode and ``qgis_process``. Every step writes GeoTIFFs and PNG previews into
the output folder and prints what it made.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# demo steps, in order; each module has run(ctx) -> list of files it wrote
STEPS = [
    "predict",
    "finetune",
    "gan",
    "fewshot",
]


@dataclass
class DemoContext:
    out: Path
    scene: object
    seed: int = 0
    made: list = field(default_factory=list)

    def run_alg(self, alg_id: str, params: dict) -> dict:
        import processing
        from qgis.core import QgsProcessingContext, QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self._last = -10.0

            def pushInfo(self, info):  # noqa: N802
                print(f"    {info}", flush=True)

            def setProgressText(self, text):  # noqa: N802
                pass

            def reportError(self, error, fatalError=False):  # noqa: N802, N803
                print(f"    ERROR: {error}", flush=True)

        t0 = time.perf_counter()
        print(f"  processing.run('{alg_id}')", flush=True)
        res = processing.run(alg_id, params, context=QgsProcessingContext(), feedback=Feedback())
        print(f"  … {alg_id} finished in {time.perf_counter() - t0:.1f} s", flush=True)
        return res

    def render(self, layer_paths: list, png: Path, width: int = 800) -> Path:
        from demo_render import render_png

        render_png(layer_paths, png, width)
        self.made.append(png)
        return png


def start_qgis():
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    from geoml_plugin.processing.provider import GeoMLProvider

    provider = GeoMLProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    return app, provider


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--size", type=int, default=512, help="sample scene size in pixels")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of: " + ", ".join(STEPS))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from geoml_plugin.core.sampledata import make_sample_scene

    print(f"GeoML demo → {out}")
    scene = make_sample_scene(str(out / "sample_data"), size=args.size, seed=0)
    print(f"  sample scene: {scene.size}×{scene.size} px, 4 bands, classes {', '.join(scene.class_names)}")
    app, provider = start_qgis()  # noqa: F841 (keep the provider alive)
    ctx = DemoContext(out=out, scene=scene)
    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        print(f"\n[{name}]")
        step = importlib.import_module(f"demo_steps.{name}")
        step.run(ctx)
    print("\nWrote:")
    for p in ctx.made:
        print(f"  {Path(p).relative_to(out.parent) if Path(p).is_relative_to(out.parent) else p}")
    print(f"Demo finished in {time.perf_counter() - t0:.0f} s")
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())

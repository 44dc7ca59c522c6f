#!/usr/bin/env python3
"""Latency of interactive GAN tile generation, printed as JSON.

Per 256×256 tile (default architecture, CPU unless --device says otherwise):
* ``model_ms`` — latent field + generator forward pass only;
* ``geotiff_ms`` — the same plus writing the styled GeoTIFF (what a click waits for);
* ``click_ms`` — a map-tool click end to end without QGIS: new session, tile, .qml, VRT mosaic.
Medians over --repeats runs after a warm-up. Target: ≤ 150 ms per tile, click to GeoTIFF, on 2 cores.
The weights do not change the cost, so an untrained generator of the default size is used unless
--model gives a trained one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _default_model(folder: str) -> str:
    from osgeo import osr

    from geoml_plugin.core.modelfile import ModelMetadata, save_model
    from geoml_plugin.core.models import build_model

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    g = build_model("tile_generator", out_bands=1)
    meta = ModelMetadata(architecture="tile_generator", arch_args={"out_bands": 1, "nz": g.nz, "widths": g.widths},
                     task="generation", output="image", in_bands=0, patch_size=64, pixel_size=[10.0, 10.0],
                     crs_wkt=srs.ExportToWkt(), target={"name": "elevation (m)", "units": "m", "mean": [500.0],
                                                        "std": [100.0], "bands": 1, "kind": "elevation",
                                                        "value_range": [[300.0, 700.0]]})
    return save_model(os.path.join(folder, "bench_gen.safetensors"), g, meta)


def _median_ms(fn, repeats: int) -> tuple[float, float, float]:
    """Median and max wall-clock ms, and median CPU ms of this process (all its threads)."""
    fn()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(times), max(times), statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="a trained GeoML tile generator (default: untrained, default size)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from geoml_plugin.core.gan.generate import TileSource
    from geoml_plugin.core.gan.tile_session import TileSession

    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="geoml_bench_tiles_")
    model = args.model or _default_model(tmp)
    src = TileSource(model, args.device)
    wkt = src.meta.crs_wkt
    t = args.tile
    counter = iter(range(10**9))

    def model_only():
        k = next(counter)
        src.decoder.decode(k, 1000 * k, 0, t, t)

    def to_geotiff():
        k = next(counter)
        sess = TileSession(src, wkt, 500000.0 + 4000 * k, 5100000.0, k, t, tmp)
        sess.add(0, 0)

    def click():
        k = next(counter)
        sess = TileSession(src, wkt, 500000.0 + 4000 * k, 5000000.0, k, t, tmp)
        sess.start()
        sess.write_style("auto")

    load0 = os.getloadavg()[0]
    m_med, m_max, m_cpu = _median_ms(model_only, args.repeats)
    g_med, g_max, g_cpu = _median_ms(to_geotiff, args.repeats)
    c_med, c_max, c_cpu = _median_ms(click, args.repeats)
    load1 = os.getloadavg()[0]
    print(json.dumps({
        "benchmark": "gan_tile", "tile_px": t, "device": str(src.device), "torch_threads": args.threads,
        "model": "given" if args.model else "untrained default tile_generator " + str(src.model.widths),
        "model_ms_median": round(m_med, 1), "model_ms_max": round(m_max, 1), "model_cpu_ms": round(m_cpu, 1),
        "geotiff_ms_median": round(g_med, 1), "geotiff_ms_max": round(g_max, 1), "geotiff_cpu_ms": round(g_cpu, 1),
        "click_ms_median": round(c_med, 1), "click_ms_max": round(c_max, 1), "click_cpu_ms": round(c_cpu, 1),
        "target_ms": 150, "meets_target": c_med <= 150,
        "cpu_count": os.cpu_count(), "load_average_before_after": [round(load0, 2), round(load1, 2)],
        "note": "wall-clock ms are what a user waits; *_cpu_ms is the CPU time this process used (all threads), "
                "which other processes sharing the CPU do not inflate. A load average above the core count means "
                "the CPU was shared during the run.",
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GAN demo: learn the sample DEM's terrain, then generate new terrain tiles next to it."""
from __future__ import annotations

import numpy as np
from osgeo import gdal


def run(ctx) -> None:
    from geoml_plugin.core.gan.metrics import slope_degrees, wasserstein_1d
    from geoml_plugin.core.raster.io import raster_info

    model = ctx.out / "terrain_gan.safetensors"
    report = ctx.out / "terrain_gan_report.png"
    ctx.run_alg("geoml:traingan", {"INPUT": ctx.scene.dem, "TILE_SIZE": 64, "ITERATIONS": 300, "BATCH_SIZE": 16,
                                   "SEED": ctx.seed, "DEVICE": 0, "OUTPUT_MODEL": str(model),
                                   "OUTPUT_REPORT": str(report)})
    info = raster_info(ctx.scene.dem)
    x0, y0, x1, y1 = info.extent
    center = f"{x1 + (x1 - x0) / 2:.1f},{(y0 + y1) / 2:.1f} [EPSG:32632]"  # just east of the sample scene
    out = ctx.out / "gan_terrain_tile.tif"
    ctx.run_alg("geoml:generate", {"MODEL": str(model), "CENTER": center, "TILES": "2x2", "TILE_SIZE": 256,
                                   "SEED": 7, "DEVICE": 0, "OUTPUT": str(out)})
    shaded = ctx.out / "gan_terrain_tile_hillshade.tif"
    ctx.run_alg("geoml:generate", {"MODEL": str(model), "CENTER": center, "TILES": "2x2", "TILE_SIZE": 256,
                                   "SEED": 7, "DEVICE": 0, "STYLE": 2, "OUTPUT": str(shaded)})
    gen = gdal.Open(str(out)).ReadAsArray().astype(np.float64)
    real = gdal.Open(ctx.scene.dem).ReadAsArray().astype(np.float64)
    w1 = wasserstein_1d(slope_degrees(gen, info.pixel_size[0]), slope_degrees(real, info.pixel_size[0]))
    h = real.shape[1] // 2
    ref = wasserstein_1d(slope_degrees(real[:, :h], info.pixel_size[0]), slope_degrees(real[:, h:], info.pixel_size[0]))
    print(f"  generated {gen.shape[1]}×{gen.shape[0]} px of terrain, {gen.min():.0f}–{gen.max():.0f} m "
          f"(sample DEM {real.min():.0f}–{real.max():.0f} m); slope distance to the real DEM {w1:.2f}° "
          f"(real halves: {ref:.2f}°)")
    ctx.made += [model, report, out, shaded]
    ctx.render([shaded, ctx.scene.dem], ctx.out / "gan_terrain_beside_sample_dem.png")
    ctx.render([out], ctx.out / "gan_terrain_tile.png")

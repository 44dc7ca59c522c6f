"""Generate georeferenced rasters with a GAN model: the ``geoml:generate`` job.

* Tile generators (task ``generation``): CENTER (+ TILES × tile size) or
  EXTENT → a GeoTIFF in the output CRS (default: the model's) at the model's
  ground pixel size, in the training raster's units (e.g. metres). Pixels come
  from the seeded latent field of ``latent_field``, on a grid anchored at the
  CRS origin, so any two outputs with one seed and pixel size agree where they
  overlap and neighbours join without seams. A PIXEL_SIZE other than the
  model's is honoured by generating at the model's scale and resampling, so
  relief and texture keep their real size (slopes stay right).
* Translators (task ``translation``): INPUT → the translated raster over its
  whole extent, through ``predict.predict_raster`` on overlapping tiles.

The model, seed and grid are recorded in the GeoTIFF metadata; a ``.qml``
style is written beside it (terrain colours or hillshade for elevation, RGB
for imagery), with the training value range so every tile matches.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from osgeo import gdal

from ..device import describe_device, resolve_device
from ..errors import InputError, ModelFileError
from ..modelfile import ModelMetadata, load_model, read_metadata
from ..outputs import check_outputs
from ..progress import Feedback, ensure_feedback
from ..raster import styles as qml
from ..raster.georef import (
    check_point_valid,
    crs_name,
    ground_metres_per_unit,
    is_local,
    same_crs,
    transform_extent,
    transform_point,
)
from ..raster.io import RasterReader, RasterWriter
from ..spec import param, validate
from .latent_field import FieldDecoder

MAX_PIXELS = 200_000_000
TRANSLATE_TILE, TRANSLATE_OVERLAP = 512, 64
STYLES = ("auto", "pseudocolor", "hillshade", "rgb")


@dataclass
class GenerateConfig:
    model_path: str
    output_path: str
    center: Optional[tuple] = None  # (x, y) in center_crs_wkt
    center_crs_wkt: str = ""  # default: the output CRS
    extent: Optional[tuple] = None  # (xmin, ymin, xmax, ymax) in extent_crs_wkt; instead of CENTER
    extent_crs_wkt: str = ""
    crs_wkt: str = ""  # output CRS; default: the model's training CRS
    # output CRS units; default: the model's ground pixel size (0 in the shells)
    pixel_size: Optional[float] = param(None, kind="float", auto=0.0, minimum=0.0, minimum_exclusive=True,
                                        label="Pixel size (output CRS units; 0 = the model's)", help_of="tiles")
    seed: int = param(0, label="Seed", help_of="tiles")
    # columns × rows of tile_size px, centred on CENTER (the shells show it as text: 3x2)
    tiles: tuple = param((1, 1), kind="tiles", label="Tiles (columns × rows)", help=(
        "<b>Tile generator models</b> — give <b>Center</b> (a point in any CRS; tiles are centred on it) or "
        "<b>Extent</b> (covered completely). <b>Tiles</b> = columns × rows of <b>Tile size</b> pixels (256 by "
        "default) around the centre, e.g. 3x2 (3 alone = 3x3). The result is in the model's CRS (or <b>Output "
        "CRS</b>) at the model's ground pixel size (or <b>Pixel size</b>: generated at the model's scale, then "
        "resampled, so relief keeps its real size), in the training raster's units (e.g. metres). The same "
        "<b>Seed</b> gives the same terrain at the same place, and outputs made separately join without seams."))
    tile_size: int = param(256, label="Tile size (pixels)", minimum=16, maximum=8192, help_of="tiles")
    input_path: Optional[str] = None  # translation models: the raster to translate
    # translation: INPUT bands (default as the model)
    bands: Optional[list] = param(None, kind="str", optional=True, advanced=True,
                                  label="Input bands (translation; empty = as the model)",
                                  help_of="scene_normalisation")
    # translation: use INPUT's own band statistics (sensor/season drift)
    scene_normalisation: bool = param(False, label="Scene normalisation (translation)", advanced=True, help=(
        "<b>Translation models</b> (trained with a TARGET) — give <b>Input raster</b>: the whole raster is "
        "translated, tile by tile with overlap (each tile's edges are cropped, so tile borders barely show). "
        "<i>Scene normalisation</i> uses the input's own band statistics, which helps when the input comes from "
        "another sensor or season."))
    style: str = param("auto", choices=STYLES, label="Style", advanced=True)
    device: str = "auto"


@dataclass
class GenerateResult:
    output_path: str
    task: str
    width: int
    height: int
    geotransform: tuple
    crs_wkt: str
    seed: Optional[int]
    seconds: float
    device: str
    value_range: tuple = ()
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GridPlan:
    """A window of the global pixel grid of a CRS: column i covers x ∈ [i·px, (i+1)·px)."""

    crs_wkt: str
    px: float
    py: float
    col0: int
    row0: int
    width: int
    height: int

    @property
    def geotransform(self) -> tuple:
        return (self.col0 * self.px, self.px, 0.0, -self.row0 * self.py, 0.0, -self.py)

    @property
    def center(self) -> tuple:
        return (self.col0 + self.width / 2) * self.px, -(self.row0 + self.height / 2) * self.py

    def shifted(self, dcol: int, drow: int) -> "GridPlan":
        return GridPlan(self.crs_wkt, self.px, self.py, self.col0 + dcol, self.row0 + drow, self.width, self.height)


def require_generator(meta: ModelMetadata, path: str = "") -> None:
    if meta.task in ("generation", "translation"):
        return
    name = os.path.basename(path) or "The model"
    raise ModelFileError(
        f"'{name}' is a {meta.describe().split(': ', 1)[-1].split(';')[0]} ({meta.task}), not a GAN model: "
        "it cannot generate tiles.",
        "Train one with GeoML → Train GAN (geoml:traingan), or apply this model with geoml:predict.",
    )


def model_pixel_size(meta: ModelMetadata, crs_wkt: str, x: float, y: float) -> tuple[float, float]:
    """The model's ground pixel size expressed in ``crs_wkt`` units at ``(x, y)``."""
    px = float(meta.pixel_size[0]) if meta.pixel_size else 1.0
    py = float(meta.pixel_size[1]) if len(meta.pixel_size) > 1 else px
    if not crs_wkt or not meta.crs_wkt or same_crs(crs_wkt, meta.crs_wkt):
        return px, py  # the model's own coordinates (or no CRS at all)
    ground = float(meta.extra.get("pixel_size_m") or px)
    mx = ground_metres_per_unit(crs_wkt, x, y, "x")
    my = ground_metres_per_unit(crs_wkt, x, y, "y")
    if not (mx > 0 and my > 0 and math.isfinite(mx) and math.isfinite(my)):  # e.g. longitude at a pole
        raise InputError(f"At ({x:g}, {y:g}) one unit of {crs_name(crs_wkt)} spans no distance on the ground, so the "
                         "model's pixel size cannot be carried into it there (a pole?).",
                         "Pick a point away from the pole, or generate in a projected CRS.")
    return ground / mx, ground * (py / px) / my


def plan_grid(meta: ModelMetadata, cfg: GenerateConfig) -> GridPlan:
    """Where to generate: output CRS, pixel size and the window of the global grid."""
    crs = cfg.crs_wkt or meta.crs_wkt
    if cfg.extent is not None:
        src = cfg.extent_crs_wkt or crs
        xmin, ymin, xmax, ymax = transform_extent(cfg.extent, src, crs) if crs else cfg.extent
        if not (xmax > xmin and ymax > ymin):
            raise InputError("The EXTENT is empty.")
        cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    elif cfg.center is not None:
        cx, cy = cfg.center
        if crs:
            cx, cy = transform_point(cx, cy, cfg.center_crs_wkt or crs, crs)
    else:
        raise InputError("Give a CENTER point or an EXTENT to generate.")
    if crs:
        check_point_valid(crs, cx, cy)
    if cfg.pixel_size:
        if cfg.pixel_size <= 0:
            raise InputError("PIXEL_SIZE must be positive.")
        px = py = float(cfg.pixel_size)
    else:
        px, py = model_pixel_size(meta, crs, cx, cy)
    if cfg.extent is not None:
        col0, row0 = math.floor(xmin / px), math.floor(-ymax / py)
        width, height = math.ceil(xmax / px) - col0, math.ceil(-ymin / py) - row0
    else:
        cols, rows = (int(v) for v in cfg.tiles)
        if cols < 1 or rows < 1 or cfg.tile_size < 16:
            raise InputError("TILES needs at least 1 column and 1 row, and the tile size at least 16 px.")
        width, height = cols * int(cfg.tile_size), rows * int(cfg.tile_size)
        col0, row0 = round(cx / px - width / 2), round(-cy / py - height / 2)
    if width * height > MAX_PIXELS:
        raise InputError(f"The area is {width}×{height} px at {px:g} units per pixel, more than GeoML "
                         f"generates at once ({MAX_PIXELS // 1_000_000} million px).", "Choose a smaller area.")
    return GridPlan(crs, px, py, int(col0), int(row0), int(width), int(height))


_LENGTH_UNITS = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0, "ft": 0.3048,
                 "feet": 0.3048, "foot": 0.3048, "us-ft": 1200 / 3937, "us survey foot": 1200 / 3937}


def value_metres(meta: ModelMetadata) -> float:
    """Metres per output value of an elevation model. A unit the model names (m, ft) says it; an unnamed one
    (many DTMs name none) is taken to be the training CRS's linear unit, which is what a hillshade of the training
    raster in its own CRS assumed."""
    named = _LENGTH_UNITS.get(str(meta.target.get("units", "")).strip().lower())
    if named is not None:
        return named
    if meta.crs_wkt and not is_local(meta.crs_wkt):
        from ..raster.georef import srs_from_wkt

        srs = srs_from_wkt(meta.crs_wkt)
        if srs.IsProjected():
            return float(srs.GetLinearUnits()) or 1.0
    return 1.0


def hillshade_zfactor(meta: ModelMetadata, plan: GridPlan) -> float:
    """The hillshade z-factor that turns output values into ``plan``'s horizontal CRS units. In a geographic CRS
    a pixel is ~0.00002° while heights are metres: without it every slope is near vertical and the relief renders
    black (issue 21)."""
    if not plan.crs_wkt or is_local(plan.crs_wkt):
        return 1.0
    cx, cy = plan.center
    return value_metres(meta) / ground_metres_per_unit(plan.crs_wkt, cx, cy)


class TileSource:
    """A loaded tile generator: decodes grid windows in the model's units."""

    def __init__(self, model_path: str, device: str = "cpu", meta: Optional[ModelMetadata] = None):
        meta = meta or read_metadata(model_path)
        require_generator(meta, model_path)
        if meta.task != "generation":
            raise ModelFileError(f"'{os.path.basename(model_path)}' translates rasters; it needs an INPUT raster, "
                                 "not a point to generate at.", "Give INPUT (geoml:generate) or use Apply model.")
        self.device = resolve_device(device)
        self.model, self.meta = load_model(model_path, self.device, meta)
        self.model_path = model_path
        self.decoder = FieldDecoder(self.model, self.device)
        t = meta.target
        n = int(t.get("bands", 1))
        self.mean = np.broadcast_to(np.asarray(t.get("mean", 0.0), np.float32), (n,))[:, None, None]
        self.std = np.broadcast_to(np.asarray(t.get("std", 1.0), np.float32), (n,))[:, None, None]

    @property
    def bands(self) -> int:
        return self.mean.shape[0]

    def native_pixel(self, crs_wkt: str, x: float, y: float) -> tuple[float, float]:
        return model_pixel_size(self.meta, crs_wkt, x, y)

    def render(self, plan: GridPlan, seed: int, col0=None, row0=None, width=None, height=None) -> np.ndarray:
        """``(bands, h, w)`` float32 in the model's units for (part of) a native-scale plan."""
        z = self.decoder.decode(int(seed), plan.col0 if col0 is None else col0, plan.row0 if row0 is None else row0,
                                plan.width if width is None else width, plan.height if height is None else height)
        return z * self.std + self.mean

    def metadata(self, plan: GridPlan, seed: int) -> dict:
        m = self.meta
        return {"GEOML_MODEL": os.path.basename(self.model_path), "GEOML_TASK": m.task,
                "GEOML_ARCHITECTURE": m.architecture, "GEOML_SEED": int(seed),
                "GEOML_GRID": f"col0={plan.col0} row0={plan.row0} px={plan.px!r} py={plan.py!r}",
                "GEOML_UNITS": m.target.get("units", ""), "GEOML_TRAINED_ON": m.provenance.get("source", ""),
                "GEOML_TRAINING_PIXEL_SIZE": m.pixel_size[0] if m.pixel_size else ""}

    def style(self, plan: GridPlan, style: str = "auto", blend_mode: int = 0) -> str:
        zf = hillshade_zfactor(self.meta, plan) if style == "hillshade" else 1.0
        return qml.style_for_target(self.meta.target, style=style, zfactor=zf, blend_mode=blend_mode)

    def write(self, plan: GridPlan, seed: int, path: str, style: str = "auto", feedback: Optional[Feedback] = None,
              native: Optional[GridPlan] = None) -> str:
        """Generate ``plan`` (from ``native`` and resampled, when given) into a styled GeoTIFF."""
        fb = ensure_feedback(feedback)
        t = self.meta.target
        names = t.get("band_names") or [t.get("name", "value")] * self.bands
        nodata = float(t.get("nodata", -9999.0))
        with RasterWriter(path, plan.width, plan.height, self.bands, np.float32, plan.geotransform, plan.crs_wkt,
                          nodata=nodata, band_descriptions=names, metadata=self.metadata(plan, seed),
                          qml=self.style(plan, style)) as w:
            if native is None:
                blocks = list(_blocks(plan.width, plan.height))
                for i, (x, y, bw, bh) in enumerate(blocks):
                    w.write(self.render(plan, seed, plan.col0 + x, plan.row0 + y, bw, bh), x, y)
                    fb.progress((i + 1) / len(blocks), f"block {i + 1}/{len(blocks)}")
            else:
                w.write(self._resampled(plan, native, seed, nodata, fb), 0, 0)
        return path

    def _resampled(self, plan: GridPlan, native: GridPlan, seed: int, nodata: float, fb) -> np.ndarray:
        mem = gdal.GetDriverByName("MEM").Create("", native.width, native.height, self.bands, gdal.GDT_Float32)
        mem.SetGeoTransform(native.geotransform)
        if native.crs_wkt:
            mem.SetProjection(native.crs_wkt)
        blocks = list(_blocks(native.width, native.height))
        for i, (x, y, bw, bh) in enumerate(blocks):
            arr = self.render(native, seed, native.col0 + x, native.row0 + y, bw, bh)
            for b in range(self.bands):
                mem.GetRasterBand(b + 1).WriteArray(arr[b], x, y)
            fb.progress(0.9 * (i + 1) / len(blocks), f"block {i + 1}/{len(blocks)}")
        coarser = plan.px > native.px
        gt = plan.geotransform
        out = gdal.Warp("", mem, format="MEM", outputBounds=(gt[0], gt[3] - plan.height * plan.py,
                        gt[0] + plan.width * plan.px, gt[3]), width=plan.width, height=plan.height,
                        resampleAlg="average" if coarser else "bilinear", dstNodata=nodata)
        return out.ReadAsArray().reshape(self.bands, plan.height, plan.width)


def _blocks(width: int, height: int, block: int = 512):
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield x, y, min(block, width - x), min(block, height - y)


def native_plan(source: TileSource, plan: GridPlan) -> Optional[GridPlan]:
    """The model-scale grid covering ``plan`` when its pixel size differs from the model's, else None."""
    cx, cy = plan.center
    nx, ny = source.native_pixel(plan.crs_wkt, cx, cy) if plan.crs_wkt else tuple(source.meta.pixel_size[:2])
    if abs(plan.px / nx - 1) < 1e-3 and abs(plan.py / ny - 1) < 1e-3:
        return None
    gt = plan.geotransform
    x0, y1 = gt[0], gt[3]
    x1, y0 = x0 + plan.width * plan.px, y1 - plan.height * plan.py
    col0, row0 = math.floor(x0 / nx) - 1, math.floor(-y1 / ny) - 1
    w, h = math.ceil(x1 / nx) + 1 - col0, math.ceil(-y0 / ny) + 1 - row0
    if w * h > MAX_PIXELS:
        raise InputError(f"PIXEL_SIZE {plan.px:g} is so much coarser than the model's ({nx:g}) that the area would "
                         f"need {w}×{h} px at the model's scale.", "Choose a smaller area or a finer PIXEL_SIZE.")
    return GridPlan(plan.crs_wkt, nx, ny, col0, row0, w, h)


def run_generate(cfg: GenerateConfig, feedback: Optional[Feedback] = None) -> GenerateResult:
    from ..distributed import require_one_process

    require_one_process("Generating with a GAN model")
    fb = ensure_feedback(feedback)
    t0 = time.perf_counter()
    meta = read_metadata(cfg.model_path)
    require_generator(meta, cfg.model_path)
    if cfg.style not in STYLES:
        raise InputError(f"Unknown style '{cfg.style}'.", f"Choose one of {', '.join(STYLES)}.")
    check_outputs([cfg.output_path], {"model file": cfg.model_path, "input raster": cfg.input_path})
    validate(cfg)
    if meta.task == "translation":
        return _translate(cfg, meta, fb, t0)
    if cfg.input_path and cfg.center is None and cfg.extent is None:
        raise InputError("This model generates tiles from noise; it does not translate an INPUT raster.",
                         "Give a CENTER point or an EXTENT.")
    source = TileSource(cfg.model_path, cfg.device, meta)
    plan = plan_grid(meta, cfg)
    fb.log(f"Device: {describe_device(source.device)}; {plan.width}×{plan.height} px at {plan.px:g} "
           f"{'units' if plan.crs_wkt else 'px'} in {crs_name(plan.crs_wkt) if plan.crs_wkt else 'no CRS'}, seed {cfg.seed}")
    native = native_plan(source, plan)
    if native is not None:
        fb.log(f"Generating at the model's pixel size ({native.px:g}) and resampling to {plan.px:g}.")
    source.write(plan, cfg.seed, cfg.output_path, cfg.style, fb, native)
    ds = gdal.Open(cfg.output_path)
    value_range = tuple(float(v) for v in ds.GetRasterBand(1).ComputeRasterMinMax(False))
    ds = None
    secs = time.perf_counter() - t0
    fb.done()
    fb.log(f"Wrote {cfg.output_path} in {secs:.1f} s")
    return GenerateResult(os.path.abspath(cfg.output_path), "generation", plan.width, plan.height, plan.geotransform,
                          plan.crs_wkt, int(cfg.seed), secs, str(source.device), value_range,
                          source.metadata(plan, cfg.seed))


def _translate(cfg: GenerateConfig, meta: ModelMetadata, fb: Feedback, t0: float) -> GenerateResult:
    from ..predict import PredictConfig, choose_bands, predict_raster

    if not cfg.input_path:
        raise InputError("This model translates a raster into another: give the INPUT raster to translate.")
    with RasterReader(cfg.input_path) as probe:
        bands = choose_bands(meta, probe.info.band_count, cfg.bands, fb)
    model, meta = load_model(cfg.model_path, "cpu", meta)
    if cfg.scene_normalisation:
        with RasterReader(cfg.input_path, bands) as r:
            mean, std, n = r.band_statistics()
        if n:
            meta = ModelMetadata.from_dict({**meta.to_dict(), "norm_mean": mean.tolist(), "norm_std": std.tolist()})
            fb.log("Normalising INPUT with its own band statistics (scene normalisation).")
    multiple = int(meta.extra.get("multiple", 8))
    tile = TRANSLATE_TILE - TRANSLATE_TILE % multiple
    pcfg = PredictConfig(cfg.input_path, cfg.model_path, cfg.output_path, device=cfg.device, batch_size=2,
                         tile_size=tile, overlap=TRANSLATE_OVERLAP, bands=bands)
    res = predict_raster(model, meta, pcfg, fb)
    with RasterReader(res.output_path) as r:
        info = r.info
    return GenerateResult(res.output_path, "translation", res.width, res.height, info.geotransform, info.crs_wkt,
                          None, time.perf_counter() - t0, res.device, res.value_range,
                          {"GEOML_MODEL": os.path.basename(cfg.model_path), "GEOML_TASK": "translation"})

"""Sharded prediction: the tiles of one ``geoml:predict`` job shared among the ranks of a torchrun job.

Every rank lays out the same tiles (patch models) or the same batches of tiles (dense models:
``predict.dense_batches``) and takes every N-th one, so that nodata areas and heavy areas spread evenly. A
rank writes what it computes into a *part*: a sparse GeoTIFF of the output's size beside the output
(``.name.part-<job>.rank<r>.tif``: blocks never written take no space). When every rank is done, rank 0
copies each tile's pixels from the part of the rank that computed it into the output, in the tile order of
one process: the output (and its statistics and style) is the one a single process writes, bit for bit,
since every tile went through the same batch of the same network. It is then written like any output (to
a temporary name, COG conversion if asked, renamed when complete); the parts are deleted in every case.

The output folder must be one all ranks can write and rank 0 can read (a shared file system on a cluster).
"""
from __future__ import annotations

import os
import uuid
from typing import Optional

import numpy as np
from osgeo import gdal

from .map_stats import MapStats, output_bands
from .outputs import output_error
from .raster.io import _NUMPY_TO_GDAL


class Shard:
    """Rank ``rank`` of ``world`` owns every ``world``-th tile (or batch) and records the windows it wrote."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world
        self.written: list = []  # [tile index, x, y, w, h]

    def owns(self, i: int) -> bool:
        return i % self.world == self.rank

    def wrote(self, i: int, window) -> None:
        self.written.append([int(i), window.x, window.y, window.w, window.h])


class PartWriter:
    """One rank's pixels of one output raster: a sparse, tiled, uncompressed GeoTIFF."""

    def __init__(self, path: str, like):
        self.path = path
        self.dtype = like.dtype
        opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "SPARSE_OK=TRUE", "BIGTIFF=YES"]
        try:
            self.ds = gdal.GetDriverByName("GTiff").Create(path, like.width, like.height, like.bands,
                                                           _NUMPY_TO_GDAL[like.dtype], options=opts)
        except RuntimeError as exc:
            raise output_error(path, exc) from exc

    def write(self, array: np.ndarray, xoff: int, yoff: int) -> None:
        try:
            if array.ndim == 2:
                self.ds.GetRasterBand(1).WriteArray(array.astype(self.dtype, copy=False), xoff, yoff)
            else:
                for i in range(array.shape[0]):
                    self.ds.GetRasterBand(i + 1).WriteArray(array[i].astype(self.dtype, copy=False), xoff, yoff)
        except RuntimeError as exc:
            raise output_error(self.path, exc) from exc

    def close(self) -> None:
        if self.ds is not None:
            try:
                self.ds.FlushCache()
            except RuntimeError as exc:
                raise output_error(self.path, exc) from exc
            finally:
                self.ds = None

    def remove(self) -> None:
        self.ds = None
        for p in (self.path, self.path + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)


def part_path(output: str, job: str, rank: int) -> str:
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.part-{job}.rank{rank}.tif")


class _SharedStats:
    """Rank 0's statistics of the assembled output, as the other ranks return them."""

    def __init__(self, d: dict):
        self.valid = int(d["valid"])
        self._counts = d["class_counts"]
        self._range = tuple(d["value_range"])

    def class_counts(self) -> dict:
        return dict(self._counts)

    def value_range(self) -> tuple:
        return self._range


def _valid_of(values: np.ndarray, nodata: float) -> np.ndarray:
    """The pixels a tile wrote as valid: not the nodata value (in any band)."""
    return values != nodata if values.ndim == 2 else (values != nodata).any(axis=0)


def _assemble(records: list, parts: dict, out_w, conf_w, stats) -> None:
    """Copy each written tile, in one process's order, from its rank's part into the final writers."""
    opened = {key: gdal.Open(path) for key, path in parts.items()}
    try:
        for _i, rank, x, y, w, h in sorted(records):
            values = opened[("out", rank)].ReadAsArray(x, y, w, h)
            valid = _valid_of(values, out_w.nodata)
            stats.add(values, valid)
            out_w.write(values, x, y)
            if conf_w is not None:
                conf_w.write(opened[("conf", rank)].ReadAsArray(x, y, w, h), x, y)
    finally:
        opened.clear()


def predict_sharded(session, meta, cfg, common: dict, writers, run_tiles, finish, dense_info: dict):
    """This rank's share of the tiles into its parts; rank 0 then assembles and commits the outputs.

    ``writers()`` makes the final writers (rank 0), ``run_tiles(out_w, conf_w, stats, shard)`` runs the
    rank's tiles, ``finish(out_w, conf_w, stats)`` checks, styles and commits (``predict.predict_raster``).
    Returns (stats, number of tiles, whether a confidence raster was written), the same on every rank."""
    job = session.broadcast("predict/job", uuid.uuid4().hex[:8])
    shard = Shard(session.rank, session.world_size)
    want_conf = bool(cfg.confidence_path and meta.is_classifier)
    parts, mine = {}, []
    try:
        out_w, conf_w = writers() if session.is_main else (None, None)
        try:
            n_tiles = _run_parts(session, cfg, common, meta, want_conf, job, shard, run_tiles, parts, mine)
            written = session.exchange("predict/written", {"tiles": shard.written,
                                                           "model_pixels": dense_info.get("model_pixels", 0)})
            summary = None
            if session.is_main:
                summary = _assemble_and_commit(session, written, job, cfg, want_conf, out_w, conf_w, finish, meta)
        except BaseException:
            for w in (out_w, conf_w):
                if w is not None:
                    w.abort()
            raise
        summary = session.broadcast("predict/done", summary)
    finally:
        for p in mine:
            p.remove()
    if "tile_size" in dense_info:  # dense models: the model work of all ranks
        dense_info["model_pixels"] = sum(int(w["model_pixels"]) for w in written)
    return _SharedStats(summary), n_tiles, want_conf


def _run_parts(session, cfg, common, meta, want_conf, job, shard, run_tiles, parts, mine) -> int:

    class _Like:  # the size and type of an output, for its parts
        def __init__(self, bands, dtype):
            self.width, self.height, self.bands, self.dtype = common["width"], common["height"], bands, dtype

    out_like = _part_like(meta, _Like)
    out_p = PartWriter(part_path(cfg.output_path, job, session.rank), out_like)
    mine.append(out_p)
    conf_p = None
    if want_conf:
        conf_p = PartWriter(part_path(cfg.confidence_path, job, session.rank), _Like(1, np.dtype(np.float32)))
        mine.append(conf_p)
    n_tiles = run_tiles(out_p, conf_p, MapStats(meta), shard)
    for p in mine:
        p.close()
    return n_tiles


def _part_like(meta, like_cls):

    if meta.is_classifier:
        k = max(c.value for c in meta.classes)
        return like_cls(1, np.dtype(np.uint8 if k < 255 else np.uint16))
    return like_cls(output_bands(meta), np.dtype(np.float32))


def _assemble_and_commit(session, written: list, job: str, cfg, want_conf: bool, out_w, conf_w, finish,
                         meta) -> Optional[dict]:

    records = [[i, rank, x, y, w, h] for rank, d in enumerate(written) for i, x, y, w, h in d["tiles"]]
    parts = {("out", r): part_path(cfg.output_path, job, r) for r in range(session.world_size)}
    if want_conf:
        parts.update({("conf", r): part_path(cfg.confidence_path, job, r) for r in range(session.world_size)})
    stats = MapStats(meta)
    _assemble(records, parts, out_w, conf_w, stats)
    finish(out_w, conf_w, stats)
    return {"valid": stats.valid, "class_counts": stats.class_counts(),
            "value_range": list(stats.value_range()) if not meta.is_classifier else []}

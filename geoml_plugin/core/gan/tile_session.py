"""Interactive tile generation: the tiles of one seed around a click, as one mosaic.

The map tool (``gui/gan_tool.py``) starts a :class:`TileSession` where the
user clicks: a ``tile``×``tile`` px GeoTIFF centred on the point (snapped to
the global pixel grid of the CRS), in the map's CRS at the model's ground
pixel size. :meth:`TileSession.grow` adds the ring of tiles around what is
there. All tiles of a session come from one seeded latent field, so they
join exactly; a VRT mosaic (rebuilt under a new name after each change, so
no reader holds a stale copy; the old one is deleted once the layer has
switched) lets QGIS draw them as one layer, and a
hillshade drawn over it has no edge lines between tiles.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Optional

from osgeo import gdal

from ..errors import InputError
from ..outputs import output_error, sidecar_name, temp_sibling, write_text_atomic
from ..raster.georef import check_point_valid
from .generate import GridPlan, TileSource


class TileSession:
    def __init__(self, source: TileSource, crs_wkt: str, x: float, y: float, seed: int, tile: int, folder: str,
                 pixel_size: Optional[tuple] = None):
        self.source, self.seed, self.tile, self.folder = source, int(seed), int(tile), folder
        self.center = (float(x), float(y))  # the click
        if crs_wkt:
            check_point_valid(crs_wkt, x, y, "The clicked point")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise InputError(f"The tiles folder '{folder}' cannot be created: {exc.strerror}.",
                             "Choose another tiles folder, or leave it empty for a temporary one.") from exc
        px, py = pixel_size or source.native_pixel(crs_wkt, x, y)
        self.base = GridPlan(crs_wkt, px, py, round(x / px - tile / 2), round(-y / py - tile / 2), tile, tile)
        self.token = uuid.uuid4().hex[:8]  # in file names: sessions sharing a folder never overwrite each other
        self.tiles: dict = {}  # (i, j) lattice index → GeoTIFF path
        self.mosaic_path: Optional[str] = None
        self._superseded: list = []
        self._styles: set = set()  # .qml files written by write_style
        self._last_change: Optional[tuple] = None  # (tiles added, mosaic before): what undo_last_change takes back
        self._version = 0
        self.last_seconds: list = []  # seconds per tile of the last change, click to GeoTIFF

    def plan(self, i: int, j: int) -> GridPlan:
        return self.base.shifted(i * self.tile, j * self.tile)

    def _tile_path(self, plan: GridPlan) -> str:
        return os.path.join(self.folder, f"geoml_s{self.seed}_{self.token}_c{plan.col0}_r{plan.row0}.tif")

    def add(self, i: int, j: int) -> str:
        """Generate lattice tile ``(i, j)`` (relative to the first) if it is not there yet."""
        if (i, j) not in self.tiles:
            t0 = time.perf_counter()
            plan = self.plan(i, j)
            self.tiles[(i, j)] = self.source.write(plan, self.seed, self._tile_path(plan))
            self.last_seconds.append(time.perf_counter() - t0)
        return self.tiles[(i, j)]

    def start(self) -> str:
        self.last_seconds = []
        return self._add_all([(0, 0)])

    def ring(self) -> list:
        """Lattice indices of the ring around the current tiles' bounding box."""
        ii = [i for i, _ in self.tiles] or [0]
        jj = [j for _, j in self.tiles] or [0]
        i0, i1, j0, j1 = min(ii) - 1, max(ii) + 1, min(jj) - 1, max(jj) + 1
        return [(i, j) for j in range(j0, j1 + 1) for i in range(i0, i1 + 1) if (i, j) not in self.tiles]

    def grow(self, feedback=None) -> str:
        """Add the ring of neighbouring tiles; returns the new mosaic. Cancelled or failed part way (a tile or
        the mosaic), the ring's tiles made so far are deleted (no mosaic shows them): the session is as before."""
        self.last_seconds = []
        return self._add_all(self.ring(), feedback)

    def _add_all(self, todo: list, feedback=None) -> str:
        """Add the tiles ``todo`` and rebuild the mosaic; on any failure, delete those tiles again."""
        previous, self._last_change = self.mosaic_path, None
        try:
            for k, (i, j) in enumerate(todo):
                self.add(i, j)
                if feedback is not None:
                    feedback.progress((k + 1) / len(todo), f"tile {k + 1}/{len(todo)}")
            mosaic = self.rebuild_mosaic()
            self._last_change = (list(todo), previous)
            return mosaic
        except BaseException:
            made = [p for p in (self.tiles.pop(key, None) for key in todo) if p]
            # tidying up only (best effort): the user must read why the tiles failed, not a refused delete
            _remove_quietly([f for p in made for f in (p, sidecar_name(p, "style"))])
            raise

    def rebuild_mosaic(self) -> str:
        """Write the mosaic of the current tiles under a new name. It is written to a temporary sibling (the same
        folder: the same relative tile paths) and renamed when complete; a failure (a full disk) raises
        :class:`OutputError` and leaves no file, and the current mosaic as it was."""
        path = os.path.join(self.folder, f"geoml_s{self.seed}_{self.token}_mosaic_v{self._version + 1}.vrt")
        tmp = temp_sibling(path, ".vrt")
        try:
            vrt = gdal.BuildVRT(tmp, sorted(self.tiles.values()))
            vrt.FlushCache()  # writes the XML and raises if it cannot (closing would only print the error)
            vrt = None
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            vrt = None
            if os.path.exists(tmp):
                os.remove(tmp)
            raise output_error(path, exc) from exc
        self._version += 1
        if self.mosaic_path:
            self._superseded.append(self.mosaic_path)
        self.mosaic_path = path
        return path

    def discard_old_mosaics(self) -> None:
        """Delete earlier mosaics, once no layer shows them any more (main thread, after a refresh). Tidying up
        only: one that cannot be deleted yet (a reader still holds it, on Windows) is tried again next time."""
        self._last_change = None  # it shows on the map: no longer to be taken back
        kept = []
        for old in self._superseded:
            try:
                if os.path.exists(old):
                    os.remove(old)
            except OSError:
                kept.append(old)
        self._superseded = kept

    def write_style(self, style: str, blend_mode: int = 0) -> str:
        """A ``.qml`` for the mosaic in ``style`` (auto / pseudocolor / hillshade / rgb)."""
        path = os.path.join(self.folder, f"geoml_s{self.seed}_{self.token}_{style}.qml")
        write_text_atomic(path, self.source.style(self.base, style, blend_mode))
        self._styles.add(path)
        return path

    def undo_last_change(self) -> None:
        """Take back the last :meth:`grow` (or :meth:`start`) whose mosaic never showed on the map (the layer
        could not switch to it; the Grow was cancelled or its tiles replaced meanwhile): its tiles and mosaic are
        deleted and the mosaic before it is current again (main thread, once no layer shows the new mosaic).
        Best effort, like :meth:`delete_files`."""
        if self._last_change is None:
            return
        added, previous = self._last_change
        self._last_change = None
        paths = [self.mosaic_path] if self.mosaic_path else []
        for key in added:
            path = self.tiles.pop(key, None)
            paths += [path, sidecar_name(path, "style")] if path else []
        _remove_quietly(paths)
        self.mosaic_path = previous
        if previous in self._superseded:
            self._superseded.remove(previous)

    def delete_files(self) -> None:
        """Delete every file of this session: tiles with their styles, mosaics, mosaic styles (a session that
        never showed on the map). Best effort: a file that cannot be deleted is left, not an error."""
        tiles = list(self.tiles.values())
        paths = [f for t in tiles for f in (t, sidecar_name(t, "style"))]
        paths += [self.mosaic_path] if self.mosaic_path else []
        _remove_quietly(paths + self._superseded + sorted(self._styles))
        self.tiles, self.mosaic_path, self._superseded, self._styles = {}, None, [], set()
        self._last_change = None

    def contains(self, x: float, y: float) -> bool:
        for i, j in self.tiles:
            gt = self.plan(i, j).geotransform
            if gt[0] <= x < gt[0] + self.tile * gt[1] and gt[3] - self.tile * self.base.py < y <= gt[3]:
                return True
        return False

    @property
    def extent(self) -> tuple:
        xs, ys = [], []
        for i, j in self.tiles:
            gt = self.plan(i, j).geotransform
            xs += [gt[0], gt[0] + self.tile * gt[1]]
            ys += [gt[3], gt[3] - self.tile * self.base.py]
        return min(xs), min(ys), max(xs), max(ys)


def _remove_quietly(paths: list) -> None:
    """Delete ``paths`` and their GDAL ``.aux.xml`` sidecars where they exist; one that cannot be deleted
    (Windows: a reader still holds it) is left."""
    for path in paths:
        for f in (path, path + ".aux.xml"):
            try:
                if os.path.exists(f):
                    os.remove(f)
            except OSError:
                pass

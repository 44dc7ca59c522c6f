"""Raster reading and writing with GDAL: windows, nodata masks, atomic output.

Reading is window by window (``RasterReader.read``), so memory never grows
with the raster. Windows may reach past the raster edge ("boundless"): the
outside is filled with zeros and marked invalid in the returned mask, which
lets tiling code treat edge tiles like any other. Values are read as stored:
a band's scale/offset metadata is *not* applied, in training and prediction
alike, so a model sees the same numbers from the rasters it was trained on and
from rasters with the same encoding (e.g. reflectance × 10000).

Writing goes to a hidden temporary file next to the destination
(``.name.part-XXXX.tif``) and is renamed over the destination only when the
job completes; on error or cancel the temporary file is deleted, so a user
never finds a half-written GeoTIFF. Outputs are tiled, DEFLATE-compressed,
BigTIFF when needed, with overviews for large rasters, and keep the source's
CRS, geotransform and nodata.
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from osgeo import gdal, osr

from ..errors import InputError, RasterError
from ..outputs import check_writable, output_error, restore_files, sidecar_name, snapshot_files, temp_sibling

# Bytes read or written through one dataset between two flushes of its GDAL block cache.
FLUSH_BYTES = 16 * 1024 * 1024
# GDAL's block cache is capped at this while overviews are built (they read the whole raster).
OVERVIEW_CACHE_BYTES = 32 * 1024 * 1024

gdal.UseExceptions()

_GDAL_TO_NUMPY = {
    gdal.GDT_Byte: np.uint8,
    gdal.GDT_UInt16: np.uint16,
    gdal.GDT_Int16: np.int16,
    gdal.GDT_UInt32: np.uint32,
    gdal.GDT_Int32: np.int32,
    gdal.GDT_Float32: np.float32,
    gdal.GDT_Float64: np.float64,
}
_NUMPY_TO_GDAL = {np.dtype(v): k for k, v in _GDAL_TO_NUMPY.items()}


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    geotransform: tuple
    crs_wkt: str
    nodata: list  # per band, None where unset
    dtype: str
    block_size: tuple = (256, 256)
    band_names: list = field(default_factory=list)

    @property
    def pixel_size(self) -> tuple[float, float]:
        gt = self.geotransform
        return abs(gt[1]), abs(gt[5])

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the raster CRS: the bounding box of its four corners (any geotransform)."""
        xs, ys = zip(*(self.pixel_to_world(c, r) for c in (0, self.width) for r in (0, self.height)))
        return min(xs), min(ys), max(xs), max(ys)

    def world_to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Fractional (col, row) of a map coordinate, through the full affine (rotated grids too)."""
        inv = gdal.InvGeoTransform(tuple(self.geotransform))
        if inv is None:
            raise InputError("The raster's geotransform cannot be inverted (a pixel size of 0?).")
        return tuple(gdal.ApplyGeoTransform(inv, x, y))

    def pixel_to_world(self, col: float, row: float) -> tuple[float, float]:
        gt = self.geotransform
        return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]


def window_from_extent(info: RasterInfo, xmin: float, ymin: float, xmax: float, ymax: float) -> tuple:
    """Pixel window ``(x, y, w, h)`` of a map extent (raster CRS), clipped to the raster.

    Raises :class:`InputError` when the extent does not overlap the raster.
    """
    import math

    cols, rows = zip(*(info.world_to_pixel(x, y) for x in (xmin, xmax) for y in (ymin, ymax)))
    c0, c1 = min(cols), max(cols)
    r0, r1 = min(rows), max(rows)
    x0, y0 = max(0, math.floor(c0)), max(0, math.floor(r0))
    x1, y1 = min(info.width, math.ceil(c1)), min(info.height, math.ceil(r1))
    if x1 <= x0 or y1 <= y0:
        raise InputError("The chosen extent does not overlap the raster.")
    return x0, y0, x1 - x0, y1 - y0


NOT_GDAL_HINT = ("Export the layer to a GeoTIFF first: Raster ▸ Conversion ▸ Translate, or right-click the layer ▸ "
                 "Export ▸ Save As….")


def _looks_like_a_path(source: str) -> bool:
    """True for a plain file name; False for a connection string (``GPKG:…:table``, ``url=…``, ``http…``)."""
    if "=" in source or "://" in source:
        return False
    colon = source.find(":")
    return colon < 0 or (colon == 1 and source[0].isalpha())  # none, or a Windows drive letter


def _open_source(source: str) -> gdal.Dataset:
    """A raster that is not a plain file: a GDAL connection string such as ``GPKG:/data/x.gpkg:table``."""
    try:
        ds = gdal.OpenEx(source, gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError:
        ds = None
    if ds is not None and ds.RasterCount > 0:
        return ds
    if _looks_like_a_path(source):
        raise InputError(f"The raster '{source}' does not exist.")
    raise InputError(f"GeoML reads rasters that GDAL can open (files such as GeoTIFF, GeoPackage rasters); "
                     f"'{source}' is not one (a web service or another provider's layer?).", NOT_GDAL_HINT)


def open_raster(path: str, update: bool = False) -> gdal.Dataset:
    """Open a raster file, or (read only) another source GDAL opens, e.g. a GeoPackage raster ``GPKG:x.gpkg:table``."""
    if not path:
        raise InputError("No raster was given.")
    if not os.path.exists(path) and not path.startswith("/vsi"):
        if update:
            raise InputError(f"The raster '{path}' does not exist.")
        return _open_source(path)
    try:
        ds = gdal.Open(path, gdal.GA_Update if update else gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterError(f"GDAL cannot open '{path}' as a raster: {exc}") from exc
    if ds is None or ds.RasterCount == 0:
        raise RasterError(f"'{path}' is not a raster GDAL can read.")
    return ds


READ_HINT = "The file may be truncated or damaged: check it (e.g. gdalinfo -checksum) or export it again."


def read_error(path: str, what: str, exc: BaseException) -> InputError:
    """The error a user sees when GDAL fails reading ``what`` of ``path`` (a truncated file, a tile offset past
    its end, a damaged overview…): an :class:`InputError` naming the file, with GDAL's first line."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(f"{path}, ", "")
    detail = re.sub(r"/vsimem/[^,\s]*,\s*", "", detail)  # GeoML's in-memory VRT of the file, meaningless to a user
    return InputError(f"Cannot read {what} of '{path}': {detail[:300].rstrip('.')}.", READ_HINT)


def band_units(path: str, bands: list) -> tuple[list, str]:
    """Band descriptions and the unit of the first band ('' if unknown).

    The unit comes from GDAL's unit type, else from a description ending in
    '(m)' or similar, as GeoML's own rasters are labelled.
    """
    ds = open_raster(path)
    names, units = [], ""
    for i, b in enumerate(bands):
        band = ds.GetRasterBand(b)
        desc = band.GetDescription() or f"band {b}"
        names.append(desc)
        if i == 0:
            units = (band.GetUnitType() or "").strip()
            m = re.search(r"\(([^()]{1,12})\)\s*$", desc)
            if not units and m:
                units = m.group(1).strip()
    if units.lower() in ("metre", "metres", "meter", "meters"):
        units = "m"
    return names, units


def raster_info(path_or_ds) -> RasterInfo:
    ds = open_raster(path_or_ds) if isinstance(path_or_ds, str) else path_or_ds
    b1 = ds.GetRasterBand(1)
    return RasterInfo(
        path=ds.GetDescription(),
        width=ds.RasterXSize,
        height=ds.RasterYSize,
        band_count=ds.RasterCount,
        geotransform=tuple(ds.GetGeoTransform(can_return_null=True) or (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)),
        crs_wkt=ds.GetProjection() or "",
        nodata=[ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)],
        dtype=gdal.GetDataTypeName(b1.DataType),
        block_size=tuple(b1.GetBlockSize()),
        band_names=[ds.GetRasterBand(i + 1).GetDescription() or f"Band {i + 1}" for i in range(ds.RasterCount)],
    )


def holds_transparency(band: gdal.Band) -> bool:
    """Whether a band GDAL calls alpha holds transparency: nearly all of a decimated read is 0 or its maximum.

    GDAL marks band 4 of *any* 4-band Byte GeoTIFF created without ``PHOTOMETRIC`` as alpha, and in
    imagery written by scripts that band is often near-infrared: image data, not a mask.
    """
    w, h = min(band.XSize, 512), min(band.YSize, 512)
    try:
        arr = band.ReadAsArray(0, 0, band.XSize, band.YSize, buf_xsize=w, buf_ysize=h)
    except RuntimeError as exc:
        raise read_error(band.GetDataset().GetDescription(), "the alpha band", exc) from exc
    if arr is None or arr.size == 0:
        return False
    return float(((arr == 0) | (arr == arr.max())).mean()) >= 0.95


def alpha_bands(ds: gdal.Dataset) -> list[int]:
    """1-based numbers of the alpha (transparency) bands, e.g. band 4 of an RGBA raster: bands GDAL marks
    as alpha that hold transparency (:func:`holds_transparency`)."""
    return [i for i in range(1, ds.RasterCount + 1)
            if ds.GetRasterBand(i).GetColorInterpretation() == gdal.GCI_AlphaBand
            and holds_transparency(ds.GetRasterBand(i))]


def parse_band_list(bands, band_count: int) -> list[int]:
    """1-based band numbers from a list or a '1,2,4' string; default all bands."""
    if bands is None or bands == "" or bands == []:
        return list(range(1, band_count + 1))
    if isinstance(bands, str):
        try:
            bands = [int(b) for b in bands.replace(";", ",").split(",") if b.strip()]
        except ValueError as exc:
            raise InputError(f"Band list '{bands}' must be numbers separated by commas, e.g. 1,2,3.") from exc
    bands = [int(b) for b in bands]
    bad = [b for b in bands if b < 1 or b > band_count]
    if bad:
        raise InputError(f"Band(s) {bad} do not exist: the raster has {band_count} band(s).")
    return bands


class RasterReader:
    """Reads windows of selected bands as float32 with a validity mask."""

    def __init__(self, path: str, bands: Optional[Sequence[int]] = None, skip_alpha: bool = False,
                 name: Optional[str] = None):
        """``skip_alpha``: with no ``bands`` given, leave alpha bands out (training jobs: an alpha band is a
        mask, not an image channel; it still marks its 0 pixels as no data). An explicit band list is used as
        given. The bands left out are in ``alpha_left_out`` and :meth:`alpha_note` says so.
        ``name``: the user's file that messages name when ``path`` is GeoML's own in-memory VRT of it."""
        self.name = name or path
        self.ds = open_raster(path)
        self.info = raster_info(self.ds)
        self.info.path = path
        self.alpha_left_out: list[int] = []
        alpha = alpha_bands(self.ds)  # read once: it also decides whether an alpha mask is a mask
        if skip_alpha and not bands and alpha and len(alpha) < self.info.band_count:
            self.alpha_left_out = alpha
            bands = [b for b in range(1, self.info.band_count + 1) if b not in alpha]
        self.bands = parse_band_list(bands, self.info.band_count)
        self._nodata = [self.info.nodata[b - 1] for b in self.bands]
        self._masks = self._mask_bands(transparency=bool(alpha))
        self._unflushed = 0

    def _mask_bands(self, transparency: bool) -> list:
        """GDAL mask bands that say more than the nodata value: a per-dataset mask (internal or ``.msk``,
        e.g. from ``gdal_translate -mask`` or a JPEG-compressed GeoTIFF) or an alpha band (0 = no data).
        ``transparency``: the raster's alpha band holds transparency (:func:`alpha_bands`)."""
        masks, seen = [], set()
        for b in self.bands:
            band = self.ds.GetRasterBand(b)
            flags = band.GetMaskFlags()
            if flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA):
                continue  # nothing, or the nodata value / NaN already tested
            if flags & gdal.GMF_ALPHA and not transparency:
                continue  # a band GDAL calls alpha but that holds image data (e.g. near-infrared): no mask
            key = "dataset" if flags & gdal.GMF_PER_DATASET else b
            if key not in seen:
                seen.add(key)
                masks.append(band.GetMaskBand())
        return masks

    def alpha_note(self) -> str:
        """A log line naming the alpha band(s) left out of the default bands, or '' when none was."""
        if not self.alpha_left_out:
            return ""
        many = len(self.alpha_left_out) > 1
        return (f"{os.path.basename(self.info.path)}: band{'s' if many else ''} "
                f"{', '.join(str(b) for b in self.alpha_left_out)} left out of the input: "
                f"{'they are alpha (transparency) bands' if many else 'it is an alpha (transparency) band'}, "
                f"a mask rather than image data (alpha 0 still marks no data); using bands "
                f"{', '.join(str(b) for b in self.bands)}. Give a band list to use it anyway.")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.ds = None

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def read(self, xoff: int, yoff: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Read ``(bands, height, width)`` float32 and a bool mask of valid pixels.

        A pixel is valid when it lies inside the raster, no selected band
        equals that band's nodata value, no value is NaN, and the raster's
        mask band (a per-dataset mask or an alpha band), if it has one, is not 0.
        """
        data = np.zeros((len(self.bands), height, width), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        x0, y0 = max(xoff, 0), max(yoff, 0)
        x1, y1 = min(xoff + width, self.width), min(yoff + height, self.height)
        if x1 <= x0 or y1 <= y0:
            return data, valid
        what = f"the {x1 - x0}×{y1 - y0} px window at column {x0}, row {y0}"
        try:
            arr = self.ds.ReadAsArray(x0, y0, x1 - x0, y1 - y0, band_list=self.bands)
        except RuntimeError as exc:  # a truncated file, a tile offset past its end …
            raise read_error(self.name, what, exc) from exc
        if arr is None:
            raise RasterError(f"GDAL failed to read a window of '{self.info.path}': {gdal.GetLastErrorMsg()}")
        arr = np.asarray(arr).reshape(len(self.bands), y1 - y0, x1 - x0)
        self._unflushed += arr.nbytes
        if self._unflushed > FLUSH_BYTES:
            self.ds.FlushCache()  # drop cached blocks: memory must not grow with the raster's size
            self._unflushed = 0
        ok = np.ones(arr.shape[1:], dtype=bool)
        for i, nd in enumerate(self._nodata):
            if nd is not None:
                ok &= arr[i] != nd
        for m in self._masks:
            try:
                ok &= m.ReadAsArray(x0, y0, x1 - x0, y1 - y0) > 0
            except RuntimeError as exc:
                raise read_error(self.name, f"the mask of {what}", exc) from exc
        sub = arr.astype(np.float32, copy=False)
        if np.issubdtype(arr.dtype, np.floating):
            ok &= np.isfinite(sub).all(axis=0)
        dy, dx = y0 - yoff, x0 - xoff
        data[:, dy : dy + sub.shape[1], dx : dx + sub.shape[2]] = sub
        valid[dy : dy + sub.shape[1], dx : dx + sub.shape[2]] = ok
        data[:, ~valid] = 0.0
        return data, valid

    def band_statistics(self, max_pixels: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-band mean and std over valid pixels from a decimated read.

        Reads at most ``max_pixels`` pixels (GDAL resamples with nearest
        neighbour), so it is fast for any raster size.
        """
        scale = max(1.0, (self.width * self.height / max_pixels) ** 0.5)
        w, h = max(1, int(self.width / scale)), max(1, int(self.height / scale))
        # a decimated read goes through the raster's overviews when it has them: a damaged overview fails here
        what = "the overview / band statistics"
        try:
            arr = self.ds.ReadAsArray(0, 0, self.width, self.height, buf_xsize=w, buf_ysize=h,
                                      band_list=self.bands)
        except RuntimeError as exc:
            raise read_error(self.name, what, exc) from exc
        arr = np.asarray(arr, dtype=np.float64).reshape(len(self.bands), h, w)
        ok = np.isfinite(arr).all(axis=0)
        for i, nd in enumerate(self._nodata):
            if nd is not None:
                ok &= arr[i] != nd
        for m in self._masks:
            try:
                ok &= m.ReadAsArray(0, 0, self.width, self.height, buf_xsize=w, buf_ysize=h) > 0
            except RuntimeError as exc:
                raise read_error(self.name, f"the mask for {what}", exc) from exc
        n = int(ok.sum())
        if n == 0:
            return np.zeros(len(self.bands)), np.ones(len(self.bands)), 0
        vals = arr[:, ok]
        std = vals.std(axis=1)
        std[std < 1e-6] = 1.0
        return vals.mean(axis=1), std, n

    def has_valid_pixels(self) -> bool:
        return self.band_statistics(max_pixels=250_000)[2] > 0


def check_geotiff_name(path: str) -> None:
    """Outputs are GeoTIFF: refuse a name with another raster format's extension (a GeoTIFF named .png)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if not ext or ext in ("tif", "tiff"):
        return
    for i in range(gdal.GetDriverCount()):
        drv = gdal.GetDriver(i)
        if drv.GetMetadataItem(gdal.DCAP_RASTER) and ext in (drv.GetMetadataItem(gdal.DMD_EXTENSIONS) or "").lower().split():
            raise InputError(f"GeoML writes GeoTIFF files, but '{os.path.basename(path)}' has the extension of "
                             f"another format ({drv.LongName}).", "Name the output .tif.")


class RasterWriter:
    """Atomic, tiled, compressed GeoTIFF writer.

    Use as a context manager: on a clean exit the file is finalised
    (statistics, overviews, categories, colours) and renamed into place; on an
    exception nothing is left behind.
    """

    def __init__(
        self,
        path: str,
        width: int,
        height: int,
        bands: int,
        dtype,
        geotransform: Sequence[float],
        crs_wkt: str,
        nodata: Optional[float] = None,
        category_names: Optional[Sequence[str]] = None,
        color_table: Optional[dict] = None,
        band_descriptions: Optional[Sequence[str]] = None,
        metadata: Optional[dict] = None,
        overviews: Optional[bool] = None,
        qml: Optional[str] = None,
        cog: bool = False,
    ):
        check_writable(path)
        check_geotiff_name(path)
        self.path = os.path.abspath(path)
        self.tmp = temp_sibling(self.path)
        self.width, self.height, self.bands = width, height, bands
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        self.category_names = category_names
        self.color_table = color_table
        self.metadata = metadata or {}
        self.qml = qml
        self.overviews = overviews if overviews is not None else max(width, height) > 2048
        self.cog = cog  # converted to a Cloud-Optimized GeoTIFF (with its own overviews) when complete
        if cog:
            self.overviews = False
        self._unflushed = 0
        self._qml_tmp: Optional[str] = None
        self._prepared = False
        self._described = False
        opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
        opts.append("PREDICTOR=3" if self.dtype.kind == "f" else "PREDICTOR=2")
        if self.dtype not in _NUMPY_TO_GDAL:
            raise RasterError(f"Unsupported output type {self.dtype}.")
        try:
            drv = gdal.GetDriverByName("GTiff")
            self.ds = drv.Create(self.tmp, width, height, bands, _NUMPY_TO_GDAL[self.dtype], options=opts)
        except RuntimeError as exc:
            raise RasterError(f"Cannot create '{path}': {exc}") from exc
        self.ds.SetGeoTransform(tuple(geotransform))
        if crs_wkt:
            self.ds.SetProjection(crs_wkt)
        for i in range(bands):
            band = self.ds.GetRasterBand(i + 1)
            if nodata is not None:
                # no band.Fill(nodata): it would put the whole raster in GDAL's block cache at
                # once; GTiff writes the tiles never written with the nodata value at closing
                band.SetNoDataValue(float(nodata))
            if band_descriptions and i < len(band_descriptions):
                band.SetDescription(band_descriptions[i])

    def __enter__(self):
        return self

    def write(self, array: np.ndarray, xoff: int, yoff: int, band: Optional[int] = None) -> None:
        """Write ``(h, w)`` into ``band`` (1-based) or ``(bands, h, w)`` into all bands."""
        try:
            if array.ndim == 2:
                b = self.ds.GetRasterBand(band or 1)
                b.WriteArray(array.astype(self.dtype, copy=False), xoff, yoff)
            else:
                for i in range(array.shape[0]):
                    self.ds.GetRasterBand(i + 1).WriteArray(array[i].astype(self.dtype, copy=False), xoff, yoff)
            self._unflushed += array.size * self.dtype.itemsize
            if self._unflushed > FLUSH_BYTES:
                # dirty tiles otherwise pile up in GDAL's block cache (5 % of the RAM by default)
                # until it is full: memory would grow with the raster's size
                self.ds.FlushCache()
                self._unflushed = 0
        except (OSError, RuntimeError) as exc:
            raise output_error(self.path, exc) from exc

    def _finalise(self) -> None:
        # no band object may outlive a failure here: held by the traceback, it would keep the file open
        # after abort(), and GDAL would write a stray .aux.xml beside it when the traceback is freed
        try:
            self.describe()
            self.ds.FlushCache()
            if self.overviews:
                levels = [f for f in (2, 4, 8, 16, 32, 64) if max(self.width, self.height) / f >= 256]
                if levels:
                    resampling = "NEAREST" if (self.category_names or self.color_table) else "AVERAGE"
                    # Building overviews reads every block of the raster through GDAL's block cache
                    # (5 % of the RAM by default): capped for the duration, memory stays flat however
                    # large the output. The cap is process-wide; other datasets only lose cached blocks.
                    cache_max = gdal.GetCacheMax()
                    gdal.SetCacheMax(min(cache_max, OVERVIEW_CACHE_BYTES))
                    try:
                        self.ds.BuildOverviews(resampling, levels)
                    finally:
                        gdal.SetCacheMax(cache_max)
        finally:
            self.ds = None  # closes; writes the .aux.xml sidecar for category names

    def describe(self) -> None:
        """Set the colours, category names and metadata (once). Called on completion; a caller that reads the
        temporary file back before that (e.g. to sieve it) calls it first, as GeoTIFF refuses a colour table
        once its tiles have been read back."""
        if not self._described:
            self._described = True
            self._describe(self.ds.GetRasterBand(1))

    def _describe(self, band) -> None:
        try:
            if self.color_table:
                ct = gdal.ColorTable()
                for value, rgba in self.color_table.items():
                    ct.SetColorEntry(int(value), tuple(int(c) for c in rgba))
                band.SetRasterColorTable(ct)
                band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
            if self.category_names:
                band.SetCategoryNames(list(self.category_names))
            if self.metadata:
                self.ds.SetMetadata({str(k): str(v) for k, v in self.metadata.items()})
        finally:
            band = None  # noqa: F841

    def _to_cog(self) -> None:
        """Rewrite the complete temporary GeoTIFF as a Cloud-Optimized GeoTIFF (GDAL's COG driver: 512-px
        tiles, overviews down to one tile, nearest-neighbour for classes, average otherwise)."""
        classes = bool(self.category_names or self.color_table)
        opts = ["COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER", "OVERVIEWS=IGNORE_EXISTING",
                "PREDICTOR=YES", f"RESAMPLING={'NEAREST' if classes else 'AVERAGE'}"]
        cog_tmp = temp_sibling(self.path)
        try:
            ds = gdal.Translate(cog_tmp, self.tmp, format="COG", creationOptions=opts)
            ds = None  # noqa: F841 - closes, writes its .aux.xml (category names)
        except RuntimeError:
            for p in (cog_tmp, cog_tmp + ".aux.xml"):
                if os.path.exists(p):
                    os.remove(p)
            raise
        for p in (self.tmp, self.tmp + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)
        self.tmp = cog_tmp

    def prepare(self) -> None:
        """Complete the temporary raster (overviews, closing, its .aux.xml) and stage its .qml: all the writing
        that can fail, e.g. on a full disk, before anything at the destination changes."""
        if self._prepared:
            return
        self._prepared = True
        try:
            self._finalise()
            if self.cog:
                self._to_cog()
            if self.qml:
                self._qml_tmp = temp_sibling(self.path, ".qml")
                with open(self._qml_tmp, "w", encoding="utf-8") as fh:
                    fh.write(self.qml)
                os.chmod(self._qml_tmp, 0o644)
        except (OSError, RuntimeError) as exc:
            raise output_error(self.path, exc) from exc

    def commit(self) -> str:
        """Rename the prepared files into place: the sidecars first, the raster last; if a rename fails, the
        sidecars are put back, so an earlier raster never ends up beside this run's style or categories."""
        self.prepare()
        aux_tmp, aux = self.tmp + ".aux.xml", self.path + ".aux.xml"
        qml_path = sidecar_name(self.path, "style")
        saved = snapshot_files([aux] + ([qml_path] if self._qml_tmp else []))
        try:
            if os.path.exists(aux_tmp):
                os.replace(aux_tmp, aux)
            elif os.path.exists(aux):
                os.remove(aux)  # stale statistics/categories of an earlier file
            if self._qml_tmp:
                os.replace(self._qml_tmp, qml_path)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            restore_files(saved)
            raise output_error(self.path, exc) from exc
        return self.path

    def abort(self) -> None:
        # The frames of a failed GDAL call (FlushCache, BuildOverviews…) hold the dataset in the traceback
        # being handled: freed only later, it would then write a stray .aux.xml beside the deleted file.
        exc, seen = sys.exc_info()[1], set()
        while exc is not None and id(exc) not in seen:  # the error and the errors it was raised from
            seen.add(id(exc))
            traceback.clear_frames(exc.__traceback__)  # finished frames only; frames still running are left alone
            exc = exc.__cause__ or exc.__context__
        self.ds = None
        for p in (self.tmp, self.tmp + ".aux.xml", self._qml_tmp):
            try:
                if p:
                    os.remove(p)
            except FileNotFoundError:
                pass

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False


def srs_from_wkt(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    if wkt:
        srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def category_names_of(path: str) -> Optional[list]:
    """Category names of band 1, loading the PAM sidecar first (GDAL 3.6 quirk)."""
    ds = open_raster(path)
    gdal.Info(ds, format="json")  # forces the .aux.xml to be read
    return ds.GetRasterBand(1).GetCategoryNames()

"""Training labels from vector layers (points, polygons) or rasters, via OGR/GDAL.

Every capability reads labels the same way: features are reprojected to the
raster's CRS, turned into pixel positions, and those outside the raster or on
nodata are skipped *and counted* (``LabelSet.skipped``) so the job log can say
what happened to each label. Polygons give pixel positions sampled inside them
(patch classification) or are rasterised per window (segmentation masks).

The shell passes QGIS layer sources (``path|layername=x``); layers with no file
behind them (memory layers) are exported to a temporary GeoPackage first.
"""
from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from osgeo import gdal, ogr, osr

from ..errors import InputError
from .io import RasterInfo, RasterReader, open_raster, srs_from_wkt

ogr.UseExceptions()


def parse_vector_source(source: str) -> tuple[str, Optional[str]]:
    """Split a QGIS/OGR source string ``path|layername=name|...`` into (path, layer)."""
    parts = source.split("|")
    path, layer = parts[0], None
    for p in parts[1:]:
        if p.startswith("layername="):
            layer = p.split("=", 1)[1]
    return path, layer


LABELS_HINT = ("The file may be damaged: check that QGIS opens it, or save the layer again "
               "(right-click ▸ Export ▸ Save Features As…).")


def labels_error(source: str, exc: BaseException) -> InputError:
    """The error a user sees when OGR/GDAL fails while reading labels (a damaged GeoPackage or GeoJSON, a label
    raster that cannot be read or warped): an :class:`InputError` naming the file, with GDAL's first line."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300].rstrip(".")
    return InputError(f"Cannot read the labels '{parse_vector_source(source)[0]}': {detail}.", LABELS_HINT)


def _reads_labels(fn):
    """GDAL/OGR errors (``RuntimeError`` under ``UseExceptions``) raised while ``fn(source, …)`` reads labels
    become InputErrors naming ``source``."""
    @functools.wraps(fn)
    def wrapper(source, *args, **kwargs):
        try:
            return fn(source, *args, **kwargs)
        except RuntimeError as exc:
            raise labels_error(source, exc) from exc
    return wrapper


def open_layer(source: str, layer_name: Optional[str] = None):
    path, name = parse_vector_source(source)
    name = layer_name or name
    if not os.path.exists(path):
        raise InputError(f"The labels layer '{path}' does not exist.")
    try:
        ds = ogr.Open(path)
    except RuntimeError as exc:
        raise InputError(f"The labels '{path}' cannot be opened as a vector layer: {exc}") from exc
    if ds is None:
        raise InputError(f"The labels '{path}' cannot be opened as a vector layer.")
    lay = ds.GetLayerByName(name) if name else ds.GetLayer(0)
    if lay is None:
        raise InputError(f"The labels file '{path}' has no layer '{name}'.")
    return ds, lay


@dataclass
class LabelSet:
    """Labelled pixel positions in a raster's grid."""

    cols: np.ndarray  # float pixel column of each sample (0.5 = centre of first pixel)
    rows: np.ndarray
    values: np.ndarray  # class index 0..K-1 (int64) or target value (float64)
    class_names: list = field(default_factory=list)  # empty for regression
    geometry: str = "point"  # 'point' or 'polygon'
    skipped: dict = field(default_factory=dict)  # reason → count
    feature_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # source feature of each sample
    labelled_pixels: int = 0  # label rasters: every labelled pixel over valid input (before sampling); else 0

    def __len__(self) -> int:
        return len(self.values)

    @property
    def counts(self) -> dict:
        if not self.class_names:
            return {}
        c = Counter(self.values.tolist())
        return {n: c.get(i, 0) for i, n in enumerate(self.class_names)}

    def describe_skipped(self) -> str:
        return ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n) or "none"

    def subset(self, idx) -> "LabelSet":
        return LabelSet(self.cols[idx], self.rows[idx], self.values[idx], list(self.class_names), self.geometry,
                        dict(self.skipped), self.feature_ids[idx] if len(self.feature_ids) else self.feature_ids,
                        self.labelled_pixels)


def _transform(layer_srs, raster_wkt: str):
    if layer_srs is None or not raster_wkt:
        return None
    dst = srs_from_wkt(raster_wkt)
    src = layer_srs.Clone()
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if src.IsSame(dst):
        return None
    return osr.CoordinateTransformation(src, dst)


NULL_REASON = "without a label value (NULL or empty)"


def is_missing_label(v) -> bool:
    """NULL, NaN, or an empty/blank text: no class (a class named '' would be mapped and look like nodata)."""
    return v is None or (isinstance(v, float) and not math.isfinite(v)) or (isinstance(v, str) and not v.strip())


def _class_index(values: list, classes: Optional[list]) -> tuple[np.ndarray, list]:
    if classes is None:
        uniq = sorted(set(values), key=lambda v: (isinstance(v, str), v))
        classes = [str(u) for u in uniq]
    lookup = {c: i for i, c in enumerate(classes)}
    idx = np.array([lookup.get(str(v), -1) for v in values], dtype=np.int64)
    return idx, classes


@_reads_labels
def read_vector_labels(
    source: str,
    label_field: str,
    raster: RasterInfo,
    task: str = "classification",
    classes: Optional[list] = None,
    layer_name: Optional[str] = None,
    polygon_samples: int = 20,
    min_spacing: float = 0.0,
    seed: int = 0,
    reader: Optional[RasterReader] = None,
) -> LabelSet:
    """Read point or polygon labels as pixel positions in ``raster``'s grid.

    ``task='regression'`` reads ``label_field`` as a number. For polygons,
    ``polygon_samples`` positions are drawn uniformly inside each polygon
    (fewer for small ones), at least ``min_spacing`` pixels apart when given.
    When ``reader`` is given, labels on nodata pixels are skipped.
    ``classes`` fixes the class order (e.g. to match an existing model).
    """
    ds, lay = open_layer(source, layer_name)
    _check_label_field(lay.GetLayerDefn(), label_field, task)
    sampling = _Sampling(_transform(lay.GetSpatialRef(), raster.crs_wkt), raster.geotransform,
                         polygon_samples, min_spacing, np.random.default_rng(seed))
    cols, rows, vals, fids, geom_kind, skipped = _read_positions(lay, label_field, sampling)
    if not vals and not skipped:
        raise InputError("The labels layer has no features.")
    cols_a, rows_a = np.asarray(cols, float), np.asarray(rows, float)
    keep = _usable_positions(cols_a, rows_a, raster, reader, skipped)
    values, class_names = _label_values(vals, task, classes, keep, skipped)
    result = LabelSet(cols_a[keep], rows_a[keep], values[keep] if len(vals) else values, class_names,
                      geom_kind or "point", {k: v for k, v in skipped.items()}, np.asarray(fids, np.int64)[keep])
    if len(result) == 0:
        raise InputError(
            "No usable labels: every label was skipped (" + result.describe_skipped() + ").",
            "Check that the labels overlap the raster and lie on valid pixels.",
        )
    return result


_NUMERIC_FIELDS = (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)


def _check_label_field(defn, label_field: str, task: str) -> None:
    """The layer has ``label_field``, and a numeric one for regression (with a hint naming the numeric fields)."""
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if label_field not in names:
        raise InputError(f"The labels layer has no field '{label_field}'.", f"Fields: {', '.join(names) or 'none'}.")
    ftype = defn.GetFieldDefn(names.index(label_field)).GetType()
    if task == "regression" and ftype not in _NUMERIC_FIELDS:
        kind = {ogr.OFTString: "text", ogr.OFTDate: "date", ogr.OFTDateTime: "date and time", ogr.OFTTime: "time"}.get(
            ftype, ogr.GetFieldTypeName(ftype).lower())
        numeric = [n for n in names if defn.GetFieldDefn(names.index(n)).GetType() in _NUMERIC_FIELDS]
        raise InputError(
            f"Regression needs a numeric field; '{label_field}' is a {kind} field.",
            (f"If it holds numbers as text, add a decimal field with the Field Calculator, e.g. to_real(\"{label_field}\"). "
             if ftype == ogr.OFTString else "")
            + (f"Numeric fields of this layer: {', '.join(numeric)}." if numeric else "The layer has no numeric field."),
        )


@dataclass
class _Sampling:
    """How a feature's geometry becomes pixel positions: the layer→raster transform (None: same CRS), the
    raster's geotransform, and the polygon sampling settings."""

    ct: object
    gt: tuple
    polygon_samples: int
    min_spacing: float
    rng: np.random.Generator

    def __post_init__(self):
        self.inv = gdal.InvGeoTransform(self.gt)


def _read_positions(lay, label_field: str, sampling: _Sampling) -> tuple:
    """(cols, rows, values, feature ids, geometry kind, skipped counts) of every labelled position, in the
    layer's reading order."""
    skipped: Counter = Counter()
    cols, rows, vals, fids = [], [], [], []
    geom_kind = None
    lay.ResetReading()
    for feat in lay:
        v = feat.GetField(label_field)
        if is_missing_label(v):
            skipped[NULL_REASON] += 1
            continue
        g = feat.GetGeometryRef()
        if g is None or g.IsEmpty():
            skipped["without geometry"] += 1
            continue
        kind, pts = _feature_positions(g, sampling)
        if kind is None:
            skipped["with unsupported geometry (use points or polygons)"] += 1
            continue
        geom_kind = geom_kind or kind
        if kind == "polygon" and not pts:
            skipped["polygons smaller than a pixel"] += 1
        for c, r in pts:
            cols.append(c)
            rows.append(r)
            vals.append(v)
            fids.append(feat.GetFID())
    return cols, rows, vals, fids, geom_kind, skipped


def _feature_positions(g, sampling: _Sampling) -> tuple:
    """("point" | "polygon" | None, pixel positions) of one feature's geometry in the raster's grid: each point
    of a (multi)point, or positions sampled inside a (multi)polygon; None for other geometry types."""
    g = g.Clone()
    if sampling.ct is not None:
        g.Transform(sampling.ct)
    gtype = ogr.GT_Flatten(g.GetGeometryType())
    if gtype in (ogr.wkbPoint, ogr.wkbMultiPoint):
        pts = [g.GetPoint_2D(0)] if gtype == ogr.wkbPoint else [g.GetGeometryRef(i).GetPoint_2D(0) for i in range(g.GetGeometryCount())]
        return "point", [tuple(gdal.ApplyGeoTransform(sampling.inv, x, y)) for x, y in pts]
    if gtype in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
        return "polygon", _sample_polygon(g, sampling.inv, sampling.gt, sampling.polygon_samples,
                                          sampling.min_spacing, sampling.rng)
    return None, []


def _usable_positions(cols_a: np.ndarray, rows_a: np.ndarray, raster: RasterInfo, reader, skipped: Counter):
    """Mask of the positions inside the raster and (with ``reader``) on valid pixels; counts the others."""
    inside = (cols_a >= 0) & (rows_a >= 0) & (cols_a < raster.width) & (rows_a < raster.height)
    if (~inside).sum():
        skipped["outside the raster"] += int((~inside).sum())
    keep = inside.copy()
    if reader is not None and keep.any():
        on_data = _valid_at(reader, cols_a[keep], rows_a[keep])
        n_bad = int((~on_data).sum())
        if n_bad:
            skipped["on nodata pixels"] += n_bad
        keep[np.flatnonzero(keep)[~on_data]] = False
    return keep


def _label_values(vals: list, task: str, classes: Optional[list], keep: np.ndarray, skipped: Counter) -> tuple:
    """(values, class names): numbers for regression, else class indices (``classes`` fixes the order); labels of
    a class not in ``classes`` are dropped from ``keep`` (in place) and counted."""
    if task == "regression":
        return np.asarray(vals, dtype=np.float64), []
    values, class_names = _class_index([v for v in vals], classes)
    unknown = values < 0
    if unknown.any():
        skipped["with a class the model does not know"] += int((unknown & keep).sum())
        keep &= ~unknown
    return values, class_names


def _valid_at(reader: RasterReader, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    ok = np.zeros(len(cols), bool)
    for i, (c, r) in enumerate(zip(cols.astype(int), rows.astype(int))):
        _, v = reader.read(int(c), int(r), 1, 1)
        ok[i] = bool(v[0, 0])
    return ok


def _sample_polygon(g, inv, gt, n, min_spacing, rng) -> list:
    """Uniform random pixel positions inside a polygon (rejection sampling on its envelope).

    The envelope's four corners go through the full affine and the pixel area is the geotransform's
    determinant, so south-up and rotated grids sample like north-up ones.
    """
    minx, maxx, miny, maxy = g.GetEnvelope()
    cols, rows = zip(*(gdal.ApplyGeoTransform(inv, x, y) for x in (minx, maxx) for y in (miny, maxy)))
    c0, c1 = min(cols), max(cols)
    r0, r1 = min(rows), max(rows)
    area_px = g.GetArea() / abs(gt[1] * gt[5] - gt[2] * gt[4])
    if area_px < 1:
        return []
    want = int(max(1, min(n, area_px)))
    out: list = []
    tries = 0
    while len(out) < want and tries < want * 50:
        tries += 1
        c = math.floor(rng.uniform(c0, c1)) + 0.5
        r = math.floor(rng.uniform(r0, r1)) + 0.5
        x, y = gdal.ApplyGeoTransform(gt, c, r)
        pt = ogr.Geometry(ogr.wkbPoint)
        pt.AddPoint_2D(x, y)
        if not g.Contains(pt):
            continue
        if min_spacing and any((c - a) ** 2 + (r - b) ** 2 < min_spacing**2 for a, b in out):
            continue
        out.append((c, r))
    return out


def _burn_copy(lay, ftype, value_of):
    """An in-memory copy of ``lay``'s features with geometry, in the layer's reading order, each with a field
    ``burn`` = ``value_of(feature)``. GDAL burns features in that order, the last on top, so rasterizing copies
    made by this function puts the same feature on top everywhere. Only polygons are copied, as
    :func:`read_vector_labels` uses only them from a polygon layer: a stray line or point would otherwise burn a
    class across the polygons under it. Returns (data source, layer): keep both."""
    mem_ds = ogr.GetDriverByName("Memory").CreateDataSource("")
    out = mem_ds.CreateLayer("burn", lay.GetSpatialRef(), ogr.wkbUnknown)
    out.CreateField(ogr.FieldDefn("burn", ftype))
    lay.ResetReading()
    for feat in lay:
        g = feat.GetGeometryRef()
        if g is None or g.IsEmpty() or ogr.GT_Flatten(g.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
            continue
        f = ogr.Feature(out.GetLayerDefn())
        f.SetField("burn", value_of(feat))
        f.SetGeometry(g.Clone())
        out.CreateFeature(f)
    return mem_ds, out


def _burn(layer, raster: RasterInfo, windows: list, fill: float, options: list,
          gdal_type=gdal.GDT_Float32) -> list:
    """Rasterize ``layer`` with ``options`` into a (h, w) array per pixel window ``(x, y, w, h)`` of ``raster``
    (``fill`` where nothing burns). Reprojection is done by GDAL on the fly; memory is one window at a time."""
    out = []
    for x, y, w, h in windows:
        gt = list(raster.geotransform)
        gt[0], gt[3] = gdal.ApplyGeoTransform(raster.geotransform, x, y)
        mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal_type)
        mem.SetGeoTransform(gt)
        mem.SetProjection(raster.crs_wkt)
        mem.GetRasterBand(1).Fill(fill)
        gdal.RasterizeLayer(mem, [1], layer, options=options)
        out.append(mem.GetRasterBand(1).ReadAsArray())
        mem = None
    return out


@_reads_labels
def rasterize_windows(source: str, label_field: str, raster: RasterInfo, windows: list,
                      classes: Optional[list] = None, layer_name: Optional[str] = None, nodata: float = -1) -> list:
    """Burn polygon labels into a (h, w) array per pixel window of ``raster`` (the layer is read once).

    Classes burn as their index (0..K-1, ``nodata`` elsewhere); with
    ``classes=None`` the field's numeric value is burnt (regression).
    """
    ds, lay = open_layer(source, layer_name)
    if classes is None:
        return _burn(lay, raster, windows, nodata, [f"ATTRIBUTE={label_field}"])
    # each feature's class index, burnt in the layer's order (the last feature is on top) exactly as
    # rasterize_feature_ids burns its id: where polygons overlap, class and id come from the same one;
    # a class not in ``classes`` burns ``nodata`` (unlabelled)
    index = {str(name): i for i, name in enumerate(classes)}
    burn_ds, burn = _burn_copy(lay, ogr.OFTInteger, lambda f: index.get(str(f.GetField(label_field)), int(nodata)))
    return _burn(burn, raster, windows, nodata, ["ATTRIBUTE=burn"])


def rasterize_window(source: str, label_field: str, raster: RasterInfo, window, classes: Optional[list] = None,
                     layer_name: Optional[str] = None, nodata: float = -1) -> np.ndarray:
    """Burn polygon labels into a (h, w) array for one pixel window of ``raster`` (see :func:`rasterize_windows`)."""
    return rasterize_windows(source, label_field, raster, [window], classes, layer_name, nodata)[0]


@_reads_labels
def rasterize_feature_ids(source: str, raster: RasterInfo, windows: list, layer_name: Optional[str] = None) -> list:
    """Burn each feature's id (FID, as in ``LabelSet.feature_ids``) into a (h, w) int64 array per pixel window
    of ``raster`` (-1 outside every feature): which labelled feature each pixel of a mask belongs to."""
    ds, lay = open_layer(source, layer_name)
    ids, ids_lay = _burn_copy(lay, ogr.OFTInteger64, lambda f: f.GetFID())
    return [a.astype(np.int64) for a in _burn(ids_lay, raster, windows, -1, ["ATTRIBUTE=burn"], gdal.GDT_Float64)]


def extract_patches(reader: RasterReader, cols: np.ndarray, rows: np.ndarray, size: int,
                    feedback=None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``size``×``size`` patches centred on pixel positions.

    Returns ``(N, bands, size, size)`` float32 (raw values) and ``(N, size, size)``
    validity masks; patches reaching past the raster edge are padded and masked.
    The centre pixel of an even-sized patch is ``size // 2``.
    """
    n = len(cols)
    data = np.zeros((n, len(reader.bands), size, size), np.float32)
    valid = np.zeros((n, size, size), bool)
    half = size // 2
    for i, (c, r) in enumerate(zip(np.floor(cols).astype(int), np.floor(rows).astype(int))):
        data[i], valid[i] = reader.read(int(c) - half, int(r) - half, size, size)
        if feedback is not None and i % 256 == 0:
            feedback.progress(i / max(n, 1), f"reading patches {i}/{n}")
    return data, valid


def is_raster_source(source: str) -> bool:
    """True when ``source`` opens as a raster with GDAL (and not as a vector layer).

    A file, or a GDAL connection string such as a GeoPackage raster's ``GPKG:/data/x.gpkg:table``.
    """
    path = parse_vector_source(source)[0]
    if not os.path.exists(path):
        path = source  # not a file: perhaps a GDAL raster source string
        if "|" in source:
            return False
    try:
        ds = gdal.OpenEx(path, gdal.OF_RASTER)
    except RuntimeError:
        return False
    return ds is not None and ds.RasterCount > 0


MAX_RASTER_CLASSES = 255  # more distinct values than this in a label raster are a measurement, not classes


def check_class_raster(path: str, sample_px: int = 1_000_000) -> None:
    """Refuse a label raster that holds continuous values (a DTM, a reflectance) as classes: fractional values,
    or more than :data:`MAX_RASTER_CLASSES` distinct ones, in a sample of about ``sample_px`` pixels. Without
    this, every height became a class and training failed later with a misleading 'only 1 labelled feature'."""
    ds = gdal.Open(path)
    if ds is None:
        return  # reading the labels says why
    band = ds.GetRasterBand(1)
    step = max(1, int(np.ceil(np.sqrt(ds.RasterXSize * ds.RasterYSize / max(1, sample_px)))))
    w, h = max(1, ds.RasterXSize // step), max(1, ds.RasterYSize // step)
    vals = band.ReadAsArray(0, 0, ds.RasterXSize, ds.RasterYSize, buf_xsize=w, buf_ysize=h,
                            resample_alg=gdal.GRIORA_NearestNeighbour)
    if vals is None:
        return
    vals = np.asarray(vals).ravel()
    nodata = band.GetNoDataValue()
    keep = np.isfinite(vals) if vals.dtype.kind == "f" else np.ones(vals.shape, bool)
    if nodata is not None:
        keep &= vals != nodata
    vals = vals[keep]
    if vals.size == 0:
        return
    name = os.path.basename(path)
    fractional = vals.dtype.kind == "f" and bool(np.any(vals != np.round(vals)))
    distinct = np.unique(vals)
    if fractional or len(distinct) > MAX_RASTER_CLASSES:
        lo, hi = float(vals.min()), float(vals.max())
        why = "fractional values" if fractional else f"{len(distinct)} different values"
        raise InputError(f"The label raster '{name}' holds continuous values ({why}, from {lo:.4g} to {hi:.4g}), "
                         "not classes.",
                         "To learn these values choose Task = regression; for classes use a raster of class numbers "
                         "(or points/polygons with a class field).")


class LabelRaster:
    """A label or target raster, resampled on the fly onto the training raster's grid.

    Class rasters use nearest-neighbour, continuous targets bilinear
    resampling; another CRS or pixel size is handled by a GDAL warped VRT, so
    reading a window costs only that window. Class values become indices
    0..K-1 (-1 where there is no label); targets are float with NaN there.
    """

    def __init__(self, path: str, raster: RasterInfo, categorical: bool):
        self.path, self.raster, self.categorical = path, raster, categorical
        self._vsi: list = []
        try:
            self._open(path, raster, categorical)
        except BaseException as exc:
            self.close()  # the in-memory VRTs made so far
            if isinstance(exc, RuntimeError):
                raise labels_error(path, exc) from exc
            raise
        self.values: list = []  # raw class values, in class index order
        self._lut: Optional[dict] = None

    def _open(self, path: str, raster: RasterInfo, categorical: bool) -> None:
        src = open_raster(path)
        same = (src.RasterXSize, src.RasterYSize) == (raster.width, raster.height) and \
            all(abs(a - b) < 1e-9 * max(1.0, abs(b)) for a, b in zip(src.GetGeoTransform(), raster.geotransform)) and \
            (not raster.crs_wkt or not src.GetProjection() or srs_from_wkt(src.GetProjection()).IsSame(srs_from_wkt(raster.crs_wkt)))
        grid_path = path if same else self._onto_grid(src, raster, "near" if categorical else "bilinear")
        self.reader = RasterReader(grid_path, [1], name=path)
        cats = src.GetRasterBand(1).GetCategoryNames()
        if not cats:
            gdal.Info(src, format="json")  # loads the PAM sidecar (GDAL 3.6 quirk)
            cats = src.GetRasterBand(1).GetCategoryNames()
        self.category_names = list(cats or [])
        self.nodata = src.GetRasterBand(1).GetNoDataValue()
        ct = src.GetRasterBand(1).GetColorTable()
        self._colors = {i: "#{:02x}{:02x}{:02x}".format(*ct.GetColorEntry(i)[:3])
                        for i in range(ct.GetCount())} if ct is not None else {}

    def _temp(self, name: str) -> str:
        self._vsi.append(f"/vsimem/geoml_labels_{id(self)}_{name}.vrt")
        return self._vsi[-1]

    def _onto_grid(self, src, raster: RasterInfo, alg: str) -> str:
        """A VRT of ``src`` resampled onto ``raster``'s pixel grid."""
        gt = raster.geotransform
        if gt[2] == 0 and gt[4] == 0 and gt[1] > 0 and gt[5] < 0:  # north-up: GDAL warps onto it directly
            xmin, ymin, xmax, ymax = raster.extent
            gdal.Warp(self._temp("grid"), src, format="VRT", dstSRS=raster.crs_wkt or None,
                      outputBounds=(xmin, ymin, xmax, ymax), width=raster.width, height=raster.height,
                      resampleAlg=alg)
            return self._vsi[-1]
        # a rotated or south-up grid, which GDAL does not warp onto: warp in the raster's pixel coordinates
        # (col, -row), where its grid is north-up, after moving the labels into the raster's CRS if need be
        if raster.crs_wkt and src.GetProjection() and not srs_from_wkt(src.GetProjection()).IsSame(
                srs_from_wkt(raster.crs_wkt)):
            src = gdal.Warp(self._temp("crs"), src, format="VRT", dstSRS=raster.crs_wkt, resampleAlg=alg)
        inv = gdal.InvGeoTransform(gt)
        s = src.GetGeoTransform()
        col = [inv[0] + inv[1] * s[0] + inv[2] * s[3], inv[1] * s[1] + inv[2] * s[4], inv[1] * s[2] + inv[2] * s[5]]
        row = [inv[3] + inv[4] * s[0] + inv[5] * s[3], inv[4] * s[1] + inv[5] * s[4], inv[4] * s[2] + inv[5] * s[5]]
        pixels = self._temp("pixels")
        pix = gdal.Translate(pixels, src, format="VRT")
        pix.SetGeoTransform(tuple(col + [-v for v in row]))
        pix.SetSpatialRef(None)
        pix = None  # written to /vsimem
        gdal.Warp(self._temp("grid"), pixels, format="VRT", outputBounds=(0, -raster.height, raster.width, 0),
                  width=raster.width, height=raster.height, resampleAlg=alg)
        return self._vsi[-1]

    def set_classes(self, values: list) -> None:
        self.values = list(values)
        self._lut = {v: i for i, v in enumerate(self.values)}

    def class_names(self) -> list:
        cats = self.category_names
        return [cats[v] if 0 <= v < len(cats) and cats[v] else str(v) for v in self.values]

    def class_colors(self) -> list:
        """'#rrggbb' of each class from the raster's colour table (None where it has none)."""
        return [self._colors.get(v) for v in self.values]

    def read_classes(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        data, valid = self.reader.read(x, y, w, h)
        raw = data[0].astype(np.int64)
        out = np.full(raw.shape, -1, np.int64)
        for v, i in (self._lut or {}).items():
            out[(raw == v) & valid] = i
        return out

    def read_target(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        data, valid = self.reader.read(x, y, w, h)
        return np.where(valid, data[0], np.nan).astype(np.float32)

    def close(self) -> None:
        if getattr(self, "reader", None) is not None:
            self.reader.close()
        for p in reversed(self._vsi):
            gdal.Unlink(p)
        self._vsi = []


@_reads_labels
def read_raster_labels(path: str, raster: RasterInfo, task: str = "classification", max_samples: int = 2000,
                       group_cell: int = 64, seed: int = 0, reader: Optional[RasterReader] = None,
                       feedback=None) -> tuple[LabelSet, LabelRaster]:
    """Sample labelled pixel positions from a class or target raster.

    Classes: up to ``max_samples // K`` positions per class (so rare classes
    are not drowned); targets: up to ``max_samples`` positions. Positions on
    the input's nodata are skipped. ``feature_ids`` group positions by
    ``group_cell``-pixel cells, so a validation split keeps whole areas apart.
    Returns the label set and the open :class:`LabelRaster` (close it).
    """
    categorical = task != "regression"
    lab = LabelRaster(path, raster, categorical)
    rng = np.random.default_rng(seed)
    per_block: dict = {}
    skipped: Counter = Counter()
    n_labelled = 0
    rows_per_block = max(1, min(raster.height, 4_000_000 // max(raster.width, 1)))
    for y0 in range(0, raster.height, rows_per_block):
        h = min(rows_per_block, raster.height - y0)
        data, lvalid = lab.reader.read(0, y0, raster.width, h)
        if reader is not None:
            _, ivalid = reader.read(0, y0, raster.width, h)
            skipped["on nodata pixels"] += int((lvalid & ~ivalid).sum())
            lvalid &= ivalid
        vals = data[0]
        n_labelled += int(lvalid.sum())
        keys = np.unique(vals[lvalid]).astype(np.int64).tolist() if categorical else [None]
        for key in keys:
            sel = lvalid & (vals == key) if categorical else lvalid
            rr, cc = np.nonzero(sel)
            if len(rr) == 0:
                continue
            if len(rr) > max_samples:
                pick = rng.choice(len(rr), max_samples, replace=False)
                rr, cc = rr[pick], cc[pick]
            per_block.setdefault(key, []).append((rr + y0, cc, vals[rr, cc]))
        if feedback is not None:
            feedback.progress(min(1.0, (y0 + h) / raster.height), "reading the label raster")
    if not per_block:
        lab.close()
        raise InputError("The label raster has no labelled pixels over valid pixels of the input raster.",
                         "Check that it overlaps the input raster and that its nodata value is set correctly.")
    keys = sorted(per_block)
    if categorical and 0 in keys and lab.nodata is None and feedback is not None:
        feedback.log("The label raster has no nodata value, so its pixels of value 0 are a class. If 0 means "
                     "unlabelled, give the raster nodata 0 (e.g. Raster ▸ Conversion ▸ Translate with nodata 0).")
    quota = max_samples // len(keys) if categorical else max_samples
    rows_l, cols_l, vals_l = [], [], []
    for i, key in enumerate(keys):
        rr = np.concatenate([b[0] for b in per_block[key]])
        cc = np.concatenate([b[1] for b in per_block[key]])
        vv = np.concatenate([b[2] for b in per_block[key]])
        if len(rr) > quota:
            pick = rng.choice(len(rr), quota, replace=False)
            rr, cc, vv = rr[pick], cc[pick], vv[pick]
        rows_l.append(rr)
        cols_l.append(cc)
        vals_l.append(np.full(len(rr), i, np.int64) if categorical else vv.astype(np.float64))
    rows_a = np.concatenate(rows_l).astype(float) + 0.5
    cols_a = np.concatenate(cols_l).astype(float) + 0.5
    values = np.concatenate(vals_l)
    if categorical:
        lab.set_classes(keys)
    cells_x = raster.width // max(1, group_cell) + 1
    groups = (rows_a // group_cell).astype(np.int64) * cells_x + (cols_a // group_cell).astype(np.int64)
    labels = LabelSet(cols_a, rows_a, values, lab.class_names() if categorical else [], "raster",
                      {k: v for k, v in skipped.items() if v}, groups, labelled_pixels=n_labelled)
    return labels, lab

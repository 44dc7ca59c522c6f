"""CRS checks and conversions for placing generated tiles on the map.

* :func:`check_point_valid` refuses points outside the area where a CRS is
  defined (its EPSG area of use), with a message naming the CRS and its area.
* :func:`transform_point` / :func:`transform_extent` move coordinates between
  CRSs with traditional GIS axis order (x = easting/longitude).
* :func:`ground_metres_per_unit` measures how many metres on the ground one
  CRS unit spans at a place (great-circle distance of a small step), so a
  model's pixel size can be carried into another CRS at the right scale.
"""
from __future__ import annotations

import math
from typing import Optional

from osgeo import osr

from ..errors import InputError
from .io import srs_from_wkt

_WGS84 = None


def wgs84() -> osr.SpatialReference:
    global _WGS84
    if _WGS84 is None:
        _WGS84 = osr.SpatialReference()
        _WGS84.ImportFromEPSG(4326)
        _WGS84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return _WGS84


def crs_name(wkt: str) -> str:
    srs = srs_from_wkt(wkt)
    code = srs.GetAuthorityCode(None)
    name = srs.GetName() or "custom CRS"
    return f"{name} (EPSG:{code})" if code else name


def is_local(wkt: str) -> bool:
    """A CRS without a position on Earth (local engineering CRS, unknown units)."""
    if not wkt:
        return False
    srs = srs_from_wkt(wkt)
    return bool(srs.IsLocal()) or not (srs.IsProjected() or srs.IsGeographic())


def same_crs(a: str, b: str) -> bool:
    if not a or not b:
        return a == b
    return bool(srs_from_wkt(a).IsSame(srs_from_wkt(b)))


def _transform(src_wkt: str, dst_wkt: str, x: float, y: float) -> tuple[float, float]:
    if same_crs(src_wkt, dst_wkt):
        return float(x), float(y)
    for wkt in (src_wkt, dst_wkt):
        if is_local(wkt):
            raise InputError(f"{crs_name(wkt)} is a local coordinate system with no position on Earth, so "
                             "coordinates cannot be transformed into or out of it.",
                             "Give the point or extent in that same coordinate system.")
    src = srs_from_wkt(src_wkt)
    dst = srs_from_wkt(dst_wkt) if dst_wkt else wgs84()
    try:
        tx, ty, _ = osr.CoordinateTransformation(src, dst).TransformPoint(float(x), float(y))
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"The point ({x:g}, {y:g}) cannot be transformed from {crs_name(src_wkt)} "
                         f"to {crs_name(dst_wkt) if dst_wkt else 'WGS 84'}: {exc}") from exc
    if not (math.isfinite(tx) and math.isfinite(ty)):
        raise InputError(f"The point ({x:g}, {y:g}) has no position in {crs_name(dst_wkt) if dst_wkt else 'WGS 84'}.")
    return tx, ty


def to_lonlat(wkt: str, x: float, y: float) -> tuple[float, float]:
    if srs_from_wkt(wkt).IsGeographic() and same_crs(wkt, wgs84().ExportToWkt()):
        return float(x), float(y)
    return _transform(wkt, wgs84().ExportToWkt(), x, y)


def area_of_use(wkt: str) -> Optional[tuple[float, float, float, float]]:
    """(west, south, east, north) in degrees, or None for a CRS without one."""
    srs = srs_from_wkt(wkt)
    aou = srs.GetAreaOfUse()
    code = srs.GetAuthorityCode(None)
    if aou is None and code and (srs.GetAuthorityName(None) or "").upper() == "EPSG":
        full = osr.SpatialReference()  # WKT1 carries no area of use; the EPSG entry does
        if full.ImportFromEPSG(int(code)) == 0:
            aou = full.GetAreaOfUse()
    if aou is None or aou.west_lon_degree == -1000:
        return None
    return aou.west_lon_degree, aou.south_lat_degree, aou.east_lon_degree, aou.north_lat_degree


def _inside(lon: float, lat: float, area, tol: float = 2.0) -> bool:
    """Inside the area of use, with a tolerance: projections are often used a little past it."""
    w, s, e, n = area
    if not (s - tol <= lat <= n + tol):
        return False
    if w <= e:
        return w - tol <= lon <= e + tol
    return lon >= w - tol or lon <= e + tol  # area crossing the antimeridian


def check_point_valid(wkt: str, x: float, y: float, what: str = "The point") -> tuple[float, float]:
    """(lon, lat) of a point, or an :class:`InputError` when the CRS is not valid there."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"{what} has no valid coordinates.")
    if is_local(wkt):
        return math.nan, math.nan  # nothing to check against
    srs = srs_from_wkt(wkt)
    if srs.IsGeographic() and not (-180.0 <= x <= 360.0 and -90.0 <= y <= 90.0):
        raise InputError(f"{what} ({x:g}, {y:g}) is not a longitude/latitude in {crs_name(wkt)}.")
    lon, lat = to_lonlat(wkt, x, y)
    back = _transform(wgs84().ExportToWkt(), wkt, lon, lat) if not srs.IsGeographic() else (x, y)
    tol = 1e-3 * max(1.0, abs(x), abs(y)) ** 0.5
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0) or math.hypot(back[0] - x, back[1] - y) > tol:
        raise InputError(f"{what} ({x:g}, {y:g}) lies outside the Earth as {crs_name(wkt)} maps it.",
                         "Check the coordinates and the CRS they are given in.")
    area = area_of_use(wkt)
    if area is not None and not _inside(lon, lat, area):
        w, s, e, n = area
        raise InputError(
            f"{what} ({x:g}, {y:g}) lies at lon {lon:.2f}°, lat {lat:.2f}°, outside the area where "
            f"{crs_name(wkt)} is valid (lon {w:g}° to {e:g}°, lat {s:g}° to {n:g}°).",
            "Pick a point inside that area, or generate in a CRS that covers the place.",
        )
    return lon, lat


def transform_point(x: float, y: float, src_wkt: str, dst_wkt: str) -> tuple[float, float]:
    """Transform after checking that the point is valid in both CRSs."""
    check_point_valid(src_wkt, x, y)
    tx, ty = _transform(src_wkt, dst_wkt, x, y)
    check_point_valid(dst_wkt, tx, ty)
    return tx, ty


def transform_extent(extent, src_wkt: str, dst_wkt: str, densify: int = 21) -> tuple[float, float, float, float]:
    """Bounding box in ``dst`` of an extent in ``src`` (edges densified)."""
    xmin, ymin, xmax, ymax = extent
    if same_crs(src_wkt, dst_wkt):
        return float(xmin), float(ymin), float(xmax), float(ymax)
    for cx, cy in ((xmin, ymin), (xmax, ymax), ((xmin + xmax) / 2, (ymin + ymax) / 2)):
        check_point_valid(src_wkt, cx, cy, "The extent")
    xs, ys = [], []
    for i in range(densify):
        t = i / (densify - 1)
        for px, py in ((xmin + t * (xmax - xmin), ymin), (xmin + t * (xmax - xmin), ymax),
                       (xmin, ymin + t * (ymax - ymin)), (xmax, ymin + t * (ymax - ymin))):
            tx, ty = _transform(src_wkt, dst_wkt, px, py)
            xs.append(tx)
            ys.append(ty)
    return min(xs), min(ys), max(xs), max(ys)


def ground_metres_per_unit(wkt: str, x: float, y: float, axis: str = "x") -> float:
    """Metres on the WGS 84 ellipsoid per CRS unit along ``axis`` ('x' or 'y') at ``(x, y)``.

    Both ends of a small step are projected into an azimuthal equidistant
    projection centred on the point, where distances from the centre are true.
    """
    srs = srs_from_wkt(wkt)
    step = 1e-4 if srs.IsGeographic() else 10.0 / max(srs.GetLinearUnits(), 1e-12)
    lon0, lat0 = to_lonlat(wkt, x, y)
    lon1, lat1 = to_lonlat(wkt, x + step, y) if axis == "x" else to_lonlat(wkt, x, y + step)
    aeqd = osr.SpatialReference()
    aeqd.ImportFromProj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +ellps=WGS84 +units=m +no_defs")
    aeqd.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ex, ey, _ = osr.CoordinateTransformation(wgs84(), aeqd).TransformPoint(lon1, lat1)
    return math.hypot(ex, ey) / step

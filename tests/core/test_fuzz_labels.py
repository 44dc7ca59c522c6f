"""Fuzzing label files (seeded, a few seconds): corrupt GeoPackages and GeoJSON, and geometries that are empty,
NULL, invalid or self-intersecting. Reading labels (points sampled, polygons rasterised) ends in a GeoML error
naming the file or in correct labels: never a GDAL/OGR traceback."""
import json
from pathlib import Path

import numpy as np
import pytest

from geoml_plugin.core.errors import GeoMLError, InputError
from geoml_plugin.core.raster.io import RasterReader
from geoml_plugin.core.raster.labels import rasterize_windows, read_raster_labels, read_vector_labels
from geoml_plugin.core.sampledata import CLASS_NAMES

WINDOW = [(0, 0, 128, 128)]


@pytest.fixture(scope="module")
def grid(scene):
    with RasterReader(scene.image) as r:
        return r.info


def _read(source, info) -> str:
    """'ok' when labels read (points) and burn (polygons), else the GeoML error class; anything else fails."""
    try:
        ls = read_vector_labels(str(source), "class_name", info, classes=list(CLASS_NAMES))
        assert len(ls) > 0 and ls.values.min() >= 0
        burnt = rasterize_windows(str(source), "class_name", info, WINDOW, classes=list(CLASS_NAMES))[0]
        assert burnt.shape == (128, 128) and burnt.max() < len(CLASS_NAMES)
    except GeoMLError as exc:
        assert Path(str(source).split("|")[0]).name in str(exc) or "labels" in str(exc), str(exc)
        return type(exc).__name__
    return "ok"


@pytest.mark.parametrize("which", ["points", "polygons"])
def test_truncated_geopackages(scene, grid, tmp_path, which):
    raw = Path(getattr(scene, which)).read_bytes()
    rng = np.random.default_rng(18)
    cuts = sorted({0, 1, 100, 1024, 4096, len(raw) // 2, len(raw) - 4096, len(raw) - 1}
                  | set(rng.integers(0, len(raw), 12).tolist()))
    outcomes = {}
    for cut in cuts:
        bad = tmp_path / f"cut{cut}.gpkg"
        bad.write_bytes(raw[:cut])
        outcomes[cut] = _read(bad, grid)
    assert set(outcomes.values()) <= {"ok", "InputError"}, outcomes
    assert outcomes[0] == "InputError"


@pytest.mark.parametrize("which", ["points", "polygons"])
def test_random_bytes_in_geopackages(scene, grid, tmp_path, which):
    raw = Path(getattr(scene, which)).read_bytes()
    rng = np.random.default_rng(7)
    seen = set()
    for i in range(25):
        data = bytearray(raw)
        for pos in rng.integers(0, len(raw), int(rng.integers(1, 40))):
            data[pos] = int(rng.integers(0, 256))
        bad = tmp_path / f"bytes{i}.gpkg"
        bad.write_bytes(bytes(data))
        seen.add(_read(bad, grid))
    assert seen <= {"ok", "InputError"} and seen


def _geojson(path, features) -> Path:
    doc = {"type": "FeatureCollection",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}},
           "features": [{"type": "Feature", "properties": {"class_name": name}, "geometry": geom}
                        for name, geom in features]}
    Path(path).write_text(json.dumps(doc))
    return Path(path)


X0, Y0 = 500000.0, 5100000.0  # the scene's top-left corner (EPSG:32632, 10 m pixels)


def _box(c0, r0, c1, r1):
    x0, x1, y0, y1 = X0 + 10 * c0, X0 + 10 * c1, Y0 - 10 * r0, Y0 - 10 * r1
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


GOOD = ("Water", _box(10, 10, 30, 30))
ODD_GEOMETRIES = {
    "null": None,
    "empty polygon": {"type": "Polygon", "coordinates": []},
    "empty ring": {"type": "Polygon", "coordinates": [[]]},
    "empty point": {"type": "Point", "coordinates": []},
    "empty multipolygon": {"type": "MultiPolygon", "coordinates": []},
    "bow tie (self-intersecting)": {"type": "Polygon", "coordinates": [[[X0 + 400, Y0 - 400], [X0 + 800, Y0 - 800],
                                                                         [X0 + 800, Y0 - 400], [X0 + 400, Y0 - 800],
                                                                         [X0 + 400, Y0 - 400]]]},
    "unclosed ring": {"type": "Polygon", "coordinates": [[[X0 + 400, Y0 - 400], [X0 + 800, Y0 - 400],
                                                          [X0 + 800, Y0 - 800]]]},
    "two-point ring": {"type": "Polygon", "coordinates": [[[X0 + 400, Y0 - 400], [X0 + 800, Y0 - 400]]]},
    "zero area": {"type": "Polygon", "coordinates": [[[X0 + 400, Y0 - 400], [X0 + 800, Y0 - 400],
                                                      [X0 + 400, Y0 - 400]]]},
    "hole outside its shell": {"type": "Polygon", "coordinates": [_box(40, 40, 60, 60)["coordinates"][0],
                                                                  _box(80, 80, 90, 90)["coordinates"][0]]},
    "huge coordinates": {"type": "Polygon", "coordinates": [[[-1e300, -1e300], [1e300, -1e300], [1e300, 1e300],
                                                             [-1e300, -1e300]]]},
    "line": {"type": "LineString", "coordinates": [[X0, Y0], [X0 + 500, Y0 - 500]]},
    "collection": {"type": "GeometryCollection", "geometries": [_box(40, 40, 50, 50)]},
    "wrong coordinates type": {"type": "Polygon", "coordinates": "here"},
    "unknown type": {"type": "Hexagon", "coordinates": [1, 2]},
}


@pytest.mark.parametrize("what", sorted(ODD_GEOMETRIES))
def test_odd_geometry_beside_a_good_polygon_gives_the_good_labels(grid, tmp_path, what):
    src = _geojson(tmp_path / "odd.geojson", [GOOD, ("Forest", ODD_GEOMETRIES[what])])
    outcome = _read(src, grid)
    if outcome == "ok":  # the good polygon's labels are all there, whatever became of the odd one
        burnt = rasterize_windows(str(src), "class_name", grid, WINDOW, classes=list(CLASS_NAMES))[0]
        assert (burnt[10:30, 10:30] == 0).all()
        ls = read_vector_labels(str(src), "class_name", grid, classes=list(CLASS_NAMES))
        water = ls.values == 0
        assert water.sum() > 0 and (ls.cols[water] >= 10).all() and (ls.cols[water] < 30).all()
    else:
        assert outcome == "InputError"


@pytest.mark.parametrize("what", sorted(ODD_GEOMETRIES))
def test_only_odd_geometries_give_a_message(grid, tmp_path, what):
    src = _geojson(tmp_path / "only.geojson", [("Forest", ODD_GEOMETRIES[what])] * 2)
    assert _read(src, grid) in ("ok", "InputError")


def test_corrupt_geojson_text(grid, tmp_path):
    text = _geojson(tmp_path / "good.geojson", [GOOD, ("Forest", _box(40, 40, 60, 60))]).read_text()
    rng = np.random.default_rng(9)
    variants = [text[:n] for n in sorted(set(rng.integers(0, len(text), 15).tolist()))]
    for _ in range(15):
        chars = list(text)
        for pos in rng.integers(0, len(chars), 3):
            chars[pos] = chr(int(rng.choice([0x7B, 0x7D, 0x5B, 0x5D, 0x22, 0x2C, 0x3A, 0x30, 0x41, 0xE9])))
        variants.append("".join(chars))
    variants += ["", "null", "[]", "{}", '{"type": "FeatureCollection", "features": 5}', "\x00" * 64]
    seen = set()
    for i, v in enumerate(variants):
        bad = tmp_path / f"bad{i}.geojson"
        bad.write_text(v)
        seen.add(_read(bad, grid))
    assert seen <= {"ok", "InputError"} and "InputError" in seen


def test_a_damaged_label_raster_is_named(scene, grid, tmp_path):
    raw = Path(scene.landcover).read_bytes()
    bad = tmp_path / "classes.tif"
    bad.write_bytes(raw[: len(raw) - 200])
    with pytest.raises(InputError, match="classes.tif"):
        read_raster_labels(str(bad), grid)


def test_a_damaged_label_raster_on_another_grid_is_named_not_its_warped_copy(grid, tmp_path):
    """A label raster on another grid is read through an in-memory warped VRT; a read error still names the
    user's file."""
    from osgeo import gdal, osr

    path = tmp_path / "coarse_classes.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 1, gdal.GDT_Byte,
                                              ["TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((X0, 20.0, 0.0, Y0, 0.0, -20.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).WriteArray(np.random.default_rng(0).integers(1, 5, (64, 64)).astype(np.uint8))
    ds = None
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"Cannot read .* of '.*coarse_classes\.tif'") as info:
        read_raster_labels(str(path), grid)
    assert "vsimem" not in str(info.value)

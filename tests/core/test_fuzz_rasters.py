"""Fuzzing input rasters (seeded, a few seconds): truncated GeoTIFFs, wrong tile offsets, damaged tiles and
overviews, zero-size files. Each ends in a GeoML error naming the file or in a correct prediction: never a
traceback from GDAL (also not from the read-ahead thread), never a file left behind."""
import struct
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from geoml_plugin.core.errors import GeoMLError, InputError
from geoml_plugin.core.predict import PredictConfig, run_predict
from geoml_plugin.core.raster.io import RasterReader
from geoml_plugin.core.raster.tiling import prefetch
from tests.conftest import leftovers

gdal.UseExceptions()


def _tiled(path, size=64, bands=4, block=16, overviews=False) -> str:
    """A small band-interleaved, tiled, DEFLATE GeoTIFF of the sample scene's kind of values (uint16)."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, gdal.GDT_UInt16,
                                              ["TILED=YES", f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}",
                                               "COMPRESS=DEFLATE", "INTERLEAVE=BAND"])
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0))
    rng = np.random.default_rng(0)
    for b in range(bands):
        ds.GetRasterBand(b + 1).WriteArray(rng.integers(200, 4000, (size, size)).astype(np.uint16))
    if overviews:
        ds.BuildOverviews("AVERAGE", [2, 4])
    ds = None
    return str(path)


def _ifds(raw: bytes):
    """(offset of the TileOffsets array, number of tiles) of each IFD of a little-endian classic TIFF."""
    assert raw[:4] == b"II*\x00"
    out, at = [], struct.unpack_from("<I", raw, 4)[0]
    while at:
        (n,) = struct.unpack_from("<H", raw, at)
        for i in range(n):
            tag, typ, count, value = struct.unpack_from("<HHII", raw, at + 2 + 12 * i)
            if tag == 324:  # TileOffsets
                assert typ == 4
                out.append((value if count > 1 else at + 2 + 12 * i + 8, count))
        at = struct.unpack_from("<I", raw, at + 2 + 12 * n)[0]
    return out


def _predict(bad, model, out_dir) -> str:
    """'ok' for a complete prediction, else the GeoML error class; checks that nothing is left behind."""
    out = out_dir / "pred.tif"
    try:
        run_predict(PredictConfig(input_path=str(bad), model_path=model, output_path=str(out), device="cpu"))
    except GeoMLError as exc:
        assert Path(bad).name in str(exc), str(exc)
        assert not out.exists() and leftovers(out_dir) == [], str(exc)
        return type(exc).__name__
    assert gdal.Open(str(out)).RasterXSize > 0 and leftovers(out_dir) == []
    out.unlink()
    return "ok"


def test_truncated_geotiffs(sample_model, tmp_path, out_dir):
    src = _tiled(tmp_path / "src.tif")
    raw = Path(src).read_bytes()
    rng = np.random.default_rng(18)
    cuts = sorted({0, 1, 4, 8, 100, len(raw) // 2, len(raw) - 1} | set(rng.integers(0, len(raw), 25).tolist()))
    outcomes = {}
    for cut in cuts:
        bad = tmp_path / "cut.tif"
        bad.write_bytes(raw[:cut])
        outcomes[cut] = _predict(bad, sample_model, out_dir)
    assert set(outcomes.values()) <= {"InputError", "RasterError"}, outcomes
    assert outcomes[len(raw) - 1] == "InputError"  # opens, then a tile cannot be read: named in a message


def test_truncated_tile_message_names_file_and_pixels(sample_model, tmp_path, out_dir):
    src = _tiled(tmp_path / "src.tif")
    raw = Path(src).read_bytes()
    bad = tmp_path / "half.tif"
    bad.write_bytes(raw[: len(raw) - 4000])
    with pytest.raises(InputError, match=r"Cannot read the .* window at column .* of '.*half\.tif'.*truncated or damaged"):
        run_predict(PredictConfig(input_path=str(bad), model_path=sample_model, output_path=str(out_dir / "p.tif")))
    assert list(out_dir.iterdir()) == []


def test_wrong_tile_offsets(sample_model, tmp_path, out_dir):
    src = _tiled(tmp_path / "src.tif")
    raw = Path(src).read_bytes()
    (at, count), = _ifds(raw)
    rng = np.random.default_rng(5)
    seen = set()
    for i in range(30):
        data = bytearray(raw)
        for t in rng.integers(0, count, int(rng.integers(1, 4))):
            value = int(rng.choice([0, 8, len(raw) + 10, 2**32 - 1, int(rng.integers(0, len(raw)))]))
            struct.pack_into("<I", data, at + 4 * int(t), value)
        bad = tmp_path / f"offsets{i}.tif"
        bad.write_bytes(bytes(data))
        seen.add(_predict(bad, sample_model, out_dir))
        bad.unlink()
    assert seen <= {"ok", "InputError", "RasterError"} and "InputError" in seen


def test_random_bytes_in_tiles(sample_model, tmp_path, out_dir):
    src = _tiled(tmp_path / "src.tif")
    raw = Path(src).read_bytes()
    (at, count), = _ifds(raw)
    first = struct.unpack_from("<I", raw, at)[0]
    rng = np.random.default_rng(6)
    seen = set()
    for i in range(15):
        data = bytearray(raw)
        for pos in rng.integers(first, len(raw), 20):
            data[pos] = int(rng.integers(0, 256))
        bad = tmp_path / f"bytes{i}.tif"
        bad.write_bytes(bytes(data))
        seen.add(_predict(bad, sample_model, out_dir))
        bad.unlink()
    assert seen <= {"ok", "InputError"} and "InputError" in seen


def test_damaged_overview_fails_band_statistics_with_a_message(tmp_path):
    src = _tiled(tmp_path / "ovr.tif", size=128, bands=1, overviews=True)
    raw = bytearray(Path(src).read_bytes())
    ifds = _ifds(bytes(raw))
    assert len(ifds) == 3  # the image and two overviews
    for at, count in ifds[1:]:
        for t in range(count):
            struct.pack_into("<I", raw, at + 4 * t, len(raw) + 100)
    Path(src).write_bytes(bytes(raw))
    with RasterReader(src) as r:
        assert r.read(0, 0, 128, 128)[1].all()  # full resolution is intact
        with pytest.raises(InputError, match=r"overview / band statistics of '.*ovr\.tif'"):
            r.band_statistics(max_pixels=1000)


@pytest.mark.parametrize("content", [b"", b"II*\x00", b"II*\x00\x08\x00\x00\x00\x00\x00",
                                     b'<VRTDataset rasterXSize="0" rasterYSize="0"></VRTDataset>'])
def test_zero_size_rasters(sample_model, tmp_path, out_dir, content):
    bad = tmp_path / ("zero.vrt" if content.startswith(b"<") else "zero.tif")
    bad.write_bytes(content)
    assert _predict(bad, sample_model, out_dir) in ("InputError", "RasterError")


def test_read_ahead_thread_hands_the_error_over_and_stops(tmp_path):
    """A read failing in the read-ahead thread arrives in the job as the InputError naming the file, and the
    thread ends: nothing keeps reading the damaged file after the job has failed."""
    import threading

    src = _tiled(tmp_path / "src.tif", bands=1)
    raw = Path(src).read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(raw[: len(raw) // 2])  # the first tiles are whole, the later ones cut
    reads = []
    with RasterReader(str(bad)) as r:
        def windows():
            for y in range(0, 64, 16):
                for x in range(0, 64, 16):
                    reads.append((x, y))
                    yield r.read(x, y, 16, 16)

        got = 0
        with pytest.raises(InputError, match="cut.tif"):
            for _ in prefetch(windows(), depth=2):
                got += 1
        assert 0 < got < 16
    n = len(reads)
    assert not any(t.name == "geoml-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(reads) == n

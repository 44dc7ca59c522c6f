import numpy as np
import pytest

from geoml_plugin.core.raster.tiling import dense_tiles, prefetch, window_lattice, window_tiles


@pytest.mark.parametrize("w,h,tile,ov", [(100, 70, 32, 4), (256, 256, 64, 16), (31, 200, 40, 0), (5, 5, 64, 16)])
def test_dense_tile_cores_partition_the_raster(w, h, tile, ov):
    cover = np.zeros((h, w), int)
    for t in dense_tiles(w, h, tile, ov):
        assert t.read.w == tile and t.read.h == tile
        dx, dy = t.core_offset
        assert dx == ov and dy == ov  # every kept pixel is ≥ overlap from the tile edge
        cover[t.core.y : t.core.y + t.core.h, t.core.x : t.core.x + t.core.w] += 1
    assert (cover == 1).all()


def test_dense_tiles_reject_overlap_too_large():
    with pytest.raises(ValueError):
        dense_tiles(10, 10, 8, 4)


@pytest.mark.parametrize("w,h,patch,step,core", [(100, 70, 16, 4, 32), (64, 64, 64, 16, 512), (50, 33, 8, 8, 16),
                                                 (5, 7, 64, 8, 512), (130, 90, 33, 3, 40)])
def test_window_tiles_partition_the_raster_on_one_lattice(w, h, patch, step, core):
    corner, anchor = window_lattice(patch, step)
    cover = np.zeros((h, w), int)
    for t in window_tiles(w, h, patch, step, core=core):
        cover[t.out.y : t.out.y + t.out.h, t.out.x : t.out.x + t.out.w] += 1
        assert t.read.w == (t.nx - 1) * step + patch and t.read.h == (t.ny - 1) * step + patch
        assert (t.read.x - corner) % step == 0 and (t.read.y - corner) % step == 0  # one lattice for all tiles
        fx, fy = t.first  # the pixel the first window stands for: patch // 2 from its corner
        assert fx == t.read.x + patch // 2 - t.out.x and fy == t.read.y + patch // 2 - t.out.y
        # every output pixel lies between the first and the last window's pixel, in x and in y
        assert fx <= 0 and fx + (t.nx - 1) * step >= t.out.w - 1
        assert fy <= 0 and fy + (t.ny - 1) * step >= t.out.h - 1
    assert (cover == 1).all()


def test_prefetch_preserves_order_and_reraises():
    assert list(prefetch(iter(range(20)), depth=3)) == list(range(20))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(broken()))


def test_prefetch_stops_producer_when_consumer_stops():
    produced = []

    def gen():
        for i in range(1000):
            produced.append(i)
            yield i

    for i in prefetch(gen(), depth=2):
        if i == 3:
            break
    assert len(produced) < 20


@pytest.mark.parametrize("w,h,tile,ov,align", [(100, 70, 40, 4, 16), (300, 200, 256, 16, 16), (128, 128, 128, 8, 16),
                                               (257, 33, 64, 8, 32), (5, 5, 64, 16, 16)])
def test_aligned_tiles_start_on_the_pooling_grid_and_still_partition_the_raster(w, h, tile, ov, align):
    cover = np.zeros((h, w), int)
    for t in dense_tiles(w, h, tile, ov, align, trim=True):
        assert t.read.x % align == 0 and t.read.y % align == 0  # pooled like one pass over the raster
        dx, dy = t.core_offset
        assert min(dx, dy) >= ov
        assert all(n == tile or n % align == 0 for n in (t.read.w, t.read.h)) and max(t.read.w, t.read.h) <= tile
        for lo, core, rw, n in ((t.read.x, t.core.x + t.core.w, t.read.w, w), (t.read.y, t.core.y + t.core.h, t.read.h, h)):
            assert lo + rw - core >= ov or lo + rw >= n  # context past the core, or the tile reaches the raster edge
        cover[t.core.y : t.core.y + t.core.h, t.core.x : t.core.x + t.core.w] += 1
    assert (cover == 1).all()

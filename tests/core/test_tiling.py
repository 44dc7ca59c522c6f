import numpy as np
import pytest

from geoml_plugin.core.tiling import dense_tiles, patch_grid, prefetch


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


@pytest.mark.parametrize("w,h,patch,stride", [(100, 70, 16, 4), (64, 64, 64, 16), (50, 33, 8, 8)])
def test_patch_grid_assigns_each_pixel_to_the_nearest_window_centre(w, h, patch, stride):
    cover = np.zeros((h, w), int)
    for b in patch_grid(w, h, patch, stride, block=32):
        cover[b.out.y : b.out.y + b.out.h, b.out.x : b.out.x + b.out.w] += 1
        # the first window's centre pixel lies in the middle of the first output cell
        cx = b.read.x + patch // 2
        assert cx == b.out.x + stride // 2
        assert b.read.w == (b.nx - 1) * stride + patch
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

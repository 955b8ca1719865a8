"""FrameCache: cached window reads equal direct Zarr reads; the byte budget and LRU order hold."""

import numpy as np
import pytest

from refiner.core.store import create_group, frames_array
from refiner.data.frame_cache import FrameCache


def _array(tmp_path, frames=6, h=5, w=4):
    g = create_group(tmp_path / "s.zarr", {})
    arr = frames_array(g, "depth", (frames, h, w), np.float32)
    arr[:] = np.arange(frames * h * w, dtype=np.float32).reshape(frames, h, w)
    return arr


def test_cached_reads_equal_direct_reads(tmp_path):
    arr = _array(tmp_path)
    cache = FrameCache(1 << 20)
    for frames, region in [(slice(1, 4), (slice(1, 3), slice(0, 2))), (slice(0, 6), ()), (slice(2, 5), (slice(4, 5),))]:
        np.testing.assert_array_equal(cache.read("s", "depth", arr, frames, region), arr[(frames, *region)])
    assert cache.bytes == 6 * 5 * 4 * 4  # every frame once, whole


def test_budget_drops_the_least_recently_used_frames(tmp_path):
    arr = _array(tmp_path)
    frame = 5 * 4 * 4
    cache = FrameCache(3 * frame)
    cache.read("s", "depth", arr, slice(0, 3))
    cache.read("s", "depth", arr, slice(0, 1))  # frame 0 is now the most recent
    cache.read("s", "depth", arr, slice(3, 4))  # evicts frame 1, the least recent
    assert cache.bytes == 3 * frame
    assert sorted(k[2] for k in cache._frames) == [0, 2, 3]
    np.testing.assert_array_equal(cache.read("s", "depth", arr, slice(1, 2)), arr[1:2])  # re-read from Zarr


def test_stores_and_arrays_do_not_collide(tmp_path):
    arr = _array(tmp_path)
    other = frames_array(create_group(tmp_path / "o.zarr", {}), "depth", arr.shape, np.float32)
    other[:] = -1
    cache = FrameCache(1 << 20)
    cache.read("s", "depth", arr, slice(0, 2))
    assert (cache.read("o", "depth", other, slice(0, 2)) == -1).all()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        FrameCache(-1)
    with pytest.raises(ValueError, match="step 1"):
        FrameCache(1 << 10).read("s", "depth", _array(tmp_path), slice(0, 4, 2))

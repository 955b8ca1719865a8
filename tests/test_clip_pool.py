"""Training windows over a hundred and twenty clip stores: none opened to list them, a bounded number open at once,
a clip opened once however many windows it gives, and the same windows as with every clip opened up front."""

import pickle
import shutil

import pytest
import torch

from refiner.data.clip import Clip, ClipPool, LazyClip
from refiner.data.dataset import Augment, RandomWindows
from refiner.data.frame_cache import FrameCache
from refiner.data.manifest import clip_entry

from .clip_fixtures import make_clip

CLIPS = 120


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("many")
    make_clip(root, "c000", frames=6, size=32, static_frames=3)
    for i in range(1, CLIPS):
        shutil.copytree(root / "c000", root / f"c{i:03d}")
    out = []
    for i in range(CLIPS):
        d = root / f"c{i:03d}"
        entry = clip_entry(f"c{i:03d}", str(d / "decoded.zarr"), str(d / "teacher.zarr"), str(d / "guidance.zarr"), "-")
        out.append({**entry, "calibration": None})
    return out


def _windows(clips: list, samples: int) -> RandomWindows:
    return RandomWindows(clips, 4, [0, 2], Augment(crop=16, jitter_prob=0.5, reverse_prob=0.2), samples, seed=3)


def test_windows_over_many_clips_open_a_bounded_number_of_stores(entries):
    pool = ClipPool(max_open=8, cache=FrameCache(1 << 20))
    lazy = _windows([LazyClip(e, pool) for e in entries], 150)
    assert pool.opened == 0 and len(pool) == 0  # listing the clips reads the manifest entries only
    eager = _windows([Clip(e["decoded"], e["teacher"], None, e["guidance"]) for e in entries], 150)
    for i in range(len(lazy)):
        a, b = lazy[i], eager[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert len(pool) <= 8 and pool.cache.bytes <= pool.cache.max_bytes
    assert 8 < pool.opened <= len(lazy)  # clips were closed and opened again, never more than once per window
    copy = pickle.loads(pickle.dumps(lazy))  # what a data-loader worker gets: no open store travels
    assert len(copy.clips[0].pool) == 0 and torch.equal(copy[5]["depth"], lazy[5]["depth"])


def test_a_clip_is_opened_once_however_many_windows_it_gives(entries):
    pool = ClipPool(max_open=8)
    windows = _windows([LazyClip(e, pool) for e in entries[:4]], 40)
    for i in range(len(windows)):
        windows[i]
    assert pool.opened == 4 and len(pool) == 4
    with pytest.raises(ValueError, match="max_open must be >= 1"):
        ClipPool(max_open=0)

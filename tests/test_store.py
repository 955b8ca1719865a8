"""Store checks: every array of a group must have all its chunks; finite-value check."""

import os

import numpy as np
import pytest

from refiner.core.store import (
    StoreError,
    atomic_path,
    check_finite,
    clean_stale_temps,
    create_group,
    frames_array,
    open_group,
    small_array,
)


def _store(path):
    g = create_group(path)
    frames_array(g, "rgb", (5, 4, 4, 3), np.uint8)[...] = 7
    frames_array(g, "depth", (5, 4, 4), np.float32)[...] = 1.0
    small_array(g, "K", np.eye(3))
    frames_array(g.create_group("extra"), "mask", (3, 4, 4), np.uint8)[...] = 0  # all-zero chunks are written too
    return path


def test_complete_store_opens(tmp_path):
    g = open_group(_store(tmp_path / "s.zarr"), ("rgb",), "clip store")
    assert g["rgb"].shape == (5, 4, 4, 3)


@pytest.mark.parametrize(
    ("array", "chunk", "index"), [("depth", "c.3.0.0", r"\(3, 0, 0\)"), ("extra/mask", "c.1.0.0", r"\(1, 0, 0\)")]
)
def test_missing_chunk_of_a_not_required_array_is_an_error(tmp_path, array, chunk, index):
    path = _store(tmp_path / "s.zarr")
    (path / array / chunk).unlink()
    with pytest.raises(StoreError, match=rf"{array}: clip store has \d of \d chunks on disk; 1 missing.*{index}"):
        open_group(path, ("rgb",), "clip store")
    with pytest.raises(StoreError, match=r"dvc repro -f -s <stage>, or -s pipelines/<stage>/dvc.yaml:<stage>@<shard>"):
        open_group(path)


def test_missing_store_and_missing_array(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        open_group(tmp_path / "nope.zarr")
    with pytest.raises(StoreError, match=r"lacks array\(s\) \['poses'\]"):
        open_group(_store(tmp_path / "s.zarr"), ("rgb", "poses"))


def test_check_finite_counts_and_names_where():
    check_finite(np.ones((2, 3), np.float32), "fine")
    check_finite(np.zeros(3, np.uint8), "integers are always finite")
    bad = np.ones((4, 4), np.float32)
    bad[0, 0], bad[1, 2] = np.nan, np.inf
    with pytest.raises(
        StoreError, match=r"^data/clips/x/teacher\.zarr/depth frame 30: 2 non-finite value\(s\) \(NaN/inf\)"
    ):
        check_finite(bad, "data/clips/x/teacher.zarr/depth frame 30")


def test_stale_temp_siblings_of_killed_writers_are_cleaned(tmp_path):
    out = tmp_path / "clip.zarr"
    dead = 2**22 + 12345  # no such process
    (tmp_path / f".clip.zarr.tmp{dead}").mkdir()
    (tmp_path / f".clip.zarr.tmp{dead}" / "chunk").write_bytes(b"x" * 10)
    (tmp_path / f".clip.zarr.old{dead}").mkdir()  # killed between its two renames: the previous output
    live = tmp_path / f".clip.zarr.tmp{os.getpid()}"
    live.mkdir()
    assert clean_stale_temps(tmp_path) == [tmp_path / f".clip.zarr.tmp{dead}"]
    assert out.is_dir() and live.is_dir()  # the previous output is back; a live writer's temp is untouched
    with atomic_path(out) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.zarr"]

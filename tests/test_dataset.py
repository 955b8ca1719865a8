import numpy as np
import pytest
import torch
import zarr

from refiner.data.clip import Clip
from refiner.data.dataset import Augment, ClipWindows, RandomWindows, read_window
from refiner.data.frame_cache import FrameCache

from .clip_fixtures import make_clip, open_entry


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return open_entry(make_clip(tmp_path_factory.mktemp("clip"), "c", frames=10, size=32, static_frames=5))


def test_fixed_windows_shapes_and_values(clip):
    ds = ClipWindows(clip, 6, [0, 4], overlap=3)
    assert ds.starts == [0, 3, 4] and len(ds) == 3
    s = ds[1]
    assert (
        s["depth"].shape == (6, 1, 32, 32) and s["conf"].shape == (6, 1, 32, 32) and s["edges"].shape == (6, 1, 32, 32)
    )
    assert s["rgb"].shape == (6, 3, 32, 32) and s["rgb"].min() >= 0 and s["rgb"].max() <= 1
    t = zarr.open_group(clip.teacher_path, mode="r")
    np.testing.assert_array_equal(s["teacher"][:, 0].numpy(), t["depth"][3:9])
    assert torch.equal(s["depth"], s["teacher"])  # no jitter without augmentation
    assert ((s["conf"] >= 0) & (s["conf"] <= 1)).all() and (s["conf"][s["teacher"] == 0] == 0).all()
    assert s["keyframes"].tolist() == [True, False, False, False, True, False]
    # static pixels: only frames inside the still-camera segment (0..4), never on moving objects
    assert not s["static"][2:].any() and s["static"][:2].any()


def test_a_frame_cache_changes_no_value(clip):
    cached = Clip(clip.decoded_path, clip.teacher_path, None, clip.guidance_path, FrameCache(1 << 24))
    for start, y0, x0, size, gt in [(0, 0, 0, None, True), (2, 4, 8, (16, 12), False), (3, 8, 0, (24, 32), True)]:
        a, b = read_window(clip, start, 6, y0, x0, size, gt), read_window(cached, start, 6, y0, x0, size, gt)
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert 0 < cached.cache.bytes <= 1 << 24


def test_a_clip_shorter_than_a_window_is_one_short_window(clip):
    ds = ClipWindows(clip, 40, [0, 4, 8], overlap=6)
    assert ds.starts == [0] and ds[0]["depth"].shape[0] == 10


def test_crop_keeps_intrinsics_consistent_and_low_grid_aligned(clip):
    ds = RandomWindows([clip], 4, [0], Augment(crop=16), samples=8, seed=3)
    full = ClipWindows(clip, 10, [0])[0]
    for i in range(8):
        s = ds[i]
        start = int(s["start"])
        x0, y0 = int(full["K"][0, 0, 2] - s["K"][0, 0, 2]), int(full["K"][0, 1, 2] - s["K"][0, 1, 2])
        assert x0 % 4 == 0 and y0 % 4 == 0
        torch.testing.assert_close(s["teacher"], full["teacher"][start : start + 4, :, y0 : y0 + 16, x0 : x0 + 16])
        torch.testing.assert_close(s["conf"], full["conf"][start : start + 4, :, y0 : y0 + 16, x0 : x0 + 16])


def test_training_windows_carry_poses_and_gt_for_the_pose_loss(clip):
    ds = RandomWindows([clip], 4, [0], Augment(crop=16, reverse_prob=1.0), samples=4, seed=2)
    s = ds[0]
    start = int(s["start"])
    expected = torch.from_numpy(clip.poses(slice(start, start + 4))).float().flip(0)  # reversed with the frames
    torch.testing.assert_close(s["poses"], expected)
    assert not s["use_gt"] and (s["gt"] > 0).all()  # read for L_pose's pixel choice; L_gt stays off
    free = RandomWindows([clip], 4, [0], Augment(crop=16, gt_free=True), samples=1, seed=2)[0]
    assert (free["poses"] == 0).all() and (free["gt"] == 0).all()  # GT-free: neither poses nor GT


def test_jitter_reversal_and_determinism(clip):
    aug = Augment(reverse_prob=1.0, jitter_prob=1.0, jitter_scale=0.03, jitter_noise_rel=0.0, gt_fraction=1.0)
    ds = RandomWindows([clip], 5, [0, 4], aug, samples=4, seed=1)
    a, b = ds[2], ds[2]
    assert torch.equal(a["depth"], b["depth"])  # same seed, epoch, index
    valid = a["teacher"] > 0
    ratio = torch.where(valid, a["depth"] / a["teacher"].clamp_min(1e-6), torch.nan).flatten(1)
    lo, hi = ratio.nan_to_num(9).min(1).values, ratio.nan_to_num(-9).max(1).values
    assert torch.allclose(lo, hi, rtol=1e-5)  # one scale per frame
    assert ((lo > 0.97 - 1e-6) & (hi < 1.03 + 1e-6)).all()
    assert a["keyframes"].tolist() == [True, False, False, False, True][::-1]
    assert a["use_gt"] and (a["gt"] > 0).any()
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["depth"], a["depth"])


def test_bad_crop_names_the_key(clip):
    with pytest.raises(ValueError, match="train.crop 18 must be a multiple of the low-res factor 4"):
        RandomWindows([clip], 4, [0], Augment(crop=18), samples=2)
    with pytest.raises(ValueError, match="corpus.train"):
        RandomWindows([], 4, [0], Augment(), samples=2)


def test_wide_error_models_are_drawn_per_window_log_uniformly():
    from refiner.core.config import load_params
    from refiner.teachers.simulated import ERROR_PARAMS, draw_wide

    wide = load_params().teacher.resolve("sim_wide")
    rng = np.random.default_rng(0)
    draws = [draw_wide(rng, wide) for _ in range(4000)]
    for name in ERROR_PARAMS:
        low, high = getattr(wide, name)
        values = np.array([d[name] for d in draws])
        assert low <= values.min() and values.max() <= high
        if low > 0:  # log-uniform: the median sits at the geometric mean, not at the midpoint
            assert np.median(values) == pytest.approx(np.sqrt(low * high), rel=0.1)


def test_resimulated_windows_each_get_their_own_teacher(clip):
    from refiner.core.config import load_params

    wide = load_params().teacher.resolve("sim_wide")
    a = Augment(crop=16, resim=wide, resim_prob=1.0, conf_gamma=(0.33, 3.0))
    ds = RandomWindows([clip], 6, [0, 4], a, samples=12, seed=3)
    spread, stored = [], zarr.open_group(clip.teacher_path, mode="r")["depth"]
    for i in range(len(ds)):
        s = ds[i]
        gt, teacher = s["gt"][:, 0].numpy(), s["teacher"][:, 0].numpy()
        assert torch.equal(s["depth"], s["teacher"]) and not s["use_gt"]  # the input is the new teacher
        assert np.isfinite(teacher).all() and ((teacher > 0) == (gt > 0)).all()
        assert ((s["conf"] >= 0) & (s["conf"] <= 1)).all()
        start = int(s["start"])
        assert not any(np.allclose(teacher[0], stored[start][y : y + 16, x : x + 16]) for y in (0, 16) for x in (0, 16))
        ok = gt > 0
        spread.append(float(np.std(np.log(teacher[ok] / gt[ok]))))
    assert max(spread) > 4 * min(spread)  # error levels span the wide family from window to window

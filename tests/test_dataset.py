import numpy as np
import pytest
import torch
import zarr

from refiner.dataset import Augment, ClipWindows
from refiner.lowres import downsample

from .clip_fixtures import make_stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("clip"), frames=10, size=32, factor=4, static_frames=5)


def test_fixed_windows_shapes_and_values(stores):
    decoded, teacher = stores
    ds = ClipWindows(decoded, teacher, 6, [0, 4], overlap=3)
    assert ds.starts == [0, 3, 4] and len(ds) == 3
    s = ds[1]
    assert s["depth_full"].shape == (6, 1, 32, 32) and s["depth_low"].shape == (6, 1, 8, 8)
    assert s["rgb"].shape == (6, 3, 32, 32) and s["rgb"].min() >= 0 and s["rgb"].max() <= 1
    t = zarr.open_group(str(teacher), mode="r")
    np.testing.assert_array_equal(s["teacher_full"][:, 0].numpy(), t["depth"][3:9])
    torch.testing.assert_close(s["depth_low"][:, 0], torch.from_numpy(t["depth_low"][3:9]))  # same as the store
    assert torch.equal(s["depth_full"], s["teacher_full"])  # no jitter without augmentation
    assert s["keyframes"].tolist() == [True, False, False, False, True, False]
    # static pixels: only frames inside the still-camera segment (0..4), never on moving objects
    assert not s["static"][2:].any() and s["static"][:2].any()


def test_crop_keeps_intrinsics_consistent_and_low_grid_aligned(stores):
    decoded, teacher = stores
    ds = ClipWindows(decoded, teacher, 4, [0], augment=Augment(crop=16), samples=8, seed=3)
    full = ClipWindows(decoded, teacher, 10, [0])[0]
    for i in range(8):
        s = ds[i]
        start = int(s["start"])
        dx = full["K"][0, 0, 2] - s["K"][0, 0, 2]
        dy = full["K"][0, 1, 2] - s["K"][0, 1, 2]
        x0, y0 = int(dx), int(dy)
        assert x0 % 4 == 0 and y0 % 4 == 0
        torch.testing.assert_close(
            s["teacher_full"], full["teacher_full"][start : start + 4, :, y0 : y0 + 16, x0 : x0 + 16]
        )
        torch.testing.assert_close(s["depth_low"], downsample(s["depth_full"], 4))


def test_jitter_reversal_and_determinism(stores):
    decoded, teacher = stores
    aug = Augment(reverse_prob=1.0, jitter_prob=1.0, jitter_scale=0.03, jitter_noise_rel=0.0, gt_fraction=1.0)
    ds = ClipWindows(decoded, teacher, 5, [0, 4], frames=(2, 10), augment=aug, samples=4, seed=1)
    a, b = ds[2], ds[2]
    assert torch.equal(a["depth_full"], b["depth_full"])  # same seed, epoch, index
    ratio = a["depth_full"] / a["teacher_full"]
    per_frame = ratio.flatten(1)
    assert torch.allclose(per_frame.min(1).values, per_frame.max(1).values, rtol=1e-5)  # one scale per frame
    assert ((per_frame > 0.97 - 1e-6) & (per_frame < 1.03 + 1e-6)).all()
    assert a["keyframes"].tolist() == [True, False, False, False, True][::-1]
    assert int(a["start"]) >= 2 and a["use_gt"]
    assert (a["gt"] > 0).any()
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["depth_full"], a["depth_full"])


def test_mismatched_stores_fail(stores, tmp_path):
    decoded, teacher = stores
    with pytest.raises(ValueError, match="multiple of the low-res factor"):
        ClipWindows(decoded, teacher, 4, [0], augment=Augment(crop=18), samples=2)
    with pytest.raises(ValueError, match="outside"):
        ClipWindows(decoded, teacher, 4, [0], frames=(5, 40))

"""Stereo warping on hand-made scenes and on the tiny rendered clip."""

import numpy as np
import pytest
import torch

from refiner.config import StereoParams
from refiner.stereo import (
    backward_warp,
    depth_from_disparity,
    disparity_from_depth,
    fill_holes,
    forward_warp,
    round_trip_error,
    sbs_video,
    stereo_report,
)
from refiner.video import decode_frames

from .clip_fixtures import make_stores


def _image(h=8, w=16, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_plane_shifts_by_exactly_fx_b_over_z():
    fx, b, z = 100.0, 0.06, 2.0  # d = 3 px
    depth = torch.full((8, 16), z)
    disp = disparity_from_depth(depth, fx, b)
    assert torch.allclose(disp, torch.full_like(depth, 3.0))
    torch.testing.assert_close(depth_from_disparity(disp, fx, b), depth)
    img = _image()
    right, holes = forward_warp(img, disp, depth)
    torch.testing.assert_close(right[:, :, :13], img[:, :, 3:])
    assert holes[:, 13:].all() and not holes[:, :13].any()


def test_non_integer_shift_by_backward_warp_interpolates():
    img = torch.arange(16, dtype=torch.float32).repeat(1, 4, 1)  # intensity = column
    disp = torch.full((4, 16), 2.5)
    out, valid = backward_warp(img, disp)
    torch.testing.assert_close(out[0, :, :13], torch.arange(16, dtype=torch.float32)[:13].add(2.5).repeat(4, 1))
    assert not valid[:, 14:].any()


def test_two_planes_the_near_one_occludes():
    depth = torch.full((4, 16), 4.0)
    depth[:, 8:12] = 1.0  # near strip: d = 6 px, far: d = 1.5 -> 2 px (rounded)
    disp = disparity_from_depth(depth, 100.0, 0.06)
    img = torch.zeros(1, 4, 16)
    img[:, :, 8:12] = 1.0  # the near strip is white
    right, holes = forward_warp(img, disp, depth)
    assert (right[0, :, 2:6] == 1.0).all()  # the strip landed at 8-6 .. 11-6, over far pixels
    assert holes[:, 6:9].any()  # disoccluded background behind the strip


def test_left_right_left_round_trip_returns_the_image():
    depth = torch.full((8, 16), 3.0)
    depth[:, :6] = 2.0
    err = round_trip_error(_image(), disparity_from_depth(depth, 100.0, 0.06), depth)
    assert err < 1e-5


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("clip"), frames=6, size=32, factor=4, static_frames=4)


def test_gt_depth_renders_the_right_eye_better_than_a_wrong_baseline(stores, tmp_path):
    import zarr

    decoded, _ = stores
    gt = np.asarray(zarr.open_group(str(decoded), mode="r")["depth_gt"][...])
    good, _ = stereo_report(decoded, {"gt": gt}, StereoParams())
    wrong, _ = stereo_report(decoded, {"gt": gt * 0.4}, StereoParams())  # as if the baseline were 2.5x
    assert good["gt"]["photometric_l2r"] < 0.7 * wrong["gt"]["photometric_l2r"]
    assert good["gt"]["disparity_error_px"] < 0.1


def test_report_and_video_on_a_tiny_clip(stores, tmp_path):
    import zarr

    decoded, teacher = stores
    depth = np.asarray(zarr.open_group(str(teacher), mode="r")["depth"][...])
    metrics, rows = stereo_report(decoded, {"teacher": depth}, StereoParams())
    values = [v for v in metrics["teacher"].values() if isinstance(v, float)]
    assert values and np.isfinite(values).all() and len(rows) == 6 and "teacher_median_disparity_px" in rows[0]
    assert metrics["teacher"]["disparity_jitter_px"] > 0  # the fixture teacher flickers
    n = sbs_video(decoded, depth, tmp_path / "sbs.mp4", StereoParams())
    frames = list(decode_frames(tmp_path / "sbs.mp4"))
    assert n == 6 and frames[0].shape == (32, 64, 3)


def test_holes_fill_from_the_background_side():
    img = torch.tensor([[[1.0, 1.0, 0.0, 0.0, 9.0, 9.0]]])  # background 1 | hole | hole | near object 9
    depth = torch.tensor([[5.0, 5.0, 0.0, 0.0, 1.0, 1.0]])
    holes = torch.tensor([[False, False, True, True, False, False]])
    out = fill_holes(img, holes, depth)
    assert out[0, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 9.0, 9.0]
    far_right = torch.tensor([[1.0, 1.0, 0.0, 0.0, 5.0, 5.0]])  # now the right side is the background
    assert fill_holes(img, holes, far_right)[0, 0].tolist() == [1.0, 1.0, 9.0, 9.0, 9.0, 9.0]
    border = torch.tensor([[True, True, False, False, False, False]])  # no left neighbour: use the right one
    img2 = torch.tensor([[[0.0, 0.0, 3.0, 3.0, 9.0, 9.0]]])
    assert fill_holes(img2, border, depth)[0, 0, :2].tolist() == [3.0, 3.0]

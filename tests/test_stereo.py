"""Stereo warping on hand-made scenes and on the tiny rendered clip."""

import numpy as np
import pytest
import torch

from refiner.core.config import StereoParams
from refiner.core.store import create_group, frames_array
from refiner.core.video import decode_frames
from refiner.evaluation.stereo_metrics import stereo_metrics
from refiner.geometry.warp import (
    backward_warp,
    depth_from_disparity,
    disparity_from_depth,
    fill_holes,
    forward_warp,
    round_trip_error,
)
from refiner.inference.source_res import write_source_stereo_video

from .clip_fixtures import make_clip, open_entry

P = StereoParams.from_file()


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
def clip(tmp_path_factory):
    return open_entry(make_clip(tmp_path_factory.mktemp("clip"), "c", frames=6, size=32, static_frames=4))


def test_gt_depth_of_both_eyes_is_consistent_and_a_wrong_scale_is_not(clip):
    gt = np.asarray(clip.dec["depth_gt"][...])
    gt_r = np.asarray(clip.dec["depth_gt_right"][...])
    good, _ = stereo_metrics(clip, {"gt": gt}, {"gt": gt_r}, P)
    wrong, _ = stereo_metrics(clip, {"gt": gt * 0.4}, {"gt": gt_r * 0.4}, P)  # as if the baseline were 2.5x
    assert good["gt"]["disparity_error_l2r_px"] < 0.05 and good["gt"]["disparity_error_r2l_px"] < 0.05
    assert good["gt"]["lr_consistency_px"] < 0.6  # rounding to whole pixels only
    assert good["gt"]["photometric_l2r"] < 0.7 * wrong["gt"]["photometric_l2r"]
    assert wrong["gt"]["disparity_error_l2r_px"] > 10 * good["gt"]["disparity_error_l2r_px"]


def test_stereo_checks_read_a_few_frames_at_a_time_with_the_same_result(clip, tmp_path):
    """Zarr arrays read 2 frames at a time give the figures and rows of one read of the whole clip."""
    teacher = clip.teacher_depth((slice(None), slice(None), slice(None)))
    left = {"gt": np.asarray(clip.dec["depth_gt"][...]), "teacher": teacher}
    right = {"gt": np.asarray(clip.dec["depth_gt_right"][...]), "teacher": 1.02 * right_teacher(clip)}
    whole = stereo_metrics(clip, left, right, P, step=100)
    stored = create_group(tmp_path / "d.zarr")
    for side, arrays in (("l", left), ("r", right)):
        for k, v in arrays.items():
            frames_array(stored, f"{side}_{k}", v.shape, np.float32)[...] = v
    chunked = stereo_metrics(clip, {k: stored[f"l_{k}"] for k in left}, {k: stored[f"r_{k}"] for k in right}, P, step=2)
    assert all(a == pytest.approx(b) for a, b in zip(whole[1], chunked[1], strict=True))
    for src in ("gt", "teacher"):
        assert whole[0][src] == pytest.approx(chunked[0][src], rel=1e-9)
    assert "lr_consistency_px" in chunked[0]["teacher"]


def right_teacher(clip) -> np.ndarray:
    """A stand-in right-eye depth: the right GT with a little structure of its own."""
    gt_r = np.asarray(clip.dec["depth_gt_right"][...], dtype=np.float32)
    return gt_r * (1 + 0.01 * np.sin(np.arange(gt_r.shape[-1]) / 3.0)).astype(np.float32)


def test_report_and_video_on_a_tiny_clip(clip, tmp_path):
    depth = clip.teacher_depth((slice(None), slice(None), slice(None)))
    metrics, rows = stereo_metrics(clip, {"teacher": depth}, {}, P)
    values = [v for v in metrics["teacher"].values() if isinstance(v, float)]
    assert values and np.isfinite(values).all() and len(rows) == 6 and "teacher_median_disparity_px" in rows[0]
    assert metrics["teacher"]["disparity_jitter_px"] > 0 and "lr_consistency_px" not in metrics["teacher"]
    n = write_source_stereo_video(clip.dec, depth, tmp_path / "sbs.mp4", clip.baseline_m(P.baseline_m), clip.fps)
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

"""Metrics against hand-computed cases."""

import math

import pytest
import torch

from refiner.evaluation.depth_metrics import depth_errors, disparity_jitter, flicker, scale_ratios
from refiner.evaluation.opw_metrics import opw_geometry, opw_metric_pairs
from refiner.evaluation.tae_metrics import reproject, tae_from_pairs, tae_pairs
from refiner.geometry.intrinsics import intrinsics_from_fov
from refiner.geometry.scatter import scatter_kept


def tae(*args, **kwargs) -> float:
    """The masked metric TAE of a whole clip, from its pairs."""
    return tae_from_pairs(*tae_pairs(*args, **kwargs))


def opw_metric(depth, rgb, K, poses, gt) -> float:
    """Metric-space OPW of a whole clip: the mean over its pairs (NaN when none counts)."""
    errs = opw_metric_pairs(depth, gt, opw_geometry(rgb, K, poses, gt))
    return sum(errs) / len(errs) if errs else math.nan


K1 = torch.tensor(intrinsics_from_fov(16, 16, 60.0), dtype=torch.float32)


def _pose(tx=0.0):
    p = torch.eye(4, dtype=torch.float64)
    p[0, 3] = tx
    return p


def test_known_scale_error_gives_known_absrel_and_delta():
    gt = torch.full((4, 4), 2.0)
    e = depth_errors(gt * 1.1, gt)
    assert e["absrel"] == pytest.approx(0.1) and e["rmse"] == pytest.approx(0.2)
    assert e["log_rmse"] == pytest.approx(math.log(1.1)) and e["d1"] == 1.0
    assert depth_errors(gt * 1.25, gt)["d1"] == 0.0  # strict: exactly 1.25 is not < 1.25
    assert depth_errors(gt * 1.25, gt)["d2"] == 1.0
    gt2 = gt.clone()
    gt2[0, 0] = 0  # invalid GT pixels do not count
    assert depth_errors(gt * 1.1, gt2)["absrel"] == pytest.approx(0.1)


def test_flicker_of_a_static_clip_with_known_flicker():
    scales = torch.tensor([1.0, 1.02, 0.98, 1.0])
    depth = 3.0 * scales[:, None, None] * torch.ones(4, 5, 5)
    mask = torch.ones(5, 5, dtype=torch.bool)
    f = flicker(depth, mask)
    assert f["std_rel"] == pytest.approx(float(scales.double().std()) / 1.0, rel=1e-6)
    assert flicker(torch.full((4, 5, 5), 3.0), mask)["std_rel"] == 0.0


def test_tae_zero_for_consistent_depth_and_known_for_a_scaled_frame():
    # a fronto-parallel wall at z = 4 seen by a camera moving 0.1 m sideways: depth stays 4 everywhere
    depth = torch.full((2, 16, 16), 4.0)
    K = K1.expand(2, 3, 3)
    poses = torch.stack([_pose(0.0), _pose(0.1)])
    assert tae(depth, K, poses, depth) == pytest.approx(0.0, abs=1e-4)
    scaled = depth.clone()
    scaled[1] *= 1.1  # frame 1 is 10% too far: i→j gives |4.4 − 4|/4.4, j→i gives |4 − 4.4|/4
    expected = 100 * (0.4 / 4.4 + 0.4 / 4) / 2
    assert tae(scaled, K, poses, depth) == pytest.approx(expected, rel=1e-3)


def test_reproject_z_buffer_keeps_the_nearest():
    depth = torch.full((16, 16), 5.0)
    depth[:, 8:] = 2.0  # a near half
    T = torch.eye(4, dtype=torch.float64)
    T[0, 3] = -0.5  # move points left: near ones shift further and cover far ones
    z, hit = reproject(depth, K1, K1, T, depth > 0)
    assert hit.any()
    covered = z[hit]
    assert covered.min() == pytest.approx(2.0) and covered.max() == pytest.approx(5.0)
    # pixels where both halves land hold the near depth
    u_near = torch.round(torch.arange(8, 16) + K1[0, 0] * -0.5 / 2.0).long()
    u_far = torch.round(torch.arange(0, 8) + K1[0, 0] * -0.5 / 5.0).long()
    both = sorted(set(u_near.tolist()) & set(u_far.tolist()) & set(range(16)))
    assert both and (z[:, both] == 2.0).all()


def test_opw_metric_zero_when_consistent_and_positive_with_flicker():
    depth = torch.full((3, 16, 16), 4.0)
    rgb = torch.rand(1, 3, 16, 16).expand(3, 3, 16, 16)
    K = K1.expand(3, 3, 3)
    poses = torch.stack([_pose(), _pose(), _pose()])
    assert opw_metric(depth, rgb, K, poses, depth) == pytest.approx(0.0, abs=1e-6)
    flick = depth * torch.tensor([1.0, 1.05, 1.0])[:, None, None]
    assert opw_metric(flick, rgb, K, poses, depth) == pytest.approx((0.05 / 1.05 + 0.05 / 1.0) / 2, rel=1e-4)


def test_disparity_jitter_in_pixels():
    depth = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), 2.5)])
    jit = disparity_jitter(depth, torch.tensor([100.0, 100.0]), 0.06, torch.ones(4, 4, dtype=torch.bool))
    assert jit.tolist() == pytest.approx([100 * 0.06 / 2.0 - 100 * 0.06 / 2.5])
    assert torch.isfinite(jit).all()


def test_scale_ratios_ignore_moving_pixels():
    gt = torch.full((2, 4, 4), 2.0)
    depth = gt * torch.tensor([1.1, 0.9])[:, None, None]
    moving = torch.zeros(2, 4, 4, dtype=torch.bool)
    depth[0, :2] = 50.0  # a moving object the teacher gets very wrong
    moving[0, :2] = True
    assert scale_ratios(depth, gt, moving).tolist() == pytest.approx([1.1, 0.9])


def test_opw_metric_is_zero_for_exact_depth_under_camera_motion():
    # a wall at z = 4 while the camera moves forward 0.2 m: exact depth changes from 4 to 3.8 and scores 0
    gt = torch.stack([torch.full((16, 16), 4.0), torch.full((16, 16), 3.8)])
    p1 = torch.eye(4, dtype=torch.float64)
    p1[2, 3] = 0.2
    poses = torch.stack([_pose(), p1])
    rgb = torch.full((2, 3, 16, 16), 0.5)
    K = K1.expand(2, 3, 3)
    assert opw_metric(gt, rgb, K, poses, gt) == pytest.approx(0.0, abs=1e-5)
    assert opw_metric(gt * torch.tensor([1.0, 1.1])[:, None, None], rgb, K, poses, gt) > 0.05


def test_scatter_kept_reduces_kept_points_only():
    values = torch.tensor([5.0, 2.0, 7.0, 1.0, 3.0])
    index = torch.tensor([0, 0, 2, 2, 1])
    keep = torch.tensor([True, True, True, False, True])  # the 1.0 at slot 2 is not kept
    out = scatter_kept(values, index, keep, 4, "amin", float("inf"))
    assert out.tolist() == [2.0, 3.0, 7.0, float("inf")]
    last = scatter_kept(torch.arange(5), index, keep, 4, "amax", -1)
    assert last.tolist() == [1, 4, 2, -1]

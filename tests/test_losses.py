import math

import pytest
import torch

from refiner.core.config import LossParams
from refiner.geometry.masks import centre_patch, static_gate, still_static_mask
from refiner.training.losses import (
    compute_losses,
    edge_loss,
    gt_loss,
    pose_loss,
    residual_loss,
    teacher_loss,
    temporal_loss,
    variance_loss,
)

P = LossParams.from_file()


def _batch(b=1, n=4, h=8, w=8, depth=2.0):
    teacher = torch.full((b, n, 1, h, w), depth)
    return {
        "teacher": teacher,
        "conf": torch.ones_like(teacher),
        "edges": torch.zeros_like(teacher),
        "rgb": torch.full((b, n, 3, h, w), 0.5),
        "gt": torch.zeros_like(teacher),
        "use_gt": torch.zeros(b, dtype=torch.bool),
        "K": torch.eye(3).expand(b, n, 3, 3).clone(),
        "poses": torch.zeros(b, n, 4, 4),
    }


def test_teacher_loss_hand_case_and_confidence_weighting():
    t = torch.full((1, 2, 1, 2, 2), 2.0)
    d = t * math.e  # log error exactly 1 (up to eps)
    conf = torch.ones_like(t)
    assert teacher_loss(d, t, conf, 0.0).item() == pytest.approx(1.0, abs=2e-3)
    conf[..., 0, :] = 0.0  # half the pixels carry no confidence
    assert teacher_loss(d, t, conf, 0.0).item() == pytest.approx(0.5, abs=2e-3)
    assert teacher_loss(t, t, conf, 0.01).item() == pytest.approx(0.0, abs=1e-7)


def test_gt_loss_only_on_flagged_windows_and_valid_pixels():
    gt = torch.full((2, 2, 1, 2, 2), 4.0)
    gt[..., 0, 0] = 0  # invalid
    d = torch.full_like(gt, 2.0)
    d[..., 0, 0] = 100.0  # error on an invalid pixel must not count
    use = torch.tensor([True, False])
    assert gt_loss(d, gt, use).item() == pytest.approx(math.log(2), abs=1e-3)
    assert gt_loss(d, gt, torch.tensor([False, False])).item() == 0.0


def test_temporal_loss_zero_for_constant_and_counts_flicker_on_static_pixels():
    p = P
    b = _batch()
    assert temporal_loss(b["teacher"], b["teacher"], b["conf"], b["rgb"], b["edges"], p, 2).item() == 0.0
    flicker = b["teacher"].clone()
    flicker[:, 1::2] *= 1.05  # alternate frames 5% deeper: |dlog| = log 1.05 between every pair
    got = temporal_loss(flicker, b["teacher"], b["conf"], b["rgb"], b["edges"], p, 2).item()
    assert got == pytest.approx(math.log(1.05), rel=1e-2)
    # uncertain pixels weigh more: w = 1 + k(1 - c)
    low_c = {**b, "conf": torch.zeros_like(b["conf"])}
    got2 = temporal_loss(flicker, b["teacher"], low_c["conf"], b["rgb"], b["edges"], p, 2).item()
    assert got2 == pytest.approx(got * (1 + p.temp_k), rel=1e-4)


def test_temporal_loss_gated_off_where_colour_or_teacher_changes():
    p = P
    b = _batch()
    flicker = b["teacher"].clone()
    flicker[:, 1::2] *= 1.05
    rgb = b["rgb"].clone()
    rgb[:, 1::2] = 0.9  # every pixel changes colour between frames: nothing is static
    assert temporal_loss(flicker, b["teacher"], b["conf"], rgb, b["edges"], p, 2).item() == 0.0
    moving_teacher = b["teacher"].clone()
    moving_teacher[:, 1::2] *= 2.0  # teacher jumps far more than tau: not a small change
    assert temporal_loss(flicker, moving_teacher, b["conf"], b["rgb"], b["edges"], p, 2).item() == 0.0


def test_static_gate_excludes_neighbourhood_of_change():
    rgb = torch.zeros(1, 2, 3, 16, 16)
    rgb[:, 1, :, 0:2, 0:2] = 1.0  # a change in the top-left low-res pixel (factor 2)
    g = static_gate(rgb, 2, 0.05)
    assert g.shape == (1, 1, 1, 16, 16)
    assert g[0, 0, 0, :4, :4].sum() == 0  # the changed pixel and its 3x3 low-res neighbours
    assert g[0, 0, 0, 8:, 8:].min() == 1


def test_residual_and_variance_terms():
    t = torch.full((1, 2, 1, 2, 2), 2.0)
    delta = torch.full_like(t, 0.2)  # +10% everywhere
    mag, mean = residual_loss(delta, t, torch.ones_like(t), 1.0)
    assert mag.item() == pytest.approx(0.1, rel=1e-3) and mean.item() == pytest.approx(0.01, rel=1e-2)
    zero_mean = delta.clone()
    zero_mean[..., 0, :] = -0.2
    assert residual_loss(zero_mean, t, torch.ones_like(t), 1.0)[1].item() == pytest.approx(0.0, abs=1e-9)


def test_variance_term_is_the_seeds_and_positive_at_zero_residual():
    teacher = torch.full((2, 3, 1, 4, 4), 2.0)
    conf = torch.zeros_like(teacher)  # all pixels below c_thr
    zero = torch.zeros_like(teacher)
    # max(0, σ_target − σ(ΔD/D)) = σ_target when ΔD = 0 on low-confidence pixels
    assert variance_loss(zero, teacher, conf, 0.5, 0.01).item() == pytest.approx(0.01, rel=1e-3)
    spread = torch.randn(teacher.shape, generator=torch.Generator().manual_seed(0)) * 0.1  # σ(ΔD/D) ≈ 0.05
    assert variance_loss(spread, teacher, conf, 0.5, 0.01).item() == 0.0
    assert variance_loss(zero, teacher, torch.ones_like(conf), 0.5, 0.01).item() == 0.0  # confident: no term


def test_temporal_loss_is_lower_at_guidance_edges():
    b = _batch()
    flicker = b["teacher"].clone()
    flicker[:, 1::2] *= 1.05
    plain = temporal_loss(flicker, b["teacher"], b["conf"], b["rgb"], b["edges"], P, 2)
    edges = torch.full_like(b["edges"], 0.5)
    assert temporal_loss(flicker, b["teacher"], b["conf"], b["rgb"], edges, P, 2) == pytest.approx(0.5 * plain.item())


def test_edge_loss_smaller_across_image_edges():
    delta = torch.zeros(1, 1, 1, 4, 4)
    delta[..., 2:] = 1.0  # a residual step between columns 1 and 2
    flat = torch.zeros(1, 1, 1, 4, 4)
    edge = flat.clone()
    edge[..., 1:3] = 1.0  # the guidance map marks an edge at the same place
    assert edge_loss(delta, edge, 0.1) < 0.01 * edge_loss(delta, flat, 0.1)


def test_compute_losses_teacher_is_a_fixed_point():
    b = _batch()
    terms = compute_losses(b["teacher"], torch.zeros_like(b["teacher"]), b, P, 2)
    assert terms["total"].item() == pytest.approx(0.0, abs=1e-6)
    assert set(terms) >= {"close", "temp", "res", "res_mean", "var", "pose", "total"}


def _sliding_plane(n=3, h=24, w=32, depth=2.0, step_m=0.05):
    """A fronto-parallel wall at ``depth`` seen by a camera sliding ``step_m`` along x per frame (f = 20 px):
    GT depth, K and camera-to-world poses [1, n, ...]. Its z never changes, its image shifts 0.5 px per frame."""
    K = torch.tensor([[20.0, 0, (w - 1) / 2], [0, 20.0, (h - 1) / 2], [0, 0, 1]]).expand(1, n, 3, 3).clone()
    poses = torch.eye(4).repeat(1, n, 1, 1)
    poses[0, :, 0, 3] = step_m * torch.arange(n)
    return torch.full((1, n, 1, h, w), depth), K, poses


def test_pose_loss_zero_when_consistent_and_measures_a_scale_jump_across_motion():
    gt, K, poses = _sliding_plane()
    assert pose_loss(gt, gt, K, poses, 0.02).item() == pytest.approx(0.0, abs=1e-6)
    jumped = gt.clone()
    jumped[:, 1] *= 1.05  # frame 1 5% deeper: each pair touching it disagrees by log 1.05 where the warp lands
    assert pose_loss(jumped, gt, K, poses, 0.02).item() == pytest.approx(math.log(1.05), rel=0.05)
    depth = gt.clone().requires_grad_(True)
    pose_loss(depth * torch.tensor([1.0, 1.05, 1.0]).reshape(1, 3, 1, 1, 1), gt, K, poses, 0.02).backward()
    assert depth.grad[0, 1].sum() > 0 and depth.grad[0, 0].sum() < 0  # pulls frame 1 down, its neighbours up
    assert torch.isfinite(depth.grad).all()


def test_pose_loss_skips_windows_without_poses_and_pixels_where_gt_disagrees():
    gt, K, poses = _sliding_plane()
    jumped = gt * torch.tensor([1.0, 1.05, 1.0]).reshape(1, 3, 1, 1, 1)
    assert pose_loss(jumped, gt, K, torch.zeros_like(poses), 0.02).item() == 0.0  # no poses: nothing to warp by
    assert pose_loss(jumped, torch.zeros_like(gt), K, poses, 0.02).item() == 0.0  # no GT: no pixel is chosen
    far = gt * torch.tensor([1.0, 1.5, 1.0]).reshape(1, 3, 1, 1, 1)  # would add log 1.5 were it warped at all
    pair = [torch.cat([a, b]) for a, b in ((jumped, far), (gt, gt), (K, K), (poses, torch.zeros_like(poses)))]
    alone = pose_loss(jumped, gt, K, poses, 0.02)
    assert pose_loss(*pair, 0.02).item() == pytest.approx(alone.item(), rel=1e-6)  # the pose-less window adds nothing
    mover = gt.clone()
    mover[:, 1, :, :, 16:] = 1.0  # a moving object: half of frame 1 jumps to 1 m in GT
    half = jumped.clone()
    half[:, 1, :, :, 16:] = 1.0  # the refined depth follows it there
    assert pose_loss(half, mover, K, poses, 0.02).item() == pytest.approx(math.log(1.05), rel=0.05)


def test_still_static_mask_excludes_moving_and_invalid():
    moving = torch.zeros(3, 2, 2, dtype=torch.bool)
    moving[1, 0, 0] = True
    valid = torch.ones(3, 2, 2, dtype=torch.bool)
    valid[2, 1, 1] = False
    rgb = torch.zeros(3, 2, 2, 3, dtype=torch.uint8)
    assert still_static_mask(rgb, moving, valid).tolist() == [[False, True], [True, False]]


def test_centre_patch_hand_values():
    assert centre_patch(8, 12, 0.5) == (slice(2, 6), slice(3, 9))
    assert centre_patch(3, 3, 0.1) == (slice(1, 2), slice(1, 2))  # at least one pixel

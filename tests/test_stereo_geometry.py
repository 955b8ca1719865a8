"""Left-right geometry between the two eyes' own depths, on a hand-made near box in front of a wall.

fx·b = 100 · 0.06 = 6: the wall at 3 m has disparity 2 px, the box at 1 m 6 px (no rounding anywhere).
Left view: the box covers columns 8..11 of rows 1-2. Right view (rendered analytically): a left pixel at u
appears at u − d, so the box sits at columns 2..5 and the (infinite) wall fills everything else.
"""

import pytest
import torch

from refiner.geometry.warp import (
    lr_inverse_consistency,
    occlusion_mask_lr,
    occlusion_mask_rl,
    reprojection_error_l2r,
    reprojection_error_r2l,
    warp_disparity_lr,
)

FX, B, W, H = 100.0, 0.06, 24, 4
Z_WALL, Z_BOX = 3.0, 1.0
D_WALL, D_BOX = 2.0, 6.0


def _scene():
    left = torch.full((H, W), Z_WALL, dtype=torch.float64)
    left[1:3, 8:12] = Z_BOX
    right = torch.full((H, W), Z_WALL, dtype=torch.float64)
    right[1:3, 2:6] = Z_BOX
    return left, right


def test_occlusion_masks_mark_exactly_the_strips_beside_the_box_and_the_out_of_view_border():
    left, right = _scene()
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[:, :2] = True  # u − 2 < 0: out of the right view
    expected[1:3, 4:8] = True  # wall left of the box: in the right eye the box covers it (width 6 − 2 = 4)
    assert torch.equal(occlusion_mask_lr(left, FX, B), expected)
    expected_r = torch.zeros(H, W, dtype=torch.bool)
    expected_r[:, -2:] = True  # u + 2 ≥ W: out of the left view
    expected_r[1:3, 6:10] = True  # wall right of the box in the right eye: hidden by the box in the left eye
    assert torch.equal(occlusion_mask_rl(right, FX, B), expected_r)


def test_gt_depths_of_both_eyes_are_consistent_on_visible_pixels():
    left, right = _scene()
    l2r, r2l = reprojection_error_l2r(left, right, FX, B), reprojection_error_r2l(left, right, FX, B)
    assert float(l2r) == pytest.approx(0.0, abs=1e-9) and float(r2l) == pytest.approx(0.0, abs=1e-9)
    err, valid = lr_inverse_consistency(left, right, FX, B)
    assert torch.equal(valid, ~occlusion_mask_lr(left, FX, B))
    assert float(err.abs().max()) == pytest.approx(0.0, abs=1e-9)
    disp, hit = warp_disparity_lr(left, FX, B)
    # holes in the right eye are exactly its pixels the left eye cannot see: the wall right of the box, the border
    assert torch.equal(hit, ~occlusion_mask_rl(right, FX, B))
    assert (disp[1:3, 2:6] == D_BOX).all() and (disp[0, : W - 2] == D_WALL).all()


def test_right_eye_10_percent_too_far_gives_the_hand_computed_disparity_error():
    left, right = _scene()
    e_wall, e_box = D_WALL - D_WALL / 1.1, D_BOX - D_BOX / 1.1
    # visible left pixels: rows 0, 3: wall columns 2..23 (22 each); rows 1, 2: wall 2, 3 and 12..23 (14 each), box 4
    n_wall, n_box = 2 * 22 + 2 * 14, 2 * 4
    expected = (n_wall * e_wall + n_box * e_box) / (n_wall + n_box)
    err, valid = lr_inverse_consistency(left, right * 1.1, FX, B)
    assert int(valid.sum()) == n_wall + n_box
    assert float(err[valid].mean()) == pytest.approx(expected, rel=1e-9)
    l2r = reprojection_error_l2r(left, right * 1.1, FX, B)
    assert float(l2r) == pytest.approx(expected, rel=1e-9)  # one-to-one here: the same pixels, the same errors


def test_batched_maps_with_one_focal_length_each():
    left, right = _scene()
    lefts, rights = torch.stack([left, left]), torch.stack([right, right * 1.1])
    fx = torch.tensor([FX, FX])
    l2r, r2l = reprojection_error_l2r(lefts, rights, fx, B), reprojection_error_r2l(lefts, rights, fx, B)
    assert l2r.shape == (2,) and float(l2r[0]) == pytest.approx(0.0, abs=1e-9) and float(l2r[1]) > 0.1
    assert float(r2l[0]) == pytest.approx(0.0, abs=1e-9)
    masks = occlusion_mask_lr(lefts, fx, B)
    assert masks.shape == (2, H, W) and torch.equal(masks[0], occlusion_mask_lr(left, FX, B))
    err, valid = lr_inverse_consistency(lefts, rights, fx, B)
    assert err.shape == (2, H, W) and float(err[0].max()) == pytest.approx(0.0, abs=1e-9)


def test_invalid_depth_is_excluded():
    left, right = _scene()
    left[0, 5] = 0
    assert occlusion_mask_lr(left, FX, B)[0, 5]
    right[3, :] = 0  # no right depth on row 3: nothing there can be checked
    err, valid = lr_inverse_consistency(left, right, FX, B)
    assert not valid[3].any() and not valid[0, 5]

import numpy as np
import pytest
import torch

from refiner.camera import (
    canonical_map,
    intrinsics_from_fov,
    project,
    relative_pose,
    resize_depth,
    resize_image,
    transform_intrinsics,
    transform_points,
    unproject,
)


@pytest.mark.parametrize(("h", "w", "size"), [(256, 320, 256), (240, 320, 128), (480, 360, 96), (100, 100, 64)])
def test_point_projects_to_same_content_after_canonical_map(h, w, size):
    K = torch.tensor([[300.0, 0, 0.45 * w], [0, 310.0, 0.55 * h], [0, 0, 1]], dtype=torch.float64)
    m = canonical_map(h, w, size)
    Kc = transform_intrinsics(K, m)
    pts = torch.tensor([[[0.3], [-0.2], [2.0]], [[-0.5], [0.4], [3.5]]], dtype=torch.float64)
    uv, _ = project(pts.float(), K.expand(2, 3, 3))
    uvc, _ = project(pts.float(), Kc.expand(2, 3, 3))
    expected_u = m.scale_x * (uv[:, 0] + 0.5) - 0.5 + m.offset_x
    expected_v = m.scale_y * (uv[:, 1] + 0.5) - 0.5 + m.offset_y
    torch.testing.assert_close(uvc[:, 0], expected_u.float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(uvc[:, 1], expected_v.float(), atol=1e-3, rtol=0)


def test_canonical_map_hand_case():
    m = canonical_map(240, 320, 120)  # scale 0.5 -> 160 x 120, crop 20 px left and right
    assert (m.scaled_height, m.scaled_width, m.offset_x, m.offset_y) == (120, 160, -20, 0)
    K = torch.tensor([[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]])
    Kc = transform_intrinsics(K, m)
    torch.testing.assert_close(Kc, torch.tensor([[100.0, 0, 59.5], [0, 100.0, 59.5], [0, 0, 1]]))


def test_resize_depth_keeps_metric_values_and_does_not_smear():
    depth = torch.ones(64, 96)
    depth[:, 48:] = 5.0  # a sharp edge between two depths
    m = canonical_map(64, 96, 32)
    out = resize_depth(depth, m)
    assert out.shape == (32, 32)
    assert set(out.unique().tolist()) <= {1.0, 5.0}


def test_resize_depth_pads_with_invalid_zero():
    m = canonical_map(96, 32, 32)  # tall image: short side 32 keeps, long side cropped
    assert m.offset_y == -32
    m2 = canonical_map(32, 16, 32)  # upscale 2x then crop
    out = resize_depth(torch.full((32, 16), 2.0), m2)
    assert torch.all(out == 2.0)


def test_resize_image_uint8_shape_and_range():
    img = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    out = resize_image(img, canonical_map(48, 64, 32))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.uint8


def test_unproject_project_round_trip_and_pose():
    K = torch.tensor(intrinsics_from_fov(40, 30, 60.0), dtype=torch.float32)[None]
    depth = torch.rand(1, 30, 40) * 3 + 1
    pts = unproject(depth, K)
    uv, z = project(pts, K)
    torch.testing.assert_close(z, depth)
    v, u = torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij")
    torch.testing.assert_close(uv[0, 0], u, atol=1e-3, rtol=0)
    torch.testing.assert_close(uv[0, 1], v, atol=1e-3, rtol=0)
    # camera 1 moved 1 m along world x: a point at world x=1 is at camera-1 x=0
    p0, p1 = torch.eye(4)[None].double(), torch.eye(4)[None].double()
    p1[0, 0, 3] = 1.0
    T = relative_pose(p0, p1)
    out = transform_points(T, torch.tensor([[[1.0], [0.0], [2.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[0.0], [0.0], [2.0]]]))


def test_intrinsics_from_fov_hand_case():
    K = intrinsics_from_fov(200, 100, 90.0)
    assert K[0, 0] == pytest.approx(100.0) and K[0, 2] == pytest.approx(99.5) and K[1, 2] == pytest.approx(49.5)
    assert np.allclose(K[2], [0, 0, 1])

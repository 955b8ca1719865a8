import numpy as np
import pytest
import torch

from refiner.geometry.camera import (
    depth_to_source,
    project,
    relative_pose,
    resize_depth,
    resize_image,
    transform_points,
    unproject,
)
from refiner.geometry.canonical import (
    CanonicalMap,
    canonical_map,
    identity_map,
    source_intrinsics,
    transform_intrinsics,
)
from refiner.geometry.intrinsics import intrinsics_from_fov, pixel_rays


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize(
    ("h", "w", "size"), [(256, 320, 256), (240, 320, 128), (480, 360, 96), (100, 100, 64), (1080, 1920, 256)]
)
def test_point_projects_to_same_content_after_canonical_map(h, w, size, crop):
    K = np.array([[300.0, 0, 0.45 * w], [0, 310.0, 0.55 * h], [0, 0, 1]])
    m = canonical_map(h, w, size, multiple=4, crop=crop)
    np.testing.assert_allclose(source_intrinsics(transform_intrinsics(K, m), m), K, rtol=1e-12)  # the exact inverse
    K, Kc = torch.from_numpy(K), torch.from_numpy(transform_intrinsics(K, m))
    pts = torch.tensor([[[0.3], [-0.2], [2.0]], [[-0.5], [0.4], [3.5]]], dtype=torch.float64)
    uv, _ = project(pts.float(), K.expand(2, 3, 3))
    uvc, _ = project(pts.float(), Kc.expand(2, 3, 3))
    expected_u = m.scale_x * (uv[:, 0] + 0.5) - 0.5 + m.offset_x
    expected_v = m.scale_y * (uv[:, 1] + 0.5) - 0.5 + m.offset_y
    torch.testing.assert_close(uvc[:, 0], expected_u.float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(uvc[:, 1], expected_v.float(), atol=1e-3, rtol=0)


def test_canonical_map_keeps_the_aspect_ratio_by_default():
    m = canonical_map(1080, 1920, 256, multiple=4)  # 16:9: 455.1 px wide at short side 256 -> 456, a multiple of 4
    assert (m.height, m.width, m.offset_x, m.offset_y) == (256, 456, 0, 0)
    assert m.scale_x == pytest.approx(456 / 1920) and m.scale_y == pytest.approx(256 / 1080)
    assert CanonicalMap.from_dict(m.to_dict()) == m
    tall = canonical_map(320, 180, 64, multiple=8)  # portrait: the long side is the height
    assert (tall.height, tall.width) == (112, 64)
    assert (canonical_map(240, 320, 120).height, canonical_map(240, 320, 120).width) == (120, 160)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        canonical_map(180, 320, 66, multiple=4)


def test_canonical_map_crop_hand_case():
    m = canonical_map(240, 320, 120, crop=True)  # scale 0.5 -> 160 x 120, crop 20 px left and right
    assert (m.scaled_height, m.scaled_width, m.offset_x, m.offset_y) == (120, 160, -20, 0)
    K = np.array([[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]])
    Kc = transform_intrinsics(K, m)
    assert Kc.dtype == np.float64
    np.testing.assert_array_equal(Kc, [[100.0, 0, 59.5], [0, 100.0, 59.5], [0, 0, 1]])


def test_resampling_onto_an_identity_grid_changes_nothing():
    """ingest.to_grid skips the resamplers (and torch) when the grid is the source grid: they would be a no-op."""
    m = canonical_map(48, 64, 48, multiple=4)
    assert m.is_identity and identity_map(48, 64).is_identity
    assert not canonical_map(48, 64, 32).is_identity and not canonical_map(48, 64, 48, crop=True).is_identity
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.integers(0, 256, (2, 3, 48, 64), dtype=np.uint8))
    depth = torch.from_numpy(rng.uniform(0.5, 9.0, (2, 48, 64)).astype(np.float32))
    assert torch.equal(resize_image(rgb, m), rgb)
    assert torch.equal(resize_image(rgb.float() / 255, m), rgb.float() / 255)
    assert torch.equal(resize_depth(depth, m), depth)
    assert torch.equal(resize_depth(depth > 4, m), depth > 4)


def test_resize_depth_keeps_metric_values_and_does_not_smear():
    depth = torch.ones(64, 96)
    depth[:, 48:] = 5.0  # a sharp edge between two depths
    m = canonical_map(64, 96, 32)
    out = resize_depth(depth, m)
    assert out.shape == (32, 48)
    assert set(out.unique().tolist()) <= {1.0, 5.0}


def test_resize_depth_pads_with_invalid_zero():
    m = canonical_map(96, 32, 32, crop=True)  # tall image: short side 32 keeps, long side cropped
    assert m.offset_y == -32
    m2 = canonical_map(32, 16, 32, crop=True)  # upscale 2x then crop
    out = resize_depth(torch.full((32, 16), 2.0), m2)
    assert torch.all(out == 2.0)


def test_resize_image_uint8_shape_and_range():
    img = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    out = resize_image(img, canonical_map(48, 64, 32))
    assert out.shape == (2, 3, 32, 43) and out.dtype == torch.uint8
    assert resize_image(img, canonical_map(48, 64, 32, crop=True)).shape == (2, 3, 32, 32)


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


def test_depth_to_source_on_an_identity_map_takes_the_short_cut_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(1)
    depth = torch.from_numpy(rng.uniform(0.5, 9.0, (2, 24, 40)).astype(np.float32))
    depth[:, :3] = 0  # invalid pixels
    depth[:, :, 20:] *= 3  # a depth edge
    m = canonical_map(24, 40, 24, multiple=4)
    fast = depth_to_source(depth, m)
    monkeypatch.setattr(CanonicalMap, "is_identity", property(lambda self: False))
    general = depth_to_source(depth, m)
    assert m.src_height == m.height and torch.equal(fast, general) and torch.equal(fast, depth)


def test_depth_to_source_never_blends_across_edges_and_zeroes_what_was_cropped():
    m = canonical_map(90, 160, 36, multiple=4)  # 36 x 64 canonical, back to 90 x 160
    canon = torch.full((36, 64), 2.0)
    canon[:, 32:] = 8.0  # a depth edge
    canon[:4, :4] = 0.0  # invalid corner
    back = depth_to_source(canon, m)
    assert back.shape == (90, 160)
    assert set(back.unique().tolist()) <= {0.0, 2.0, 8.0}  # flat sides copied, nothing in between
    assert (back[:8, :8] == 0).all() and (back > 0).sum() > 0.99 * (90 * 160 - 10 * 10)
    ramp = torch.linspace(2.0, 2.2, 64).expand(36, 64)  # a flat (smooth) surface: bilinear, within one step
    smooth = depth_to_source(ramp, m)
    assert (smooth[:, 1:] - smooth[:, :-1]).abs().max() < 0.2 / 63
    cropped = canonical_map(90, 160, 36, crop=True)
    back = depth_to_source(torch.full((36, 36), 3.0), cropped)
    assert (back[:, :30] == 0).all() and (back[:, -30:] == 0).all()  # 14 canonical = 35 source px cropped per side
    torch.testing.assert_close(back[:, 40:120], torch.full((90, 80), 3.0))


def test_pixel_rays_hand_case():
    """K⁻¹[u, v, 1] through pixel centres, row-major, z exactly 1: the synthetic renderer's and Hypersim's rays."""
    K = np.array([[2.0, 0.0, 1.0], [0.0, 4.0, 0.5], [0.0, 0.0, 1.0]])
    rays = pixel_rays(K, 2, 3)  # pixels (u, v): (0, 0) (1, 0) (2, 0) (0, 1) (1, 1) (2, 1)
    expected = [[-0.5, 0.0, 0.5, -0.5, 0.0, 0.5], [-0.125] * 3 + [0.125] * 3, [1.0] * 6]
    np.testing.assert_allclose(rays, expected, rtol=0, atol=1e-15)
    assert (rays[2] == 1.0).all()

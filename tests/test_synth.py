import numpy as np
import torch

from refiner.camera import intrinsics_from_fov, unproject
from refiner.synth import ROOM, camera_poses, make_scene, render, render_clip, right_eye_poses


def _world_points(depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    pts = unproject(torch.from_numpy(depth)[None].double(), torch.from_numpy(K)[None].double())[0].numpy()
    pts = pts.reshape(3, -1)
    return (pose[:3, :3] @ pts + pose[:3, 3:]).T


def test_floor_pixels_back_project_onto_the_floor_plane():
    scene = make_scene(0, 16)
    K = intrinsics_from_fov(64, 48, 70.0)
    pose = camera_poses(16, 4, 0)[0]
    _, depth, _ = render(scene, pose, K, 48, 64, 0.0)
    pts = _world_points(depth.astype(np.float64), K, pose)
    bottom_row = pts.reshape(48, 64, 3)[-1]  # the camera looks slightly down: the last row sees the floor
    np.testing.assert_allclose(bottom_row[:, 1], ROOM["y"][1], atol=1e-4)


def test_all_depth_lies_inside_the_room_and_is_positive():
    clip = render_clip(4, 32, 40, 70.0, 0.063, 2, seed=3)
    assert clip.depth.dtype == np.float32 and (clip.depth > 0).all()
    for i in range(4):
        pts = _world_points(clip.depth[i].astype(np.float64), clip.K, clip.poses[i])
        for axis, key in enumerate("xyz"):
            lo, hi = ROOM[key]
            assert pts[:, axis].min() >= lo - 1e-3 and pts[:, axis].max() <= hi + 1e-3


def test_static_segment_and_moving_mask():
    clip = render_clip(6, 32, 40, 70.0, 0.063, 3, seed=0)
    assert np.allclose(clip.poses[0], clip.poses[2]) and not np.allclose(clip.poses[2], clip.poses[5])
    # during the static-camera segment, pixels off moving objects keep their depth exactly
    still = ~(clip.moving_mask[0] | clip.moving_mask[1])
    np.testing.assert_array_equal(clip.depth[0][still], clip.depth[1][still])
    assert clip.moving_mask.any()


def test_right_eye_is_offset_along_camera_x():
    poses = camera_poses(5, 1, 0)
    right = right_eye_poses(poses, 0.063)
    offset = np.linalg.inv(poses[4]) @ right[4]
    np.testing.assert_allclose(offset[:3, 3], [0.063, 0, 0], atol=1e-12)
    np.testing.assert_allclose(offset[:3, :3], np.eye(3), atol=1e-12)


def test_deterministic_by_seed():
    a = render_clip(2, 16, 20, 70.0, 0.063, 1, seed=5)
    b = render_clip(2, 16, 20, 70.0, 0.063, 1, seed=5)
    c = render_clip(2, 16, 20, 70.0, 0.063, 1, seed=6)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.rgb, c.rgb)

import numpy as np
import pytest
import torch
import zarr

from refiner.core.choices import CAMERA_PATHS
from refiner.core.video import encode_mp4
from refiner.data.synth.clips import render_clip, write_clip
from refiner.data.synth.raycast import render
from refiner.data.synth.scene import camera_poses, make_scene, right_eye_poses
from refiner.data.synth.shapes import Box
from refiner.geometry.camera import unproject
from refiner.geometry.intrinsics import intrinsics_from_fov


def _world_points(depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    pts = unproject(torch.from_numpy(depth)[None].double(), torch.from_numpy(K)[None].double())[0].numpy()
    pts = pts.reshape(3, -1)
    return (pose[:3, :3] @ pts + pose[:3, 3:]).T


def _distance_to_nearest_surface(scene, pts: np.ndarray, t: float) -> np.ndarray:
    """Distance (N,) from world points to the nearest wall, box face or sphere surface of the scene at frame t."""
    lo, hi = np.asarray(scene.lo), np.asarray(scene.hi)
    dist = np.minimum(np.abs(pts - lo), np.abs(pts - hi)).min(1)
    for obj in scene.objects:
        if isinstance(obj, Box):
            b_lo, b_hi = obj.at(t)
            outside = np.linalg.norm(np.maximum(np.maximum(b_lo - pts, pts - b_hi), 0), axis=1)
            inside = np.minimum(pts - b_lo, b_hi - pts).min(1)
            d = np.where(outside > 0, outside, np.abs(inside))
        else:
            d = np.abs(np.linalg.norm(pts - obj.center_at(t), axis=1) - obj.radius)
        dist = np.minimum(dist, d)
    return dist


@pytest.mark.parametrize("path", CAMERA_PATHS)
def test_depth_back_projects_exactly_onto_the_surfaces(path):
    scene = make_scene(7, path)
    K = intrinsics_from_fov(64, 48, 70.0)
    poses = camera_poses(scene, 10, 3)
    for i in (0, 9):
        _, depth, _ = render(scene, poses[i], K, 48, 64, float(i))
        pts = _world_points(depth.astype(np.float64), K, poses[i])
        # float32 depth: a relative rounding of ~6e-8
        assert (_distance_to_nearest_surface(scene, pts, float(i)) <= 2e-6 * depth.ravel() + 1e-9).all()


def test_floor_pixels_back_project_onto_the_floor_plane():
    scene = make_scene(0, "dolly")
    K = intrinsics_from_fov(64, 48, 70.0)
    pose = camera_poses(scene, 16, 4)[0]
    _, depth, _ = render(scene, pose, K, 48, 64, 0.0)
    pts = _world_points(depth.astype(np.float64), K, pose).reshape(48, 64, 3)
    on_floor = np.abs(pts[..., 1] - scene.hi[1]) < 1e-5
    assert on_floor[-1].mean() > 0.3  # the camera looks slightly down: the last row sees mostly floor


def test_all_depth_lies_inside_the_room_and_is_positive():
    clip = render_clip(4, 32, 40, 70.0, 0.063, 2, seed=3)
    scene = make_scene(3, "dolly")
    assert clip.depth.dtype == np.float32 and (clip.depth > 0).all()
    for i in range(4):
        pts = _world_points(clip.depth[i].astype(np.float64), clip.K, clip.poses[i])
        assert (pts >= np.asarray(scene.lo) - 1e-3).all() and (pts <= np.asarray(scene.hi) + 1e-3).all()


def test_static_segment_and_moving_mask():
    clip = render_clip(6, 32, 40, 70.0, 0.063, 3, seed=0)
    assert np.allclose(clip.poses[0], clip.poses[2]) and not np.allclose(clip.poses[2], clip.poses[5])
    # during the static-camera segment, pixels off moving objects keep their depth exactly ...
    still = ~(clip.moving_mask[0] | clip.moving_mask[1])
    np.testing.assert_array_equal(clip.depth[0][still], clip.depth[1][still])
    # ... and the moving objects are where the depth changes
    changed = clip.depth[0] != clip.depth[1]
    assert clip.moving_mask.any() and changed.any()
    assert (clip.moving_mask[0] | clip.moving_mask[1])[changed].all()


def test_object_speed_scales_motion_only():
    a = render_clip(3, 24, 32, 70.0, 0.063, 3, seed=4, object_speed=1.0)
    b = render_clip(3, 24, 32, 70.0, 0.063, 3, seed=4, object_speed=2.5)
    still = render_clip(3, 24, 32, 70.0, 0.063, 3, seed=4, object_speed=0.0)
    np.testing.assert_array_equal(a.depth[0], b.depth[0])  # same layout, same start
    assert not np.array_equal(a.depth[2], b.depth[2])
    np.testing.assert_array_equal(still.depth[0], still.depth[2])
    assert not still.moving_mask.any() and a.scene["moving_objects"] >= 1


def test_right_eye_is_offset_along_camera_x():
    poses = camera_poses(make_scene(0, "orbit"), 5, 1)
    right = right_eye_poses(poses, 0.063)
    offset = np.linalg.inv(poses[4]) @ right[4]
    np.testing.assert_allclose(offset[:3, 3], [0.063, 0, 0], atol=1e-12)
    np.testing.assert_allclose(offset[:3, :3], np.eye(3), atol=1e-12)


def test_deterministic_by_seed():
    a = render_clip(2, 16, 20, 70.0, 0.063, 1, seed=5)
    b = render_clip(2, 16, 20, 70.0, 0.063, 1, seed=5)
    c = render_clip(2, 16, 20, 70.0, 0.063, 1, seed=6)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.poses, b.poses)
    assert not np.array_equal(a.rgb, c.rgb)


def test_seeds_give_different_layouts():
    depths = [render_clip(1, 32, 40, 70.0, 0.063, 1, seed=s).depth[0] for s in range(6)]
    for i in range(len(depths)):
        for j in range(i + 1, len(depths)):
            assert np.abs(np.log(depths[i] / depths[j])).mean() > 0.1  # > 10% mean depth difference
    scenes = [make_scene(s) for s in range(20)]
    assert len({len(s.objects) for s in scenes}) >= 3
    assert len({len(s.spheres) for s in scenes}) >= 2 and len({sum(o.moving for o in s.objects) for s in scenes}) >= 2
    assert len({tuple(np.round(np.subtract(s.hi, s.lo), 2)) for s in scenes}) == 20  # room sizes
    assert len({s.walls[3].color for s in scenes}) == 20  # materials


def _rotation_deg(a: np.ndarray, b: np.ndarray) -> float:
    r = a[:3, :3].T @ b[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_camera_paths_move_as_named(seed):
    static = 4
    poses = {p: camera_poses(make_scene(seed, p), 20, static) for p in CAMERA_PATHS}
    for p in CAMERA_PATHS:
        for i in range(1, static):
            np.testing.assert_array_equal(poses[p][i], poses[p][0])
    np.testing.assert_array_equal(poses["still"], np.broadcast_to(poses["still"][0], poses["still"].shape))
    first, last = poses["forward"][0], poses["forward"][-1]
    move = np.linalg.inv(first)[:3, :3] @ (last[:3, 3] - first[:3, 3])  # in the first camera's frame
    assert move[2] > 0.5 and np.linalg.norm(move[:2]) < 0.05 * move[2]
    pan = poses["pan"]
    assert _rotation_deg(pan[0], pan[-1]) > 10
    assert np.linalg.norm(pan[:, :3, 3] - pan[0, :3, 3], axis=1).max() < 0.05
    dolly = poses["dolly"]
    assert np.linalg.norm(dolly[-1, :3, 3] - dolly[0, :3, 3]) > 0.3 and _rotation_deg(dolly[0], dolly[10]) > 2
    target = np.asarray(make_scene(seed, "orbit").rig.target)
    orbit = poses["orbit"]
    dist = np.linalg.norm(orbit[:, :3, 3] - target, axis=1)
    assert dist.std() < 1e-6 * dist.mean() and np.linalg.norm(orbit[-1, :3, 3] - orbit[0, :3, 3]) > 0.3
    axis_to_target = (target - orbit[:, :3, 3]) / dist[:, None]
    np.testing.assert_allclose(np.einsum("ti,ti->t", orbit[:, :3, 2], axis_to_target), 1.0, atol=1e-9)


@pytest.mark.parametrize("path", CAMERA_PATHS)
def test_camera_stays_in_the_room_clear_of_objects(path):
    for seed in range(25):
        scene = make_scene(seed, path)
        cams = np.stack([scene.rig.pose(s)[:3, 3] for s in np.linspace(0, 1, 101)])
        lo, hi = np.asarray(scene.lo), np.asarray(scene.hi)
        assert (cams > lo + 0.3).all() and (cams < hi - 0.3).all()
        for obj in scene.objects:
            o_lo, o_hi = obj.swept()
            assert (o_lo >= lo - 1e-9).all() and (o_hi <= hi + 1e-9).all()  # moving objects stay inside
            gap = np.linalg.norm(np.maximum(np.maximum(o_lo - cams, cams - o_hi), 0), axis=1)
            assert gap.min() > 0.4
        assert any(o.moving for o in scene.objects)


def test_unknown_camera_path_is_refused():
    with pytest.raises(ValueError, match="camera_path"):
        render_clip(2, 16, 20, 70.0, 0.063, 1, seed=0, camera_path="crane")


def test_write_clip_records_the_scene(tmp_path):
    clip = render_clip(3, 16, 20, 70.0, 0.063, 1, seed=8, camera_path="orbit", object_speed=0.5)
    write_clip(clip, tmp_path, fps=8, crf=0, baseline_m=0.063)
    scene = dict(zarr.open_group(str(tmp_path / "gt.zarr"), mode="r").attrs["scene"])
    assert scene["seed"] == 8 and scene["camera_path"] == "orbit" and scene["object_speed"] == 0.5
    assert scene["objects"] == len(make_scene(8, "orbit").objects) and scene["moving_objects"] >= 1


def test_encoding_the_same_frames_gives_the_same_bytes(tmp_path):
    """DVC hashes the mp4: the same frames must encode to the same file (x264's mbtree broke this on AVX-512)."""
    clip = render_clip(48, 128, 160, 70.0, 0.063, 4, seed=5, camera_path="dolly")
    files = [tmp_path / f"{k}.mp4" for k in range(4)]
    for f in files:
        assert encode_mp4(clip.rgb, f, fps=24) == 48
    assert len({f.read_bytes() for f in files}) == 1

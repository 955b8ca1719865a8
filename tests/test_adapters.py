import json

import numpy as np
import pytest
import torch
import zarr

from refiner.data.adapters import KINDS, ingest, options_of
from refiner.data.adapters.hypersim import distance_to_depth, tonemap
from refiner.data.adapters.images import read_hdf5
from refiner.data.adapters.tum import associate, freiburg_intrinsics, pose_from_tum
from refiner.data.ingest import ingest_video
from refiner.data.synth.clips import render_clip, write_clip
from refiner.geometry.camera import resize_depth, unproject
from refiner.geometry.canonical import canonical_map, transform_intrinsics
from refiner.geometry.intrinsics import intrinsics_from_fov
from tests.adapter_fixtures import write_hypersim, write_tum

CAM = {"fx": 30.0, "fy": 31.0, "cx": 15.2, "cy": 11.7}


def _open(path):
    return zarr.open_group(str(path), mode="r")


def _canonical(depth: np.ndarray, size: int) -> np.ndarray:
    m = canonical_map(*depth.shape[-2:], size)
    return resize_depth(torch.from_numpy(depth), m).numpy()


def test_associate_nearest_within_max_dt():
    t_rgb = np.array([1.000, 1.033, 1.100, 0.5])
    t_depth = np.array([1.040, 1.005, 1.500])  # unsorted on purpose
    assert associate(t_rgb, t_depth, 0.02).tolist() == [1, 0, -1, -1]
    assert associate(t_rgb, np.array([]), 0.02).tolist() == [-1, -1, -1, -1]
    assert associate(np.array([2.0]), np.array([2.01]), 0.02).tolist() == [0]


def test_tum_quaternion_to_camera_to_world():
    s = np.sqrt(0.5)  # 90 degrees about z
    T = pose_from_tum(["1", "2", "3", "0", "0", f"{s}", f"{s}"], "gt")
    assert np.allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert np.allclose(T[:3, 3], [1, 2, 3]) and np.allclose(T[3], [0, 0, 0, 1])
    # a non-unit quaternion is normalised: same rotation
    assert np.allclose(pose_from_tum(["1", "2", "3", "0", "0", "2", "2"], "gt"), T)
    # camera x axis (first column) points along world +y; the camera centre is the translation
    assert np.allclose(T @ [1, 0, 0, 1], [1, 3, 3, 1])


def test_tum_sequence_depth_metric_poses_and_dropped_frames(tmp_path):
    seq, truth = write_tum(tmp_path, frames=6)
    n = ingest("tum", seq, tmp_path / "c.zarr", 16, intrinsics=CAM, progress=False)
    assert n == 5  # the last RGB frame has no depth within 0.02 s
    g = _open(tmp_path / "c.zarr")
    a = dict(g.attrs)
    assert (a["dataset_name"], a["scene_id"], a["has_gt"], a["dropped_frames"]) == ("tum", seq.name, True, 1)
    assert a["static_frames"] == 0 and a["baseline_m"] is None
    assert a["fps"] == pytest.approx(30, rel=1e-3)
    # depth = PNG / 5000 metres, copied by nearest sampling, 0 kept as invalid
    np.testing.assert_array_equal(g["depth_gt"][...], _canonical(truth["raw"].astype(np.float32) / 5000, 16))
    assert (g["depth_gt"][...] == 0).any()
    K = np.array([[CAM["fx"], 0, CAM["cx"]], [0, CAM["fy"], CAM["cy"]], [0, 0, 1]])
    K_can = transform_intrinsics(K, canonical_map(24, 32, 16))
    np.testing.assert_allclose(g["K"][...], np.repeat(K_can[None], 5, axis=0))
    np.testing.assert_allclose(g["poses"][...], truth["poses"], atol=1e-6)
    assert g["rgb"].shape == (5, 16, 21, 3)  # 24x32 -> the whole frame at short side 16
    assert ingest("tum", seq, tmp_path / "s.zarr", 16, stride=2, intrinsics=CAM, progress=False) == 3


def test_tum_freiburg_camera_by_sequence_name(tmp_path):
    assert freiburg_intrinsics("rgbd_dataset_freiburg2_desk")[0, 0] == 520.9
    assert freiburg_intrinsics("rgbd_dataset_freiburg3_long_office")[1, 2] == 247.6
    seq, _ = write_tum(tmp_path, "rgbd_dataset_freiburg2_xyz", frames=2, h=480, w=640)
    assert ingest("tum", seq, tmp_path / "c.zarr", 32, progress=False) == 1
    K = _open(tmp_path / "c.zarr")["K"][0]
    # 640x480 -> 43x32 (rounded), then a 5 px crop on the left
    m = canonical_map(480, 640, 32)
    assert K[0, 0] == pytest.approx(520.9 * m.scale_x) and K[1, 1] == pytest.approx(521.0 * m.scale_y)
    assert K[0, 2] == pytest.approx(m.scale_x * (325.1 + 0.5) - 0.5 + m.offset_x)


def test_distance_to_depth_inverts_unprojection():
    K = np.array([[20.0, 0, 9.5], [0, 22.0, 6.5], [0, 0, 1]])
    z = np.random.default_rng(0).uniform(1, 5, (1, 14, 20)).astype(np.float32)
    dist = torch.linalg.norm(unproject(torch.from_numpy(z), torch.from_numpy(K)[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(distance_to_depth(dist.astype(np.float64), K), z[0], rtol=1e-5)
    # by hand: centre pixel (9.5 is between columns, so use a principal point on a pixel) has dist == z
    K2 = np.array([[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1]])
    d = distance_to_depth(np.full((3, 3), 3.0), K2)
    assert d[1, 1] == pytest.approx(3.0) and d[0, 0] == pytest.approx(3.0 / np.sqrt(1.5))


def test_hypersim_scene_z_depth_standard_camera_and_poses(tmp_path):
    scene, truth = write_hypersim(tmp_path, frames=3)
    n = ingest("hypersim", scene, tmp_path / "c.zarr", 16, progress=False)
    assert n == 3
    g = _open(tmp_path / "c.zarr")
    assert (g.attrs["dataset_name"], g.attrs["scene_id"], g.attrs["has_gt"]) == ("hypersim", "ai_001_001/cam_00", True)
    K = intrinsics_from_fov(32, 24, 60.0)  # the standard camera at this image size
    dist = np.stack(
        [read_hdf5(scene / f"images/scene_cam_00_geometry_hdf5/frame.{i:04d}.depth_meters.hdf5", "d") for i in range(3)]
    ).astype(np.float64)
    z = np.stack([distance_to_depth(np.nan_to_num(d), K) for d in dist])
    np.testing.assert_allclose(g["depth_gt"][...], _canonical(z, 16), rtol=1e-6)
    assert (z <= np.nan_to_num(dist) + 1e-6).all() and (g["depth_gt"][...] == 0).any()  # NaN -> 0 (invalid)
    K_can = transform_intrinsics(K, canonical_map(24, 32, 16))
    np.testing.assert_allclose(g["K"][0], K_can)
    poses = g["poses"][...]
    np.testing.assert_allclose(poses[:, :3, 3], truth["pos"][:3] * 0.0254)
    # OpenGL camera (y up, z back) -> OpenCV: y and z columns flip sign
    np.testing.assert_allclose(poses[:, :3, 0], truth["rot"][:3, :, 0])
    np.testing.assert_allclose(poses[:, :3, 1:3], -truth["rot"][:3, :, 1:3])
    assert np.allclose(np.linalg.det(poses[:, :3, :3]), 1)


def test_hypersim_camera_file_and_hdr_colour(tmp_path):
    scene, truth = write_hypersim(tmp_path, frames=2, jpg=False, poses=False)
    (scene / "camera.json").write_text(json.dumps(CAM))
    assert ingest("hypersim", scene, tmp_path / "c.zarr", 16, progress=False) == 2
    g = _open(tmp_path / "c.zarr")
    K = np.array([[CAM["fx"], 0, CAM["cx"]], [0, CAM["fy"], CAM["cy"]], [0, 0, 1]])
    np.testing.assert_allclose(g["K"][1], transform_intrinsics(K, canonical_map(24, 32, 16)))
    assert "poses" not in g and g.attrs["rgb_source"].startswith("color.hdf5")
    # one exposure for the clip: frame 1 holds twice the radiance of frame 0's scale, so it is brighter
    _, scale = tonemap(truth["hdr"][0])
    assert tonemap(truth["hdr"][1], scale)[0].mean() > tonemap(truth["hdr"][0], scale)[0].mean() + 20


def test_tonemap_percentile_and_gamma():
    hdr = np.full((4, 4, 3), 0.25)
    out, scale = tonemap(hdr)
    assert np.all(out == round(0.8 * 255))  # every pixel sits at the 90th percentile
    assert scale == pytest.approx(0.8**2.2 / 0.25)
    assert tonemap(hdr * 4, scale)[0].max() == 255  # clipped, not re-exposed


def test_ingest_entry_point_video_matches_ingest_video(tmp_path):
    clip = render_clip(3, 24, 32, 70.0, 0.063, 1, seed=2)
    write_clip(clip, tmp_path / "s", fps=8, crf=0, baseline_m=0.063)
    src = tmp_path / "s"
    ingest("video", src / "clip.mp4", tmp_path / "a.zarr", 16, intrinsics=src / "camera.json", progress=False)
    ingest_video(src / "clip.mp4", src / "camera.json", tmp_path / "b.zarr", 16, progress=False)
    a, b = _open(tmp_path / "a.zarr"), _open(tmp_path / "b.zarr")
    np.testing.assert_array_equal(a["rgb"][...], b["rgb"][...])
    np.testing.assert_array_equal(a["K"][...], b["K"][...])
    assert (a.attrs["dataset_name"], a.attrs["scene_id"], a.attrs["has_gt"]) == ("video", "clip", False)
    assert a.attrs["static_frames"] == 0 and a.attrs["baseline_m"] is None
    assert set(KINDS) == {"video", "tum", "hypersim"}
    assert "max_dt" in options_of("tum") and "cam" in options_of("hypersim")

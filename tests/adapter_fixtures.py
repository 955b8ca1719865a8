"""Tiny TUM RGB-D and Hypersim folders written in the data sets' real file formats (PNG, JPG, HDF5, text)."""

from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def write_tum(
    root: Path,
    name: str = "rgbd_dataset_freiburg1_xyz",
    frames: int = 5,
    h: int = 24,
    w: int = 32,
    seed: int = 0,
    depth_hw: tuple[int, int] | None = None,
    hz: int = 30,
) -> tuple[Path, dict]:
    """A TUM sequence: RGB at ``hz`` (stamps written to the microsecond, as TUM does), depth 5 ms later, poses at
    100 Hz; the last RGB frame has no depth partner.

    Returns the folder and the truth: raw depth PNGs (uint16), stamps and 4x4 poses of the paired frames.
    """
    rng = np.random.default_rng(seed)
    seq = root / name
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    rgb_lines, depth_lines, raws, stamps = ["# color images", "# timestamp filename"], [], [], []
    dh, dw = depth_hw or (h, w)
    for i in range(frames):
        t = 1305031102.0 + i / hz
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(seq / f"rgb/{t:.6f}.png")
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        if i == frames - 1:
            continue  # no depth within 0.02 s: dropped
        raw = rng.integers(2500, 20000, (dh, dw)).astype(np.uint16)
        raw[dh // 2 - 1 : dh // 2 + 2, dw // 2 - 1 : dw // 2 + 2] = 0  # no measurement
        Image.fromarray(raw).save(seq / f"depth/{t + 0.005:.6f}.png")
        depth_lines.append(f"{t + 0.005:.6f} depth/{t + 0.005:.6f}.png")
        raws.append(raw)
        stamps.append(t)
    (seq / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (seq / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    gt_lines, poses = ["# timestamp tx ty tz qx qy qz qw"], {}
    t0 = 1305031102.0 - 0.05
    for k in range(int((frames / hz + 0.1) * 100)):
        t = t0 + k / 100
        angle = 0.3 * k / 100  # about z, camera moving along x
        q = (0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2))
        gt_lines.append(f"{t:.4f} {0.5 * k / 100:.6f} 1.0 -2.0 {q[0]:.8f} {q[1]:.8f} {q[2]:.8f} {q[3]:.8f}")
        T = np.eye(4)
        T[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        T[:3, 3] = [0.5 * k / 100, 1.0, -2.0]
        poses[round(t, 4)] = T
    (seq / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    nearest = [poses[min(poses, key=lambda s, t=t: abs(s - t))] for t in stamps]
    return seq, {"raw": np.stack(raws), "stamps": np.array(stamps), "poses": np.stack(nearest)}


def write_h5(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=data)


def write_hypersim(
    root: Path, frames: int = 3, h: int = 24, w: int = 32, jpg: bool = True, poses: bool = True, seed: int = 0
) -> tuple[Path, dict]:
    """A Hypersim scene with camera cam_00: distance-to-centre depth, RGB, keyframe trajectory in asset units."""
    rng = np.random.default_rng(seed)
    scene = root / "ai_001_001"
    img = scene / "images"
    hdr = []
    for i in range(frames):
        dist = rng.uniform(1.0, 8.0, (h, w))
        dist[h // 2 - 1 : h // 2 + 2, w // 2 - 1 : w // 2 + 2] = np.nan  # no geometry (a window)
        write_h5(img / f"scene_cam_00_geometry_hdf5/frame.{i:04d}.depth_meters.hdf5", dist.astype(np.float16))
        colour = rng.uniform(0, 2, (h, w, 3)).astype(np.float16) * (1 + i)
        hdr.append(colour)
        if jpg:
            (img / "scene_cam_00_final_preview").mkdir(parents=True, exist_ok=True)
            Image.fromarray((colour.clip(0, 1) * 255).astype(np.uint8)).save(
                img / f"scene_cam_00_final_preview/frame.{i:04d}.tonemap.jpg", quality=95
            )
        else:
            write_h5(img / f"scene_cam_00_final_hdf5/frame.{i:04d}.color.hdf5", colour)
    truth = {"hdr": np.stack(hdr)}
    if poses:
        pos = rng.uniform(-100, 100, (frames + 2, 3))  # the trajectory may hold more keyframes than rendered
        angles = rng.uniform(-np.pi, np.pi, frames + 2)
        rot = np.zeros((frames + 2, 3, 3))
        for i, a in enumerate(angles):  # about the world z axis
            rot[i] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
        write_h5(scene / "_detail/cam_00/camera_keyframe_positions.hdf5", pos)
        write_h5(scene / "_detail/cam_00/camera_keyframe_orientations.hdf5", rot)
        (scene / "_detail/metadata_scene.csv").write_text(
            "parameter_name,parameter_value\nmeters_per_asset_unit,0.0254\n"
        )
        truth.update(pos=pos, rot=rot)
    return scene, truth

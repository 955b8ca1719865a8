"""Synthetic clips: a scene rendered for both eyes, with sensor effects, written as a clip folder.

Optional sensor effects (:func:`sensor_effects`, both off by default, and then the frames are exactly the
noiseless render) make consecutive frames differ as a real camera's do: ``exposure_jitter`` is the std of a
per-frame log gain that follows a smooth AR(1) over time (lag-1 correlation :data:`EXPOSURE_CORR`), and
``sensor_noise`` the std of Gaussian read noise added per pixel and channel to the [0, 1] colour, each frame
anew. Both eyes share a frame's gain (one shutter for the rig) and draw their own noise. Everything is seeded
by the clip seed; the depth and every other ground truth stay exact.

"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refiner.core.store import atomic_path, create_group, frames_array, small_array, write_json
from refiner.core.video import encode_mp4
from refiner.data.synth.raycast import render
from refiner.data.synth.scene import camera_poses, make_scene, right_eye_poses
from refiner.geometry.intrinsics import intrinsics_from_fov

EXPOSURE_CORR = 0.8  # lag-1 correlation of the per-frame log gain of ``exposure_jitter``


_SENSOR_STREAM = 3  # make_scene draws from the streams [seed, 0..2]; the sensor effects from [seed, 3, ...]


def exposure_gains(frames: int, exposure_jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame gains (T,) exp(g_t): g is a stationary AR(1) of std ``exposure_jitter`` and lag-1 correlation
    :data:`EXPOSURE_CORR` (a slowly drifting auto-exposure, not independent flashes)."""
    g = np.empty(frames)
    innovation = exposure_jitter * np.sqrt(1 - EXPOSURE_CORR**2)
    for t, e in enumerate(rng.standard_normal(frames)):
        g[t] = exposure_jitter * e if t == 0 else EXPOSURE_CORR * g[t - 1] + innovation * e
    return np.exp(g)


def sensor_effects(eyes: list[np.ndarray], sensor_noise: float, exposure_jitter: float, seed: int) -> list[np.ndarray]:
    """Frames (T, H, W, 3) uint8 of each eye with a per-frame exposure gain (shared by the eyes) and Gaussian read
    noise of std ``sensor_noise`` on the [0, 1] colour (each eye its own), clipped and rounded back to uint8."""
    gains = exposure_gains(eyes[0].shape[0], exposure_jitter, np.random.default_rng([seed, _SENSOR_STREAM, 0]))
    out = []
    for k, rgb in enumerate(eyes):
        rng = np.random.default_rng([seed, _SENSOR_STREAM, 1 + k])
        frames = np.empty_like(rgb)
        for t in range(rgb.shape[0]):
            x = rgb[t].astype(np.float32) * np.float32(gains[t] / 255)
            x += np.float32(sensor_noise) * rng.standard_normal(x.shape, dtype=np.float32)
            frames[t] = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
        out.append(frames)
    return out


@dataclass
class SynthClip:
    """A rendered stereo clip with ground truth."""

    rgb: np.ndarray  # (T, H, W, 3) uint8, left eye
    depth: np.ndarray  # (T, H, W) float32 z-depth, metres
    moving_mask: np.ndarray  # (T, H, W) bool, pixels on moving objects
    rgb_right: np.ndarray
    depth_right: np.ndarray
    K: np.ndarray  # (3, 3) float64
    poses: np.ndarray  # (T, 4, 4) camera-to-world, left eye
    poses_right: np.ndarray
    static_frames: int
    scene: dict = field(default_factory=dict)  # Scene.describe(): seed, camera path, object counts ...


def render_clip(
    frames: int,
    height: int,
    width: int,
    fov_deg: float,
    baseline_m: float,
    static_frames: int,
    seed: int,
    camera_path: str = "dolly",
    object_speed: float = 1.0,
    progress: bool = False,
    sensor_noise: float = 0.0,
    exposure_jitter: float = 0.0,
) -> SynthClip:
    """Render a clip of the scene drawn from ``seed``, both eyes, deterministically; ``sensor_noise`` and
    ``exposure_jitter`` (:func:`sensor_effects`) alter the colour only."""
    from tqdm import tqdm

    scene = make_scene(seed, camera_path, object_speed)
    K = intrinsics_from_fov(width, height, fov_deg)
    poses = camera_poses(scene, frames, static_frames)
    poses_r = right_eye_poses(poses, baseline_m)
    views = [(pose, float(i)) for i in range(frames) for pose in (poses[i], poses_r[i])]  # left, right, left, ...
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # NumPy releases the GIL: about 1.8x on 2 cores
        jobs = pool.map(lambda v: render(scene, v[0], K, height, width, v[1]), views)
        rendered = list(tqdm(jobs, total=len(views), desc="render", disable=not progress))
    left, right = rendered[0::2], rendered[1::2]
    rgb = [np.stack([v[0] for v in eye]) for eye in (left, right)]
    rgb = sensor_effects(rgb, sensor_noise, exposure_jitter, seed) if sensor_noise or exposure_jitter else rgb
    return SynthClip(
        rgb=rgb[0],
        depth=np.stack([v[1] for v in left]),
        moving_mask=np.stack([v[2] for v in left]),
        rgb_right=rgb[1],
        depth_right=np.stack([v[1] for v in right]),
        K=K,
        poses=poses,
        poses_right=poses_r,
        static_frames=static_frames,
        scene=scene.describe(),
    )


def write_clip(clip: SynthClip, out_dir: str | Path, fps: int, crf: int, baseline_m: float) -> None:
    """Write ``clip.mp4`` (left eye), ``camera.json`` and ``gt.zarr`` (all ground truth) into ``out_dir``."""
    out_dir = Path(out_dir)
    t, h, w = clip.depth.shape
    encode_mp4(clip.rgb, out_dir / "clip.mp4", fps=fps, crf=crf)
    fx, fy, cx, cy = clip.K[0, 0], clip.K[1, 1], clip.K[0, 2], clip.K[1, 2]
    write_json(out_dir / "camera.json", {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "width": w, "height": h})
    with atomic_path(out_dir / "gt.zarr") as tmp:
        g = create_group(
            tmp,
            {
                "description": "synthetic stand-in clip rendered by refiner.data.synth (not real data)",
                "baseline_m": baseline_m,
                "fps": fps,
                "static_frames": clip.static_frames,
                "depth_units": "z-depth, metres",
                "pose_convention": "camera-to-world, OpenCV axes",
                "scene": clip.scene,
            },
        )
        for name, data in (
            ("depth", clip.depth),
            ("depth_right", clip.depth_right),
            ("moving_mask", clip.moving_mask.astype(np.uint8)),
            ("rgb_right", clip.rgb_right),
        ):
            frames_array(g, name, data.shape, data.dtype)[...] = data
        small_array(g, "K", clip.K)
        small_array(g, "poses", clip.poses)
        small_array(g, "poses_right", clip.poses_right)


def render_to(out_dir: str | Path, spec, seed: int, progress: bool = False) -> SynthClip:
    """Render a clip from a synthetic spec (``corpus.synthetic`` merged with a clip's overrides: frames, height,
    width, fov_deg, baseline_m, static_frames, camera_path, object_speed, sensor_noise, exposure_jitter, fps, crf)
    and write it to ``out_dir``."""
    clip = render_clip(
        spec.frames,
        spec.height,
        spec.width,
        spec.fov_deg,
        spec.baseline_m,
        spec.static_frames,
        seed,
        camera_path=spec.camera_path,
        object_speed=spec.object_speed,
        progress=progress,
        sensor_noise=spec.sensor_noise,
        exposure_jitter=spec.exposure_jitter,
    )
    write_clip(clip, out_dir, fps=spec.fps, crf=spec.crf, baseline_m=spec.baseline_m)
    return clip

"""The embedded default clip: a small analytic ray caster of a textured room.

This is a synthetic stand-in for real video, rendered with exact ground truth: z-depth
in metres, intrinsics, camera-to-world poses, a right-eye view at a fixed baseline, and a
mask of moving objects. Axes follow OpenCV (x right, y down, z forward) in camera and
world alike. Every ray is cast through a pixel centre, so the depth at a pixel back-projects
exactly onto the surface it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refiner.camera import intrinsics_from_fov
from refiner.store import atomic_path, create_group, frames_array, small_array, write_json
from refiner.video import encode_mp4

_EPS = 1e-6
_LIGHT = np.array([0.3, -1.1, 2.2])


@dataclass(frozen=True)
class Plane:
    axis: int  # 0, 1, 2 for x, y, z
    value: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]
    # centre(t) = center + amplitude * sin(2 pi * t / period + phase); zero amplitude = static
    amplitude: tuple[float, float, float] = (0.0, 0.0, 0.0)
    period: float = 1.0
    phase: float = 0.0

    @property
    def moving(self) -> bool:
        return any(a != 0 for a in self.amplitude)

    def center_at(self, t: float) -> np.ndarray:
        s = np.sin(2 * np.pi * t / self.period + self.phase)
        return np.asarray(self.center) + s * np.asarray(self.amplitude)


@dataclass(frozen=True)
class Scene:
    planes: tuple[Plane, ...]
    boxes: tuple[Box, ...]
    spheres: tuple[Sphere, ...]


ROOM = {"x": (-2.5, 2.5), "y": (-1.4, 1.2), "z": (-1.5, 6.0)}


def make_scene(seed: int, frames: int) -> Scene:
    """The room with its objects; colours and placements jitter with ``seed``."""
    rng = np.random.default_rng(seed)

    def col(base: tuple[float, float, float]) -> tuple[float, float, float]:
        return tuple(np.clip(np.asarray(base) + rng.uniform(-0.08, 0.08, 3), 0.05, 0.95).tolist())

    planes = (
        Plane(0, ROOM["x"][0], col((0.75, 0.55, 0.45))),
        Plane(0, ROOM["x"][1], col((0.45, 0.6, 0.75))),
        Plane(1, ROOM["y"][1], col((0.55, 0.5, 0.4))),  # floor
        Plane(1, ROOM["y"][0], col((0.85, 0.85, 0.8))),  # ceiling
        Plane(2, ROOM["z"][1], col((0.6, 0.75, 0.55))),  # back wall
        Plane(2, ROOM["z"][0], col((0.7, 0.7, 0.7))),  # wall behind the start position
    )
    j = rng.uniform(-0.15, 0.15, 4)
    boxes = (
        Box((-1.6 + j[0], 0.45, 3.0), (-0.6 + j[0], 1.2, 3.9), col((0.55, 0.35, 0.2))),  # table block
        Box((1.2, -0.3 + j[1], 4.4), (2.2, 1.2, 5.2), col((0.3, 0.3, 0.55))),  # cabinet
    )
    period = max(frames, 2) / 1.5
    spheres = (
        Sphere((0.2 + j[2], 0.55, 2.8), 0.35, col((0.8, 0.2, 0.2)), amplitude=(0.7, 0.0, 0.0), period=period),
        Sphere((1.0, 0.4, 2.2), 0.25, col((0.2, 0.7, 0.3)), amplitude=(0.0, 0.35, 0.3), period=period * 0.7, phase=1.0),
        Sphere((-1.3 + j[3], 0.05, 3.45), 0.4, col((0.85, 0.8, 0.25))),  # static, resting on the table
    )
    return Scene(planes, boxes, spheres)


def camera_poses(frames: int, static_frames: int, seed: int) -> np.ndarray:
    """Camera-to-world poses (T, 4, 4): a still segment, then a smooth dolly with pan and tilt."""
    rng = np.random.default_rng(seed + 1)
    sway = rng.uniform(0.8, 1.2)
    poses = np.zeros((frames, 4, 4))
    moving = max(frames - static_frames, 1)
    for i in range(frames):
        s = 0.0 if i < static_frames else (i - static_frames + 1) / moving  # 0 -> 1 over the moving part
        pos = np.array([0.6 * sway * np.sin(np.pi * s), 0.1 * np.sin(2 * np.pi * s), 0.8 * s])
        yaw = np.deg2rad(-12.0 * np.sin(np.pi * s) * sway)
        pitch = np.deg2rad(-8.0 + 4.0 * np.sin(2 * np.pi * s))
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        poses[i, :3, :3] = ry @ rx
        poses[i, :3, 3] = pos
        poses[i, 3, 3] = 1
    return poses


def right_eye_poses(poses: np.ndarray, baseline_m: float) -> np.ndarray:
    """Right-eye poses: the left camera moved by ``baseline_m`` along its own x axis."""
    right = poses.copy()
    right[:, :3, 3] += poses[:, :3, 0] * baseline_m
    return right


def _hash_noise(p: np.ndarray, freq: float) -> np.ndarray:
    """Smooth value noise in [0, 1] anchored to 3D points (N, 3)."""
    q = p * freq
    i = np.floor(q)
    f = q - i
    f = f * f * (3 - 2 * f)

    def h(o: tuple[int, int, int]) -> np.ndarray:
        c = i + np.asarray(o)
        return np.modf(np.abs(np.sin(c @ np.array([12.9898, 78.233, 37.719])) * 43758.5453))[0]

    x00 = h((0, 0, 0)) * (1 - f[:, 0]) + h((1, 0, 0)) * f[:, 0]
    x10 = h((0, 1, 0)) * (1 - f[:, 0]) + h((1, 1, 0)) * f[:, 0]
    x01 = h((0, 0, 1)) * (1 - f[:, 0]) + h((1, 0, 1)) * f[:, 0]
    x11 = h((0, 1, 1)) * (1 - f[:, 0]) + h((1, 1, 1)) * f[:, 0]
    y0 = x00 * (1 - f[:, 1]) + x10 * f[:, 1]
    y1 = x01 * (1 - f[:, 1]) + x11 * f[:, 1]
    return y0 * (1 - f[:, 2]) + y1 * f[:, 2]


def _texture(p: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Object-anchored albedo (N, 3): a checker, coarse and fine value noise."""
    checker = (np.floor(p[:, 0] * 2.5) + np.floor(p[:, 1] * 2.5) + np.floor(p[:, 2] * 2.5)) % 2
    coarse = _hash_noise(p, 3.0)
    fine = _hash_noise(p + 17.0, 14.0)
    shade = 0.55 + 0.2 * checker + 0.2 * coarse + 0.15 * fine
    return base[None, :] * shade[:, None]


def render(
    scene: Scene, pose: np.ndarray, K: np.ndarray, height: int, width: int, t: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view: RGB uint8 (H, W, 3), z-depth float32 (H, W) in metres, moving-object mask bool (H, W)."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    d_cam = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])  # z component is 1
    R, o = pose[:3, :3], pose[:3, 3]
    d = (R @ d_cam).T  # (N, 3); ray parameter t along d equals camera z-depth
    n = d.shape[0]
    best = np.full(n, np.inf)
    normal = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    moving = np.zeros(n, dtype=bool)

    def take(hit_t: np.ndarray, nrm: np.ndarray, local: np.ndarray, color: tuple, is_moving: bool) -> None:
        closer = (hit_t > _EPS) & (hit_t < best)
        if not closer.any():
            return
        best[closer] = hit_t[closer]
        normal[closer] = nrm[closer]
        albedo[closer] = _texture(local[closer], np.asarray(color))
        moving[closer] = is_moving

    with np.errstate(divide="ignore", invalid="ignore"):
        for pl in scene.planes:
            ht = (pl.value - o[pl.axis]) / d[:, pl.axis]
            nrm = np.zeros((n, 3))
            nrm[:, pl.axis] = -np.sign(d[:, pl.axis])
            take(np.where(np.isfinite(ht), ht, np.inf), nrm, o + ht[:, None] * d, pl.color, False)
        for bx in scene.boxes:
            lo, hi = np.asarray(bx.lo), np.asarray(bx.hi)
            t1, t2 = (lo - o) / d, (hi - o) / d
            tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
            tn = np.where(np.isnan(tn), -np.inf, tn)
            tf = np.where(np.isnan(tf), np.inf, tf)
            t_near, t_far = tn.max(1), tf.min(1)
            hit = (t_far >= t_near) & (t_near > _EPS)
            ht = np.where(hit, t_near, np.inf)
            axis = tn.argmax(1)
            nrm = np.zeros((n, 3))
            nrm[np.arange(n), axis] = -np.sign(d[np.arange(n), axis])
            take(ht, nrm, o + np.where(hit, t_near, 0)[:, None] * d, bx.color, False)
        for sp in scene.spheres:
            c = sp.center_at(t)
            oc = o - c
            a = (d * d).sum(1)
            b = 2 * (d @ oc)
            disc = b * b - 4 * a * (oc @ oc - sp.radius**2)
            ht = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
            p = o + np.where(np.isfinite(ht), ht, 0)[:, None] * d
            take(ht, (p - c) / sp.radius, p - c, sp.color, sp.moving)

    if not np.isfinite(best).all():
        raise RuntimeError("synthetic renderer: a ray escaped the room; the camera must stay inside it")
    points = o + best[:, None] * d
    to_light = _LIGHT - points
    to_light /= np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip((normal * to_light).sum(1), 0, 1)
    falloff = 1.0 / (1.0 + 0.04 * ((points - _LIGHT) ** 2).sum(1))
    rgb = albedo * (0.35 + 0.9 * lambert * falloff)[:, None]
    rgb8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return rgb8, best.astype(np.float32).reshape(height, width), moving.reshape(height, width)


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


def render_clip(
    frames: int,
    height: int,
    width: int,
    fov_deg: float,
    baseline_m: float,
    static_frames: int,
    seed: int,
    progress: bool = False,
) -> SynthClip:
    """Render the default clip, both eyes, deterministically from ``seed``."""
    from tqdm import tqdm

    scene = make_scene(seed, frames)
    K = intrinsics_from_fov(width, height, fov_deg)
    poses = camera_poses(frames, static_frames, seed)
    poses_r = right_eye_poses(poses, baseline_m)
    out = {k: [] for k in ("rgb", "depth", "mask", "rgb_r", "depth_r")}
    for i in tqdm(range(frames), desc="render", disable=not progress):
        rgb, depth, mask = render(scene, poses[i], K, height, width, float(i))
        rgb_r, depth_r, _ = render(scene, poses_r[i], K, height, width, float(i))
        for k, v in zip(out, (rgb, depth, mask, rgb_r, depth_r), strict=True):
            out[k].append(v)
    return SynthClip(
        rgb=np.stack(out["rgb"]),
        depth=np.stack(out["depth"]),
        moving_mask=np.stack(out["mask"]),
        rgb_right=np.stack(out["rgb_r"]),
        depth_right=np.stack(out["depth_r"]),
        K=K,
        poses=poses,
        poses_right=poses_r,
        static_frames=static_frames,
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
                "description": "synthetic stand-in clip rendered by refiner.synth (not real data)",
                "baseline_m": baseline_m,
                "fps": fps,
                "static_frames": clip.static_frames,
                "depth_units": "z-depth, metres",
                "pose_convention": "camera-to-world, OpenCV axes",
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

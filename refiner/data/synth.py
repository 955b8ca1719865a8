"""Synthetic clips: a small analytic ray caster of textured rooms, one scene per seed.

These are synthetic stand-ins for real video, rendered with exact ground truth: z-depth in
metres, intrinsics, camera-to-world poses, a right-eye view at a fixed baseline, and a mask of
moving objects. Axes follow OpenCV (x right, y down, z forward) in camera and world alike.
Every ray is cast through a pixel centre, so the depth at a pixel back-projects exactly onto the
surface it shows.

A seed draws the room (size, proportions, partitions and pillars), its furniture (boxes and
spheres, static and moving), every surface's material (colour, checker and noise frequency,
contrast; textures are anchored to the object) and the object motion. ``camera_path`` picks the
camera's motion after a still segment: ``still``, ``pan`` (turning about the vertical axis),
``dolly`` (a sideways dolly with pan and tilt), ``forward`` (along the view axis) or ``orbit`` (an
arc around a point, looking at it). Objects keep clear of every camera position on the path and
moving objects stay inside the room, so the camera never passes through anything.

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
from functools import lru_cache
from pathlib import Path

import numpy as np

from refiner.core.choices import CAMERA_PATHS
from refiner.core.store import atomic_path, create_group, frames_array, small_array, write_json
from refiner.core.video import encode_mp4
from refiner.geometry.intrinsics import intrinsics_from_fov, pixel_rays

_EPS = 1e-6
_CAMERA_WALL_MARGIN_M = 0.35  # every camera position keeps this far from the walls
_CLEARANCE_M = 0.5  # every object keeps this far from every camera position
_PATH_SAMPLES = 65  # samples of a camera path when checking clearances (independent of the frame count)
_NOISE_FLAT = np.random.default_rng(20240917).random(64**3, dtype=np.float32)  # a 64^3 value-noise lattice
EXPOSURE_CORR = 0.8  # lag-1 correlation of the per-frame log gain of ``exposure_jitter``
_SENSOR_STREAM = 3  # make_scene draws from the streams [seed, 0..2]; the sensor effects from [seed, 3, ...]

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Material:
    color: Vec3  # base albedo, 0-1
    checker_freq: float  # checker cells per metre
    checker_weight: float  # share of the checker in the pattern, 0-1
    noise_freq: float  # coarse value-noise cells per metre (the fine octave is 4.7 times finer)
    contrast: float  # 0 = flat colour, 1 = full-strength pattern
    offset: Vec3 = (0.0, 0.0, 0.0)  # shifts the noise lattice so equal materials still differ


@dataclass(frozen=True)
class Motion:
    """offset(t) = amplitude * sin(rate * t + phase), t in frames."""

    amplitude: Vec3
    rate: float  # radians per frame
    phase: float

    def offset(self, t: float) -> np.ndarray:
        return np.asarray(self.amplitude) * np.sin(self.rate * t + self.phase)


@dataclass(frozen=True)
class Box:
    lo: Vec3
    hi: Vec3
    material: Material
    motion: Motion | None = None

    @property
    def moving(self) -> bool:
        return self.motion is not None and self.motion.rate != 0 and any(a != 0 for a in self.motion.amplitude)

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) at frame t."""
        off = self.motion.offset(t) if self.motion is not None else np.zeros(3)
        return np.asarray(self.lo) + off, np.asarray(self.hi) + off

    def swept(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box of every position the box ever takes."""
        amp = np.abs(self.motion.amplitude) if self.motion is not None else np.zeros(3)
        return np.asarray(self.lo) - amp, np.asarray(self.hi) + amp


@dataclass(frozen=True)
class Sphere:
    center: Vec3
    radius: float
    material: Material
    motion: Motion | None = None

    @property
    def moving(self) -> bool:
        return self.motion is not None and self.motion.rate != 0 and any(a != 0 for a in self.motion.amplitude)

    def center_at(self, t: float) -> np.ndarray:
        off = self.motion.offset(t) if self.motion is not None else np.zeros(3)
        return np.asarray(self.center) + off

    def swept(self) -> tuple[np.ndarray, np.ndarray]:
        amp = np.abs(self.motion.amplitude) if self.motion is not None else np.zeros(3)
        return np.asarray(self.center) - self.radius - amp, np.asarray(self.center) + self.radius + amp


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Yaw about the vertical (y) axis, then pitch about x; positive yaw turns right, negative pitch looks down."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return ry @ rx


def _look_at(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation (columns x, y, z) of a camera at ``pos`` looking at ``target`` with no roll (y stays down)."""
    z = (target - pos) / np.linalg.norm(target - pos)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _ease(s: float) -> float:
    """0 -> 1 with zero velocity at both ends."""
    return 0.5 - 0.5 * np.cos(np.pi * s)


@dataclass(frozen=True)
class Rig:
    """A camera path: ``pose(s)`` for s in [0, 1], where s = 0 is the still start."""

    path: str
    start: Vec3
    yaw: float
    pitch: float
    extent: float  # dolly/forward: metres travelled; pan/orbit: radians turned
    sway: float = 0.0  # dolly: sideways amplitude in metres (signed)
    target: Vec3 = (0.0, 0.0, 0.0)  # orbit: the look-at point

    def pose(self, s: float) -> np.ndarray:
        """Camera-to-world pose (4, 4) at path parameter s."""
        p0, R0, e = np.asarray(self.start), _rotation(self.yaw, self.pitch), _ease(s)
        if self.path == "still" or s <= 0:
            R, pos = R0, p0
        elif self.path == "pan":  # turn about a neck 6 cm behind the lens: rotation, little translation
            R = _rotation(self.yaw + self.extent * e, self.pitch + np.deg2rad(3.0) * np.sin(np.pi * s))
            pos = p0 - R0[:, 2] * 0.06 + R[:, 2] * 0.06
        elif self.path == "dolly":
            pos = p0 + _rotation(self.yaw, 0.0) @ np.array(
                [self.sway * np.sin(np.pi * s), 0.08 * np.sin(2 * np.pi * s), self.extent * s]
            )
            R = _rotation(
                self.yaw - np.deg2rad(20.0) * self.sway * np.sin(np.pi * s),
                self.pitch + np.deg2rad(4.0) * np.sin(2 * np.pi * s),
            )
        elif self.path == "forward":
            R, pos = R0, p0 + R0[:, 2] * self.extent * e
        elif self.path == "orbit":
            target = np.asarray(self.target)
            pos = target + _rotation(self.extent * e, 0.0) @ (p0 - target)
            R = _look_at(pos, target)
        else:
            raise ValueError(f"camera_path {self.path!r} is not one of {CAMERA_PATHS}")
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = R, pos
        return out

    def positions(self) -> np.ndarray:
        """Camera centres (S, 3) densely along the path, for clearance checks."""
        return np.stack([self.pose(s)[:3, 3] for s in np.linspace(0.0, 1.0, _PATH_SAMPLES)])


@dataclass(frozen=True)
class Scene:
    lo: Vec3  # room corners (the room is the box lo..hi, seen from inside)
    hi: Vec3
    walls: tuple[Material, ...]  # -x, +x, -y (ceiling), +y (floor), -z (behind the start), +z (far wall)
    boxes: tuple[Box, ...]
    spheres: tuple[Sphere, ...]
    rig: Rig
    light: Vec3
    seed: int
    object_speed: float

    @property
    def objects(self) -> tuple[Box | Sphere, ...]:
        return self.boxes + self.spheres

    def describe(self) -> dict:
        """A small JSON-able description of the scene."""
        return {
            "seed": int(self.seed),
            "camera_path": self.rig.path,
            "object_speed": float(self.object_speed),
            "objects": len(self.objects),
            "moving_objects": sum(o.moving for o in self.objects),
            "boxes": len(self.boxes),
            "spheres": len(self.spheres),
            "room_size_m": [round(float(h - lo), 3) for lo, h in zip(self.lo, self.hi, strict=True)],
        }


def _material(rng: np.random.Generator, muted: bool = False, fine: bool = False) -> Material:
    """A random material: any hue (``muted``: half-way to grey, for walls), ``fine``: twice the pattern frequency."""
    hue = rng.uniform(0, 1)
    color = 0.5 + 0.38 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
    if muted:
        color = 0.5 * color + 0.5 * rng.uniform(0.55, 0.85)
    color = color * rng.uniform(0.6, 1.0) + rng.uniform(0.0, 0.15)
    scale = 2.0 if fine else 1.0
    return Material(
        color=tuple(np.clip(color, 0.06, 0.95).tolist()),
        checker_freq=float(rng.uniform(1.2, 4.0) * scale),
        checker_weight=float(rng.choice([0.0, rng.uniform(0.15, 0.5)])),
        noise_freq=float(rng.uniform(1.5, 5.0) * scale),
        contrast=float(rng.uniform(0.3, 0.8)),
        offset=tuple(rng.uniform(0, 64, 3).tolist()),
    )


def _room(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[Material, ...]]:
    """Room corners and wall materials; the camera starts near the origin, the floor is at +y."""
    width, height = rng.uniform(3.6, 6.0), rng.uniform(2.4, 3.2)
    eye = rng.uniform(1.2, 1.6)  # eye height above the floor
    x0 = rng.uniform(-0.35, 0.35) * width / 2
    lo = np.array([x0 - width / 2, eye - height, -rng.uniform(0.8, 1.5)])
    hi = np.array([x0 + width / 2, eye, rng.uniform(4.8, 8.0)])
    walls = tuple(_material(rng, muted=True, fine=k == 3) for k in range(6))  # k = 3: the floor
    return lo, hi, walls


def _inside(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: float) -> bool:
    return bool(((points >= lo + margin) & (points <= hi - margin)).all())


def _rig(rng: np.random.Generator, path: str, lo: np.ndarray, hi: np.ndarray) -> Rig:
    """A camera path of kind ``path`` that keeps the camera inside the room (its extent shrinks until it does)."""
    if path not in CAMERA_PATHS:
        raise ValueError(f"camera_path {path!r} is not one of {CAMERA_PATHS}")
    start = (float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.1, 0.1)), 0.0)
    yaw, pitch = float(np.deg2rad(rng.uniform(-10, 10))), float(np.deg2rad(rng.uniform(-12, -4)))
    sign = float(rng.choice([-1.0, 1.0]))
    extent = {
        "still": 0.0,
        "pan": sign * np.deg2rad(rng.uniform(15, 35)),
        "dolly": rng.uniform(0.5, 1.0),
        "forward": min(rng.uniform(1.0, 2.2), hi[2] - 2.5),
        "orbit": sign * np.deg2rad(rng.uniform(20, 40)),
    }[path]
    sway = -sign * rng.uniform(0.35, 0.7)
    radius = rng.uniform(1.8, 3.0)
    target = np.asarray(start) + _rotation(yaw, pitch) @ np.array([0.0, 0.0, radius])
    rig = Rig(path, start, yaw, pitch, float(extent), float(sway), tuple(target.tolist()))
    for _ in range(20):
        if _inside(rig.positions(), lo, hi, _CAMERA_WALL_MARGIN_M):
            return rig
        rig = Rig(path, start, yaw, pitch, rig.extent * 0.8, rig.sway * 0.8, rig.target)
    raise RuntimeError(f"synthetic scene: could not fit a {path} camera path in the room")


def _clear(lo: np.ndarray, hi: np.ndarray, cams: np.ndarray, others: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether the box lo..hi keeps its clearance from the camera positions and does not overlap ``others``."""
    gap = np.maximum(np.maximum(lo - cams, cams - hi), 0.0)
    if np.linalg.norm(gap, axis=1).min() < _CLEARANCE_M:
        return False
    return all(((lo >= o_hi + 0.02) | (hi <= o_lo - 0.02)).any() for o_lo, o_hi in others)


def _architecture(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> list[Box]:
    """Room-shaping boxes: partitions from a side wall, free-standing pillars, low counters along a wall."""
    boxes = []
    for _ in range(int(rng.integers(0, 3))):
        kind, z = rng.choice(["partition", "pillar", "counter"]), rng.uniform(1.5, hi[2] - 0.6)
        side = int(rng.integers(0, 2))
        if kind == "partition":
            length, t = rng.uniform(0.6, 1.4), rng.uniform(0.1, 0.2)
            x = (lo[0], lo[0] + length) if side == 0 else (hi[0] - length, hi[0])
            box_lo, box_hi = (x[0], lo[1], z), (x[1], hi[1], z + t)
        elif kind == "pillar":
            half, x = rng.uniform(0.12, 0.3), rng.uniform(lo[0] + 0.5, hi[0] - 0.5)
            box_lo, box_hi = (x - half, lo[1], z - half), (x + half, hi[1], z + half)
        else:
            depth, length, top = rng.uniform(0.3, 0.6), rng.uniform(1.0, 2.5), hi[1] - rng.uniform(0.7, 1.0)
            x = (lo[0], lo[0] + depth) if side == 0 else (hi[0] - depth, hi[0])
            box_lo, box_hi = (x[0], top, z), (x[1], hi[1], min(z + length, hi[2]))
        boxes.append(Box(tuple(map(float, box_lo)), tuple(map(float, box_hi)), _material(rng)))
    return boxes


def _floor_spot(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, half: float) -> tuple[float, float]:
    """(x, z) of an object of horizontal half-size ``half`` on the floor, in front of the start position."""
    return float(rng.uniform(lo[0] + half + 0.05, hi[0] - half - 0.05)), float(rng.uniform(0.9, hi[2] - half - 0.1))


def _static_objects(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, cams: np.ndarray, taken: list
) -> tuple[list[Box], list[Sphere]]:
    """Furniture blocks on the floor, and balls on the floor or resting on a block."""
    boxes, spheres = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _ in range(30):
            sx, sz, h = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6), rng.uniform(0.35, 1.3)
            x, z = _floor_spot(rng, lo, hi, max(sx, sz))
            b_lo, b_hi = np.array([x - sx, hi[1] - h, z - sz]), np.array([x + sx, hi[1], z + sz])
            if _clear(b_lo, b_hi, cams, taken):
                boxes.append(Box(tuple(b_lo.tolist()), tuple(b_hi.tolist()), _material(rng)))
                taken.append((b_lo, b_hi))
                break
    for _ in range(int(rng.integers(0, 4))):
        for _ in range(30):
            r = rng.uniform(0.15, 0.45)
            if boxes and rng.random() < 0.5:  # resting on a block
                top = boxes[int(rng.integers(0, len(boxes)))]
                x, z = (top.lo[0] + top.hi[0]) / 2, (top.lo[2] + top.hi[2]) / 2
                c, r = np.array([x, top.lo[1] - min(r, 0.3), z]), min(r, 0.3)
                others = [t for t in taken if not np.allclose(t[0], top.lo)]
            else:
                x, z = _floor_spot(rng, lo, hi, r)
                c, others = np.array([x, hi[1] - r, z]), taken
            if c[1] - r > lo[1] + 0.1 and _clear(c - r, c + r, cams, others):
                spheres.append(Sphere(tuple(c.tolist()), float(r), _material(rng, fine=True)))
                taken.append((c - r, c + r))
                break
    return boxes, spheres


def _motion(rng: np.random.Generator, vertical: bool, object_speed: float) -> Motion:
    """Oscillation along a random direction: 0.2-0.7 m amplitude, 1-2.5 s period at 24 fps, scaled by speed."""
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), rng.uniform(-0.6, 0.6) if vertical else 0.0, np.sin(angle)])
    amplitude = direction / np.linalg.norm(direction) * rng.uniform(0.2, 0.7)
    period = rng.uniform(24, 60)
    return Motion(tuple(amplitude.tolist()), float(2 * np.pi * object_speed / period), float(rng.uniform(0, 2 * np.pi)))


def _spot_in_view(rng: np.random.Generator, rig: Rig) -> tuple[float, float]:
    """(x, z) 1.6-4.5 m ahead of the start position, within 22 degrees of its heading."""
    heading = rig.yaw + np.deg2rad(rng.uniform(-22, 22))
    dist = rng.uniform(1.6, 4.5)
    return float(rig.start[0] + dist * np.sin(heading)), float(rig.start[2] + dist * np.cos(heading))


def _moving_objects(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, rig: Rig, taken: list, object_speed: float
) -> tuple[list[Box], list[Sphere]]:
    """1-3 moving objects in view at the start: floating balls, or blocks sliding on the floor; their whole sweep
    stays in the room and clear of the camera path."""
    boxes, spheres, cams = [], [], rig.positions()
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(40):
            is_ball = rng.random() < 0.7
            motion = _motion(rng, is_ball, object_speed)
            amp = np.abs(motion.amplitude)
            x, z = _spot_in_view(rng, rig)
            if is_ball:
                r = rng.uniform(0.15, 0.4)
                c = np.array([x, rng.uniform(hi[1] - 1.3, hi[1] - r - amp[1] - 0.02), z])
                s_lo, s_hi = c - r - amp, c + r + amp
            else:
                half = rng.uniform(0.15, 0.35, 3)
                c = np.array([x, hi[1] - half[1] - 2e-3, z])  # sliding just above the floor
                s_lo, s_hi = c - half - amp, c + half + amp
            if not (_inside(np.stack([s_lo, s_hi]), lo, hi, 1e-3) and _clear(s_lo, s_hi, cams, taken)):
                continue
            taken.append((s_lo, s_hi))
            if is_ball:
                spheres.append(Sphere(tuple(c.tolist()), float(r), _material(rng, fine=True), motion))
            else:
                boxes.append(Box(tuple((c - half).tolist()), tuple((c + half).tolist()), _material(rng), motion))
            break
    return boxes, spheres


def make_scene(seed: int, camera_path: str = "dolly", object_speed: float = 1.0) -> Scene:
    """The room, its objects and the camera rig, deterministically from ``seed``."""
    rng_room, rng_rig, rng_obj = (np.random.default_rng([seed, k]) for k in range(3))
    lo, hi, walls = _room(rng_room)
    rig = _rig(rng_rig, camera_path, lo, hi)
    cams = rig.positions()
    arch = [b for b in _architecture(rng_obj, lo, hi) if _clear(np.asarray(b.lo), np.asarray(b.hi), cams, [])]
    taken = [(np.asarray(b.lo), np.asarray(b.hi)) for b in arch]
    boxes, spheres = _static_objects(rng_obj, lo, hi, cams, taken)
    m_boxes, m_spheres = _moving_objects(rng_obj, lo, hi, rig, taken, object_speed)
    light = ((lo[0] + hi[0]) / 2, lo[1] + 0.3, (lo[2] + hi[2]) / 2 - 0.5)
    return Scene(
        tuple(lo.tolist()),
        tuple(hi.tolist()),
        walls,
        tuple(arch + boxes + m_boxes),
        tuple(spheres + m_spheres),
        rig,
        tuple(map(float, light)),
        int(seed),
        float(object_speed),
    )


def camera_poses(scene: Scene, frames: int, static_frames: int) -> np.ndarray:
    """Camera-to-world poses (T, 4, 4): ``static_frames`` still frames, then the scene's camera path."""
    moving = max(frames - static_frames, 1)
    s = [0.0 if i < static_frames else (i - static_frames + 1) / moving for i in range(frames)]
    return np.stack([scene.rig.pose(x) for x in s]) if frames else np.zeros((0, 4, 4))


def right_eye_poses(poses: np.ndarray, baseline_m: float) -> np.ndarray:
    """Right-eye poses: the left camera moved by ``baseline_m`` along its own x axis."""
    right = poses.copy()
    right[:, :3, 3] += poses[:, :3, 0] * baseline_m
    return right


def _value_noise(p: np.ndarray, freq: float) -> np.ndarray:
    """Smooth value noise in [0, 1] (N,) float32 at 3D points p (3, N), anchored to the points."""
    q = p.astype(np.float32) * np.float32(freq)
    i = np.floor(q)
    f = q - i
    f = f * f * (3 - 2 * f)
    i = i.astype(np.int32) & 63
    strides = np.array([[4096], [64], [1]], dtype=np.int32)  # flat index into the 64^3 lattice
    lo, hi = i * strides, ((i + 1) & 63) * strides
    xy = [a + b for a in (lo[0], hi[0]) for b in (lo[1], hi[1])]
    v = [_NOISE_FLAT.take(a + b) for a in xy for b in (lo[2], hi[2])]  # corners (0,0,0), (0,0,1), ... (z fastest)
    fx, fy, fz = f
    over_z = [a + (b - a) * fz for a, b in zip(v[0::2], v[1::2], strict=True)]
    over_y = [a + (b - a) * fy for a, b in zip(over_z[0::2], over_z[1::2], strict=True)]
    return over_y[0] + (over_y[1] - over_y[0]) * fx


def _texture(p: np.ndarray, m: Material) -> np.ndarray:
    """Albedo (N, 3) float32 at object-anchored points p (3, N): checker, coarse and fine value noise."""
    q = p + np.asarray(m.offset)[:, None]
    checker = (np.floor(p * m.checker_freq).sum(0) % 2).astype(np.float32)
    coarse = _value_noise(q, m.noise_freq)
    fine = _value_noise(q + 17.0, m.noise_freq * 4.7)
    w = m.checker_weight
    pattern = w * checker + (1 - w) * (0.6 * coarse + 0.4 * fine)
    shade = 1.0 - m.contrast * (1.0 - pattern)
    return np.asarray(m.color, dtype=np.float32)[None, :] * shade[:, None]


@lru_cache(maxsize=8)
def _camera_rays(K_bytes: bytes, height: int, width: int) -> np.ndarray:
    """:func:`refiner.geometry.intrinsics.pixel_rays` of K given as bytes (hashable: a clip's rays are made once),
    read-only."""
    rays = pixel_rays(np.frombuffer(K_bytes, dtype=np.float64).reshape(3, 3), height, width)
    rays.setflags(write=False)
    return rays


def _hit_room(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (N,) to the wall each ray leaves the room by, and the wall index (N,) 0-5."""
    lo, hi = np.asarray(scene.lo), np.asarray(scene.hi)
    if not (((o > lo) & (o < hi)).all()):
        raise RuntimeError("synthetic renderer: a ray escaped the room; the camera must stay inside it")
    with np.errstate(divide="ignore"):
        ts = np.stack([(np.where(d[a] > 0, hi[a], lo[a]) - o[a]) / d[a] for a in range(3)])
    ts[~np.isfinite(ts)] = np.inf
    axis = ts.argmin(0)
    best = np.take_along_axis(ts, axis[None], 0)[0]
    return best, 2 * axis + (np.take_along_axis(d, axis[None], 0)[0] > 0)


def _hit_box(lo: np.ndarray, hi: np.ndarray, o: np.ndarray, inv_d: np.ndarray) -> np.ndarray:
    """Entry distance (N,) of each ray into the box lo..hi (inf where it misses or starts inside)."""
    with np.errstate(invalid="ignore"):
        t_near, t_far = np.full(inv_d.shape[1], -np.inf), np.full(inv_d.shape[1], np.inf)
        for a in range(3):
            t1, t2 = (lo[a] - o[a]) * inv_d[a], (hi[a] - o[a]) * inv_d[a]
            t_near = np.fmax(t_near, np.fmin(t1, t2))
            t_far = np.fmin(t_far, np.fmax(t1, t2))
    return np.where((t_far >= t_near) & (t_near > _EPS), t_near, np.inf)


def _hit_sphere(c: np.ndarray, r: float, o: np.ndarray, d: np.ndarray, dd: np.ndarray) -> np.ndarray:
    """Entry distance (N,) of each ray into the sphere (inf where it misses)."""
    oc = o - c
    b = oc @ d
    disc = b * b - dd * (oc @ oc - r * r)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / dd
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _screen_rect(lo: np.ndarray, hi: np.ndarray, pose: np.ndarray, K: np.ndarray, shape: tuple[int, int]):
    """Pixel rows/columns (a pair of slices) that can see the box lo..hi: the bounds of its projected corners
    (exact for a box in front of the camera), the whole image if it reaches behind the camera, None if off-screen."""
    corners = np.stack(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij"), -1).reshape(8, 3)
    cam = (corners - pose[:3, 3]) @ pose[:3, :3]  # R^T (c - o): camera coordinates
    if (cam[:, 2] <= 1e-6).any():
        return slice(None), slice(None)
    pix = cam @ K.T
    uv = pix[:, :2] / pix[:, 2:]
    (u0, v0), (u1, v1) = np.floor(uv.min(0)).astype(int) - 1, np.ceil(uv.max(0)).astype(int) + 2
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, shape[1]), min(v1, shape[0])
    return (slice(v0, v1), slice(u0, u1)) if u0 < u1 and v0 < v1 else None


def _cast(scene: Scene, pose: np.ndarray, K: np.ndarray, d: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance (H, W) and surface id (H, W) of the rays d (3, H, W): 0-5 walls, 6 + k the k-th
    object of ``scene.objects``. Each object is tested only on the pixels its bounding box projects to."""
    o = pose[:3, 3]
    best, ids = _hit_room(scene, o, d.reshape(3, -1))
    best, ids = best.reshape(d.shape[1:]), ids.reshape(d.shape[1:])
    for k, obj in enumerate(scene.objects):
        lo, hi = obj.at(t) if isinstance(obj, Box) else (obj.center_at(t) - obj.radius, obj.center_at(t) + obj.radius)
        rect = _screen_rect(lo, hi, pose, K, best.shape)
        if rect is None:
            continue
        sub = d[(slice(None), *rect)].reshape(3, -1)
        if isinstance(obj, Box):
            with np.errstate(divide="ignore"):
                ht = _hit_box(lo, hi, o, 1.0 / sub)
        else:
            ht = _hit_sphere(obj.center_at(t), obj.radius, o, sub, (sub * sub).sum(0))
        view_best, view_ids = best[rect], ids[rect]  # views: writing them writes best and ids
        closer = ht.reshape(view_best.shape) < view_best
        view_best[closer] = ht.reshape(view_best.shape)[closer]
        view_ids[closer] = 6 + k
    if not np.isfinite(best).all() or (best <= _EPS).any():
        raise RuntimeError("synthetic renderer: a ray escaped the room; the camera must stay inside it")
    return best.ravel(), ids.ravel()


def _surface(scene: Scene, sid: int, p: np.ndarray, d: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Albedo (n, 3) and unit normal (3, n) of surface ``sid`` at its hit points p (3, n); d the rays (3, n)."""
    if sid < 6:
        axis = sid // 2
        normal = np.zeros_like(p)
        normal[axis] = -np.sign(d[axis])
        return _texture(p, scene.walls[sid]), normal
    obj = scene.objects[sid - 6]
    if isinstance(obj, Box):
        b_lo, b_hi = obj.at(t)
        centre, half = (b_lo + b_hi)[:, None] / 2, (b_hi - b_lo)[:, None] / 2
        q = (p - centre) / half
        axis = np.abs(q).argmax(0)
        normal = np.zeros_like(p)
        normal[axis, np.arange(p.shape[1])] = np.sign(q[axis, np.arange(p.shape[1])])
        return _texture(p - centre, obj.material), normal
    local = p - obj.center_at(t)[:, None]
    return _texture(local, obj.material), local / obj.radius


def render(
    scene: Scene, pose: np.ndarray, K: np.ndarray, height: int, width: int, t: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view: RGB uint8 (H, W, 3), z-depth float32 (H, W) in metres, moving-object mask bool (H, W)."""
    rays = _camera_rays(np.ascontiguousarray(K, dtype=np.float64).tobytes(), height, width)
    o, K = pose[:3, 3], np.asarray(K, dtype=np.float64)
    d = pose[:3, :3] @ rays  # (3, N); the ray parameter along d equals camera z-depth
    best, ids = _cast(scene, pose, K, d.reshape(3, height, width), t)
    n = best.size
    albedo, normal = np.empty((n, 3), np.float32), np.empty((3, n), np.float32)
    hit = o[:, None] + best * d  # world points (3, N)
    order = np.argsort(ids, kind="stable")
    bounds = np.cumsum(np.bincount(ids, minlength=6 + len(scene.objects)))
    for sid, (start, stop) in enumerate(zip(np.r_[0, bounds[:-1]], bounds, strict=True)):
        if stop > start:
            idx = order[start:stop]
            albedo[idx], normal[:, idx] = _surface(scene, sid, hit[:, idx], d[:, idx], t)
    points = hit.astype(np.float32)
    to_light = np.asarray(scene.light, dtype=np.float32)[:, None] - points
    dist2 = (to_light * to_light).sum(0)
    lambert = np.clip((normal * to_light).sum(0) / np.sqrt(dist2), 0, 1)
    rgb = albedo * (0.35 + 0.9 * lambert / (1.0 + 0.04 * dist2))[:, None]
    rgb8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    moving_ids = [6 + k for k, obj in enumerate(scene.objects) if obj.moving]
    moving = np.isin(ids, moving_ids).reshape(height, width)
    return rgb8, best.astype(np.float32).reshape(height, width), moving


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

"""Synthetic scenes, one per seed, and their camera paths.

A seed draws the room (size, proportions, partitions and pillars), its furniture (boxes and
spheres, static and moving), every surface's material (colour, checker and noise frequency,
contrast; textures are anchored to the object) and the object motion. ``camera_path`` picks the
camera's motion after a still segment: ``still``, ``pan`` (turning about the vertical axis),
``dolly`` (a sideways dolly with pan and tilt), ``forward`` (along the view axis) or ``orbit`` (an
arc around a point, looking at it). Objects keep clear of every camera position on the path and
moving objects stay inside the room, so the camera never passes through anything.
"""

from __future__ import annotations

import numpy as np

from refiner.core.choices import CAMERA_PATHS
from refiner.data.synth.shapes import Box, Material, Motion, Rig, Scene, Sphere, rotation

_CAMERA_WALL_MARGIN_M = 0.35  # every camera position keeps this far from the walls


_CLEARANCE_M = 0.5  # every object keeps this far from every camera position


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
    target = np.asarray(start) + rotation(yaw, pitch) @ np.array([0.0, 0.0, radius])
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
        boxes.append(Box(lo=tuple(map(float, box_lo)), hi=tuple(map(float, box_hi)), material=_material(rng)))
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
                boxes.append(Box(lo=tuple(b_lo.tolist()), hi=tuple(b_hi.tolist()), material=_material(rng)))
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
                spheres.append(Sphere(center=tuple(c.tolist()), radius=float(r), material=_material(rng, fine=True)))
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
                spheres.append(
                    Sphere(center=tuple(c.tolist()), radius=float(r), material=_material(rng, fine=True), motion=motion)
                )
            else:
                boxes.append(
                    Box(
                        lo=tuple((c - half).tolist()),
                        hi=tuple((c + half).tolist()),
                        material=_material(rng),
                        motion=motion,
                    )
                )
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

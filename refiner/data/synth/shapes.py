"""The pieces of a synthetic scene: materials, motions, boxes, spheres, the camera rig and the scene itself.

Axes follow OpenCV (x right, y down, z forward) in camera and world alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refiner.core.choices import CAMERA_PATHS

_PATH_SAMPLES = 65  # samples of a camera path when checking clearances (independent of the frame count)


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


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What every shape of a scene has: a material and an optional :class:`Motion`; whether and where it moves."""

    material: Material
    motion: Motion | None = None

    @property
    def moving(self) -> bool:
        return self.motion is not None and self.motion.rate != 0 and any(a != 0 for a in self.motion.amplitude)

    def offset(self, t: float) -> np.ndarray:
        """The shape's displacement at frame t (zero without a motion)."""
        return self.motion.offset(t) if self.motion is not None else np.zeros(3)

    def reach(self) -> np.ndarray:
        """How far the shape ever moves from its rest position, per axis."""
        return np.abs(self.motion.amplitude) if self.motion is not None else np.zeros(3)


@dataclass(frozen=True, kw_only=True)
class Box(Shape):
    """An axis-aligned box from ``lo`` to ``hi`` (world metres) at rest."""

    lo: Vec3
    hi: Vec3

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) at frame t."""
        off = self.offset(t)
        return np.asarray(self.lo) + off, np.asarray(self.hi) + off

    def swept(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box of every position the box ever takes."""
        return np.asarray(self.lo) - self.reach(), np.asarray(self.hi) + self.reach()


@dataclass(frozen=True, kw_only=True)
class Sphere(Shape):
    """A sphere of ``radius`` metres around ``center`` at rest."""

    center: Vec3
    radius: float

    def center_at(self, t: float) -> np.ndarray:
        return np.asarray(self.center) + self.offset(t)

    def swept(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box of every position the sphere ever takes."""
        return np.asarray(self.center) - self.radius - self.reach(), np.asarray(
            self.center
        ) + self.radius + self.reach()


def rotation(yaw: float, pitch: float) -> np.ndarray:
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
        p0, R0, e = np.asarray(self.start), rotation(self.yaw, self.pitch), _ease(s)
        if self.path == "still" or s <= 0:
            R, pos = R0, p0
        elif self.path == "pan":  # turn about a neck 6 cm behind the lens: rotation, little translation
            R = rotation(self.yaw + self.extent * e, self.pitch + np.deg2rad(3.0) * np.sin(np.pi * s))
            pos = p0 - R0[:, 2] * 0.06 + R[:, 2] * 0.06
        elif self.path == "dolly":
            pos = p0 + rotation(self.yaw, 0.0) @ np.array(
                [self.sway * np.sin(np.pi * s), 0.08 * np.sin(2 * np.pi * s), self.extent * s]
            )
            R = rotation(
                self.yaw - np.deg2rad(20.0) * self.sway * np.sin(np.pi * s),
                self.pitch + np.deg2rad(4.0) * np.sin(2 * np.pi * s),
            )
        elif self.path == "forward":
            R, pos = R0, p0 + R0[:, 2] * self.extent * e
        elif self.path == "orbit":
            target = np.asarray(self.target)
            pos = target + rotation(self.extent * e, 0.0) @ (p0 - target)
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

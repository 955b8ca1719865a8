"""A small analytic ray caster of textured rooms.

These are synthetic stand-ins for real video, rendered with exact ground truth: z-depth in
metres, intrinsics, camera-to-world poses, a right-eye view at a fixed baseline, and a mask of
moving objects. Axes follow OpenCV (x right, y down, z forward) in camera and world alike.
Every ray is cast through a pixel centre, so the depth at a pixel back-projects exactly onto the
surface it shows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from refiner.data.synth.shapes import Box, Material, Scene
from refiner.geometry.intrinsics import pixel_rays

_EPS = 1e-6


_NOISE_FLAT = np.random.default_rng(20240917).random(64**3, dtype=np.float32)  # a 64^3 value-noise lattice


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

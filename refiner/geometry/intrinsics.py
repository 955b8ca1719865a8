"""Pinhole intrinsics from a field of view and the rays through pixel centres, in NumPy (for the stages
that render or ingest without torch; the batched torch geometry is :mod:`refiner.geometry.camera`)."""

from __future__ import annotations

import numpy as np


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Square-pixel pinhole K for a horizontal field of view, principal point at the image centre."""
    fx = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[fx, 0, (width - 1) / 2], [0, fx, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Ray directions K⁻¹[u, v, 1] (3, H·W) through the pixel centres in row-major order, with z exactly 1 (so a
    ray's length parameter is z-depth, and |ray| turns distance from the camera centre into z-depth)."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    rays = np.linalg.inv(np.asarray(K, dtype=np.float64)) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    rays[2] = 1.0
    return rays

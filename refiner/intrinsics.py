"""Pinhole intrinsics from a field of view, in NumPy (torch-free, for the stages that render or ingest
without torch; the batched torch geometry is :mod:`refiner.camera`)."""

from __future__ import annotations

import numpy as np


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Square-pixel pinhole K for a horizontal field of view, principal point at the image centre."""
    fx = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[fx, 0, (width - 1) / 2], [0, fx, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)

"""The mapping M from the low-resolution grid of the temporal (SSM) path to the full grid, in NumPy.

A low-res pixel i covers full-res pixels [f·i, f·i + f) for an integer factor f, so its centre sits at
full-res coordinate u = f·(i + 0.5) − 0.5. M is stored as [scale_x, scale_y, offset_x, offset_y] with
u_full = scale·(u_low + 0.5) − 0.5 + offset, the same form as the canonical map. Torch-free, so that stages
that only record M (the teacher cache) do not import torch; :mod:`refiner.geometry.lowres_sampling` samples with it.
"""

from __future__ import annotations

import numpy as np


def low_mapping(factor: int) -> np.ndarray:
    """M for an integer factor: [f, f, 0, 0] (low-res pixel i centres on full-res f·(i + 0.5) − 0.5)."""
    if factor < 1:
        raise ValueError(f"low-res factor must be >= 1, got {factor}")
    return np.array([factor, factor, 0.0, 0.0], dtype=np.float64)

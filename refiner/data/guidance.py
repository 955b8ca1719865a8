"""The guidance map G_t per frame (``guidance.zarr``): where colour or teacher depth has an edge.

G = max(|∇I| / p95(|∇I|), |∇ log D_teacher| / p95(|∇ log D_teacher|)) clipped to [0, 1], Sobel magnitudes
of the grey image (0–1) and of the scale-free log depth (0 where the teacher is invalid); p95 over the
frame's pixels. Training reads it to lower the temporal loss at edges (where depth bleeds and objects
move) and to weight the optional edge-aware loss. Array ``G`` (T, H, W) float32, one chunk per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from refiner.core.store import atomic_path, create_group, frames_array, open_group


def sobel_magnitude_np(x: np.ndarray) -> np.ndarray:
    """|∇x| of (H, W) by the unit-step 3×3 Sobel operator with replicate padding: the NumPy twin of
    :func:`refiner.geometry.filters.sobel_magnitude`, so this stage runs without importing torch (a test holds them
    equal)."""
    p = np.pad(x, 1, mode="edge")
    smooth_rows = p[:-2] + 2 * p[1:-1] + p[2:]  # vertical [1, 2, 1] smoothing, (H, W + 2)
    smooth_cols = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # horizontal, (H + 2, W)
    gx = (smooth_rows[:, 2:] - smooth_rows[:, :-2]) / 8
    gy = (smooth_cols[2:] - smooth_cols[:-2]) / 8
    return np.sqrt(gx * gx + gy * gy)


def edge_map(rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """G of one frame from RGB (H, W, 3) uint8 and teacher depth (H, W)."""
    grey = rgb.astype(np.float32).mean(-1) / np.float32(255.0)
    log_d = np.log(np.maximum(depth, np.float32(1e-6)))
    rgb_edges = sobel_magnitude_np(grey)
    depth_edges = np.where(depth > 0, sobel_magnitude_np(log_d), np.float32(0.0))

    def norm(x: np.ndarray) -> np.ndarray:
        return x / max(np.quantile(x, 0.95), 1e-6)

    return np.clip(np.maximum(norm(rgb_edges), norm(depth_edges)), 0, 1).astype(np.float32)


def write_guidance(decoded: str | Path, teacher: str | Path, out: str | Path, progress: bool = True) -> int:
    """G for every frame into ``out``; returns the frame count."""
    dec = open_group(decoded, ("rgb",), "decoded clip store")
    tea = open_group(teacher, ("depth",), "teacher store")
    total, height, width = dec["rgb"].shape[:3]
    if tea["depth"].shape != (total, height, width):
        raise ValueError(f"{teacher}: shape {tea['depth'].shape} does not match {decoded}; re-run the teacher stage")
    with atomic_path(out) as tmp:
        g = create_group(tmp, {"description": __doc__.split("\n\n")[0]})
        array = frames_array(g, "G", (total, height, width), np.float32)
        for t in tqdm(range(total), desc="guidance", disable=not progress):
            array[t] = edge_map(np.asarray(dec["rgb"][t]), np.asarray(tea["depth"][t]))
    return total

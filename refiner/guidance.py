"""The guidance map G_t per frame (``guidance.zarr``): where colour or teacher depth has an edge.

G = max(|∇I| / p95(|∇I|), |∇ log D_teacher| / p95(|∇ log D_teacher|)) clipped to [0, 1], Sobel magnitudes
of the grey image (0–1) and of the scale-free log depth (0 where the teacher is invalid); p95 over the
frame's pixels. Training reads it to lower the temporal loss at edges (where depth bleeds and objects
move) and to weight the optional edge-aware loss. Array ``G`` (T, H, W) float32, one chunk per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refiner.filters import sobel_magnitude
from refiner.store import atomic_path, create_group, frames_array, open_group


def edge_map(rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """G of one frame from RGB (H, W, 3) uint8 and teacher depth (H, W)."""
    grey = torch.from_numpy(rgb.astype(np.float32).mean(-1) / 255.0)
    valid = torch.from_numpy(depth > 0)
    log_d = torch.log(torch.from_numpy(depth).clamp_min(1e-6))
    rgb_edges = sobel_magnitude(grey)
    depth_edges = torch.where(valid, sobel_magnitude(log_d), 0.0)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x / torch.quantile(x.flatten(), 0.95).clamp_min(1e-6)

    return torch.maximum(norm(rgb_edges), norm(depth_edges)).clamp(0, 1).numpy().astype(np.float32)


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

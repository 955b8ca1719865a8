"""Guidance maps per frame, for edge-aware losses, blending and inspection (``data/guidance/clip.zarr``).

Arrays (T, S, S) float32, one chunk per frame: ``rgb_edges`` Sobel |∇I| of the grey image (0–1
units per pixel), ``rgb_laplacian`` its Laplacian, ``depth_edges`` Sobel |∇ log D_teacher| (scale-free),
``uncertainty_grad`` Sobel |∇ log u| of the teacher uncertainty, and ``G`` = max(rgb_edges /
p95(rgb_edges), depth_edges / p95(depth_edges)) clipped to [0, 1]: one gradient-magnitude map where
either colour or depth has an edge (p95 over the frame's pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refiner.filters import laplacian, sobel_magnitude
from refiner.store import atomic_path, create_group, frames_array, open_group

NAMES = ("rgb_edges", "rgb_laplacian", "depth_edges", "uncertainty_grad", "G")


def guidance_maps(rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray) -> dict[str, np.ndarray]:
    """The maps of one frame from RGB (H, W, 3) uint8, teacher depth and uncertainty (H, W)."""
    grey = torch.from_numpy(rgb.astype(np.float32).mean(-1) / 255.0)
    valid = torch.from_numpy(depth > 0)
    log_d = torch.log(torch.from_numpy(depth).clamp_min(1e-6))
    log_u = torch.log(torch.from_numpy(uncertainty).clamp_min(1e-6))
    rgb_edges = sobel_magnitude(grey)
    depth_edges = torch.where(valid, sobel_magnitude(log_d), 0.0)
    unc_grad = torch.where(valid, sobel_magnitude(log_u), 0.0)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x / torch.quantile(x.flatten(), 0.95).clamp_min(1e-6)

    g = torch.maximum(norm(rgb_edges), norm(depth_edges)).clamp(0, 1)
    maps = {
        "rgb_edges": rgb_edges,
        "rgb_laplacian": laplacian(grey),
        "depth_edges": depth_edges,
        "uncertainty_grad": unc_grad,
        "G": g,
    }
    return {k: v.numpy().astype(np.float32) for k, v in maps.items()}


def write_guidance(decoded: str | Path, teacher: str | Path, out: str | Path, progress: bool = True) -> int:
    """Guidance maps for every frame into ``out``; returns the frame count."""
    dec = open_group(decoded, ("rgb",), "decoded clip store")
    tea = open_group(teacher, ("depth", "uncertainty"), "teacher store")
    total, size = dec["rgb"].shape[:2]
    if tea["depth"].shape != (total, size, size):
        raise ValueError(f"{teacher}: shape {tea['depth'].shape} does not match {decoded}; re-run the teacher stage")
    with atomic_path(out) as tmp:
        g = create_group(tmp, {"description": __doc__.split("\n\n")[1]})
        arrays = {name: frames_array(g, name, (total, size, size), np.float32) for name in NAMES}
        for t in tqdm(range(total), desc="guidance", disable=not progress):
            maps = guidance_maps(
                np.asarray(dec["rgb"][t]), np.asarray(tea["depth"][t]), np.asarray(tea["uncertainty"][t])
            )
            for name, m in maps.items():
                arrays[name][t] = m
    return total

"""Sampling between the low-resolution grid of the temporal (SSM) path and the full grid.

The grid and its mapping M are defined in :mod:`refiner.geometry.lowres_map`. Downsampling is an f×f area mean;
upsampling is bilinear with ``align_corners=False``, which samples exactly that mapping.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., H/f, W/f) by f×f area mean; H and W must be multiples of f."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"size {h}x{w} is not a multiple of the low-res factor {factor}")
    lead = x.shape[:-2]
    y = F.avg_pool2d(x.reshape(-1, 1, h, w).float(), factor)
    return y.reshape(*lead, h // factor, w // factor).to(x.dtype)


def upsample(x: torch.Tensor, mapping: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) low-res -> (..., H, W) by bilinear sampling at the positions M assigns to full-res pixels."""
    m = [float(v) for v in (mapping.tolist() if hasattr(mapping, "tolist") else mapping)]
    if m[2] != 0 or m[3] != 0 or round(size[0] / m[1]) != x.shape[-2] or round(size[1] / m[0]) != x.shape[-1]:
        raise ValueError(f"mapping {m} does not take a {tuple(x.shape[-2:])} grid onto {size}")
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(-1, 1, *x.shape[-2:]).float(), size=size, mode="bilinear", align_corners=False)
    return y.reshape(*lead, *size).to(x.dtype)


def downsample_depth(depth: torch.Tensor, factor: int) -> torch.Tensor:
    """Area mean of depth where all f×f pixels are valid (> 0); 0 (invalid) where any is not."""
    all_valid = downsample((depth > 0).to(torch.float32), factor) == 1
    return torch.where(all_valid, downsample(depth, factor), torch.zeros((), dtype=depth.dtype))


def guided_upsample(
    x: torch.Tensor, guide_low: torch.Tensor, guide_full: torch.Tensor, factor: int, sigma_range: float
) -> torch.Tensor:
    """Edge-aware (joint bilateral) upsampling of (..., h, w) to (..., h·f, w·f) for the mapping [f, f, 0, 0].

    Each full-res pixel averages the 3×3 low-res pixels around it, weighted by a Gaussian of the distance to
    their centres (σ = 0.6 low-res pixels) times exp(−(g_full − g_low)²/2σ_r²) for a guide g (e.g. log
    depth), so values do not bleed across guide edges. A constant input is returned unchanged.
    """
    h, w = x.shape[-2:]
    lead = x.shape[:-2]
    H, W = h * factor, w * factor
    if guide_low.shape[-2:] != (h, w) or guide_full.shape[-2:] != (H, W):
        raise ValueError(f"guides {tuple(guide_low.shape)}, {tuple(guide_full.shape)} do not fit {tuple(x.shape)}")

    def neighbours(t: torch.Tensor) -> torch.Tensor:  # (..., h, w) -> (B, 9, H, W), nearest-upsampled 3x3
        p = F.pad(t.reshape(-1, 1, h, w).float(), (1, 1, 1, 1), mode="replicate")
        n = F.unfold(p, 3).reshape(-1, 9, h, w)
        return n.repeat_interleave(factor, -2).repeat_interleave(factor, -1)

    def offsets(n: int) -> torch.Tensor:  # full-res pixel centre minus its low-res cell centre, low-res units
        i = torch.arange(n, device=x.device)
        return (i + 0.5) / factor - 0.5 - torch.div(i, factor, rounding_mode="floor")

    k = torch.arange(9, device=x.device)
    dy = offsets(H)[None, :, None] - (k // 3 - 1)[:, None, None]  # (9, H, 1): distance to each neighbour row
    dx = offsets(W)[None, None, :] - (k % 3 - 1)[:, None, None]  # (9, 1, W)
    spatial = torch.exp(-(dy**2 + dx**2) / (2 * 0.6**2))[None]  # (1, 9, H, W)
    g = guide_full.reshape(-1, 1, H, W).float()
    weight = spatial * torch.exp(-((g - neighbours(guide_low)) ** 2) / (2 * sigma_range**2))
    out = (weight * neighbours(x)).sum(1) / weight.sum(1).clamp_min(1e-12)
    return out.reshape(*lead, H, W).to(x.dtype)

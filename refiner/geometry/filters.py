"""Small image filters of the model (torch, batched over leading dims); the guidance stage has a NumPy twin of
:func:`sobel_magnitude` (:func:`refiner.data.guidance.sobel_magnitude_np`) so that it runs without torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _filter(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Apply k 3×3 kernels to [..., H, W] with replicate padding → [..., k, H, W]."""
    flat = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (1, 1, 1, 1), mode="replicate")
    out = F.conv2d(flat, kernels[:, None].to(x))
    return out.reshape(*x.shape[:-2], kernels.shape[0], *x.shape[-2:])


def sobel(x: torch.Tensor) -> torch.Tensor:
    """(∂x, ∂y) by the 3×3 Sobel operator normalised to a unit step per pixel: [..., H, W] → [..., 2, H, W]."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    return _filter(x, torch.stack([kx, kx.T]))


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|∇x| from :func:`sobel`, same shape as x."""
    return sobel(x).square().sum(-3).sqrt()

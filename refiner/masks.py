"""Which pixels count as static: the one home of the masks and their threshold.

- :func:`static_gate`: a cheap low-res photometric check between consecutive frames (flow never
  supervises; this only gates losses and blending): colour change below :data:`STEADY_COLOUR`.
- :func:`still_static_mask`: pixels of a clip's still-camera segment that are never on a moving object
  (the GT moving mask, else colour steady against the segment's first frame) and always valid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STEADY_COLOUR = 0.03  # mean |ΔRGB| (0–1) below which a pixel's colour counts as unchanged


def static_gate(rgb: torch.Tensor, factor: int, threshold: float = STEADY_COLOUR) -> torch.Tensor:
    """m(x) in {0,1} [B,N-1,1,H,W]: colour at the pixel unchanged between t and t+1, checked on a low-res grid.

    The difference is tested at the low-res pixel and at its 3×3 neighbourhood maximum, so a pixel next to
    a moving edge is excluded too. rgb [B, N, 3, H, W] in [0, 1].
    """
    b, n, c, h, w = rgb.shape
    low = F.avg_pool2d(rgb.reshape(b * n, c, h, w), factor).reshape(b, n, c, h // factor, w // factor)
    diff = (low[:, 1:] - low[:, :-1]).abs().mean(2, keepdim=True)
    diff = F.max_pool2d(diff.reshape(b * (n - 1), 1, h // factor, w // factor), 3, stride=1, padding=1)
    gate = (diff < threshold).float()
    return F.interpolate(gate, size=(h, w), mode="nearest").reshape(b, n - 1, 1, h, w)


def still_static_mask(rgb: torch.Tensor, moving: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
    """(H, W) static pixels of a still-camera segment: rgb (T, H, W, 3) uint8, moving and valid (T, H, W) bool."""
    if moving is None:
        colour = rgb.float() / 255
        moving = (colour - colour[:1]).abs().mean(-1) > STEADY_COLOUR
    return (~moving.bool()).all(0) & valid.bool().all(0)

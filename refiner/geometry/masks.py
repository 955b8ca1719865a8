"""Which pixels count as static: the one home of the masks and their threshold.

- :func:`static_gate`: a cheap low-res photometric check between consecutive frames (flow never
  supervises; this only gates losses and blending): colour change below :data:`STEADY_COLOUR`;
  :func:`window_static`: the same over a whole window (any length, one frame included).
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


def window_static(rgb: torch.Tensor, factor: int) -> torch.Tensor:
    """[1, 1, H, W] bool: pixels whose colour stays put across a whole window (rgb [N, 3, H, W] in [0, 1]).

    A one-frame window has no pair of frames, so nothing changes within it: every pixel counts as static.
    """
    if rgb.shape[0] < 2:
        return torch.ones(1, 1, *rgb.shape[-2:], dtype=torch.bool)
    return static_gate(rgb[None], factor)[0].amin(0, keepdim=True).bool()


def still_static_mask(rgb: torch.Tensor, moving: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
    """(H, W) static pixels of a still-camera segment: rgb (T, H, W, 3) uint8, moving and valid (T, H, W) bool."""
    if moving is None:
        colour = rgb.float() / 255
        moving = (colour - colour[:1]).abs().mean(-1) > STEADY_COLOUR
    return (~moving.bool()).all(0) & valid.bool().all(0)


def centre_patch(height: int, width: int, fraction: float) -> tuple[slice, slice]:
    """(rows, cols) of the centred patch whose sides are ``fraction`` of the frame's (at least one pixel)."""
    ph, pw = max(1, int(height * fraction)), max(1, int(width * fraction))
    return slice((height - ph) // 2, (height - ph) // 2 + ph), slice((width - pw) // 2, (width - pw) // 2 + pw)

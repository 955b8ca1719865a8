"""Automatic convergence: the zero-parallax distance follows the scene's central depth, smoothly, and restarts at cuts.

Per frame the target is the median of the valid depth in the central region (the middle ``CENTRE`` = half of
each side, a quarter of the picture): robust to a few near or far pixels. The distance used is a causal
exponential moving average of log depth with time constant ``TAU_S`` = 1 s (per frame weight
α = 1 − exp(−1 / (fps·τ))), so the screen plane glides instead of jumping with every frame's depth. At a scene
cut (:mod:`refiner.data.cuts`) and on the first frame it starts at that frame's target. A frame without valid central
depth keeps the last distance (``DEFAULT_M`` before any).
"""

from __future__ import annotations

import math

import numpy as np

CENTRE = 0.5  # side fraction of the central region
TAU_S = 1.0  # time constant of the smoothing, seconds
DEFAULT_M = 2.0  # the distance before any frame had valid central depth


def central_depth(depth: np.ndarray) -> float:
    """Median valid (> 0) depth of the central region; NaN where it has none."""
    h, w = depth.shape
    dh, dw = int(h * (1 - CENTRE) / 2), int(w * (1 - CENTRE) / 2)
    centre = depth[dh : h - dh, dw : w - dw]
    valid = centre[centre > 0]
    return float(np.median(valid)) if valid.size else float("nan")


class AutoConvergence:
    """``update(depth, cut)`` → this frame's convergence distance in metres (see the module docstring)."""

    def __init__(self, fps: float, tau_s: float = TAU_S) -> None:
        self.alpha = 1.0 - math.exp(-1.0 / (fps * tau_s))
        self.log_c: float | None = None

    def update(self, depth: np.ndarray, cut: bool = False) -> float:
        target = central_depth(depth)
        if cut:
            self.log_c = None
        if math.isfinite(target):
            log_t = math.log(target)
            self.log_c = log_t if self.log_c is None else self.log_c + self.alpha * (log_t - self.log_c)
        return DEFAULT_M if self.log_c is None else math.exp(self.log_c)

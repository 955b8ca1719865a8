"""Temporal windows shared by training and inference: starts, keyframes and blending weights.

A clip of T frames is covered by windows of N frames that overlap by To frames (stride N − To).
The last window is aligned to the clip's end, so every frame is covered whatever T is; a clip
shorter than N is one short window. Overlapping windows are blended with quadratic weights
w(p) = (1 − |p − 0.5|·2)², p = (i + 0.5)/n, which are never zero, so the clip's first and last
frames (covered by a single window) keep their own prediction.
"""

from __future__ import annotations

import numpy as np


def window_starts(num_frames: int, length: int, overlap: int) -> list[int]:
    """Start frames of the windows covering ``num_frames`` (last one aligned to the end)."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if not 0 <= overlap < length:
        raise ValueError(f"window overlap must be in [0, {length}), got {overlap}")
    if num_frames <= length:
        return [0]
    stride = length - overlap
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] != num_frames - length:
        starts.append(num_frames - length)
    return starts


def blend_weights(
    n: int, keyframes: list[int] = (), keyframe_tau: float = 0.0, keyframe_boost: float = 0.0
) -> np.ndarray:
    """Quadratic blending weights (n,) of one window, peaking at its middle, never zero.

    With ``keyframe_boost`` > 0, frames near a keyframe weigh more: w·(1 + boost·exp(−Δt/τ)), Δt the
    distance in frames to the nearest keyframe.
    """
    p = (np.arange(n) + 0.5) / n
    w = (1.0 - np.abs(p - 0.5) * 2.0) ** 2
    ks = [k for k in keyframes if k < n]
    if keyframe_boost > 0 and keyframe_tau > 0 and ks:
        dt = np.abs(np.arange(n)[:, None] - np.asarray(ks)[None]).min(1)
        w = w * (1 + keyframe_boost * np.exp(-dt / keyframe_tau))
    return w


def keyframe_mask(n: int, keyframes: list[int], reverse: bool = False) -> np.ndarray:
    """Boolean (n,) marking keyframe positions of a window of n frames; follows a temporal reversal."""
    mask = np.zeros(n, dtype=bool)
    mask[[k for k in keyframes if k < n]] = True
    return mask[::-1].copy() if reverse else mask


class WindowBlender:
    """Streams overlapping window predictions into per-frame blends with memory bounded by one window.

    ``add(start, frames)`` accumulates a window (n, ...) with :func:`blend_weights`;
    ``pop_ready(before)`` returns finished frames whose index is below ``before`` (no later window
    touches them), in order, as (index, blended) pairs.
    """

    def __init__(self, keyframes: list[int] = (), keyframe_tau: float = 0.0, keyframe_boost: float = 0.0) -> None:
        self._sum: dict[int, np.ndarray] = {}
        self._weight: dict[int, float | np.ndarray] = {}
        self._kf = (list(keyframes), keyframe_tau, keyframe_boost)

    def add(self, start: int, frames: np.ndarray, pixel_weights: np.ndarray | None = None) -> None:
        """Accumulate a window (n, ...); ``pixel_weights`` (n, ...) in (0, 1] optionally scale each pixel's
        weight (e.g. down-weighting pixels this window sees as occluded)."""
        for i, w in enumerate(blend_weights(len(frames), *self._kf)):
            t = start + i
            wi = w if pixel_weights is None else w * pixel_weights[i].astype(np.float64)
            if t in self._sum:
                self._sum[t] += wi * frames[i]
                self._weight[t] = self._weight[t] + wi
            else:
                self._sum[t] = wi * frames[i].astype(np.float64)
                self._weight[t] = wi

    def pop_ready(self, before: int) -> list[tuple[int, np.ndarray]]:
        ready = sorted(t for t in self._sum if t < before)
        return [(t, (self._sum.pop(t) / self._weight.pop(t)).astype(np.float32)) for t in ready]

    def __len__(self) -> int:
        return len(self._sum)

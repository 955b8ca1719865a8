"""Baseline temporal filters applied to the teacher, scored in the same table as the refiner.

- EMA (causal): E_0 = D_0, E_t = α·D_t + (1 − α)·E_{t−1} per pixel; α = weight of the new frame.
- Temporal bilateral (offline): E_t = Σ_s w_s·D_s / Σ_s w_s over |s − t| ≤ r at the same pixel, with
  w_s = exp(−½((D_s − D_t)/(σ_d·D_t))²) · exp(−½‖I_s − I_t‖²/σ_c²): frames whose depth or colour
  differ at the pixel (motion, occlusion) weigh little.
Both are convex combinations of the teacher's values, so a constant clip passes unchanged and no
global rescale is possible. Invalid pixels (0) stay 0.
"""

from __future__ import annotations

import numpy as np

METHODS = ("teacher", "ema", "bilateral", "refiner")  # every clip is scored on these: the teacher, its filters, ours
ADAPTED = (
    "refiner_adapt"  # and, where the clip was adapted on (GT-free, refiner/inference/adapt.py), the adapted refiner
)
ADAPTED_STORE = "refined.zarr"  # its refined depth, inside the folder of the clip's adapt step


def ema(depth: np.ndarray, alpha: float, previous: np.ndarray | None = None) -> np.ndarray:
    """Causal per-pixel EMA of depth (T, H, W); ``previous`` (H, W) is the EMA of the frame before the first
    (a clip scored span by span), None when the first frame starts the clip."""
    if not 0 < alpha <= 1:
        raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
    out = np.empty(depth.shape, dtype=np.float32)
    state = None if previous is None else previous.astype(np.float64)
    for t in range(depth.shape[0]):
        d = depth[t].astype(np.float64)
        if state is None:
            state = d
        else:
            state = np.where(d > 0, np.where(state > 0, alpha * d + (1 - alpha) * state, d), 0.0)
        out[t] = state
    return out


def temporal_bilateral(
    depth: np.ndarray,
    rgb: np.ndarray,
    radius: int,
    sigma_depth_rel: float,
    sigma_colour: float,
    targets: range | None = None,
) -> np.ndarray:
    """Depth- and colour-aware temporal filter of depth (T, H, W) with RGB (T, H, W, 3) uint8.

    ``targets``: the frames to filter (default all); the output holds those frames only, each filtered
    over its neighbours within ``radius`` inside the arrays given.
    """
    T = depth.shape[0]
    targets = range(T) if targets is None else targets
    out = np.empty((len(targets), *depth.shape[1:]), dtype=np.float32)
    colour = np.moveaxis(rgb, -1, 0).astype(np.float32, order="C") / 255.0  # (3, T, H, W): planes sum fast
    for i, t in enumerate(targets):
        d_t = depth[t].astype(np.float64)
        num, den = np.zeros_like(d_t), np.zeros_like(d_t)
        for s in range(max(0, t - radius), min(T, t + radius + 1)):
            d_s = depth[s].astype(np.float64)
            rel = (d_s - d_t) / np.maximum(sigma_depth_rel * d_t, 1e-6)
            sq = np.square(colour[:, s] - colour[:, t])
            dc = sq[0] + sq[1] + sq[2]  # the same sum, in the same order, as summing the last axis of (H, W, 3)
            w = np.exp(-0.5 * rel**2 - 0.5 * dc / sigma_colour**2) * (d_s > 0)
            num += w * d_s
            den += w
        out[i] = np.where(d_t > 0, num / np.maximum(den, 1e-12), 0.0)
    return out

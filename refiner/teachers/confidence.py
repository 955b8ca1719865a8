"""The one place where a teacher's uncertainty becomes a confidence c(x) in [0, 1].

UniDepthV2's ``confidence`` output is an *uncertainty*: the exponential of a predicted absolute depth
error in metres (its training loss regresses log ``confidence`` onto |prediction − GT| after median
rescaling of the prediction), so it is monotone in the expected error, higher = less certain, and
meaningful relative to the other pixels of the same image, not across images. So it is mapped by its
rank within the image: p(x) = fraction of the image's valid pixels that are more certain than x
(0 = most certain, 1 = least). Without calibration c = 1 − p. With a calibration (see
:mod:`refiner.teachers.calibration`), c = reliability(p), a monotone table fitted on clips with
ground truth (or on the temporal variance of a still-camera segment) and scaled so the most
reliable bin has c = 1. Invalid pixels (uncertainty not finite or depth invalid) get c = 0.
"""

from __future__ import annotations

import numpy as np


def uncertainty_rank(uncertainty: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-image rank p in [0, 1] of each pixel's uncertainty (H, W); ties share their mean rank; invalid → 1.

    One sort: in sorted order, a run of equal values [lo, hi) gets (lo + hi − 1) / 2 / (n − 1)."""
    u = np.asarray(uncertainty)
    u = u if u.dtype.kind == "f" else u.astype(np.float64)  # float32 sorts as float64 would, faster
    ok = np.isfinite(u) if valid is None else (np.asarray(valid, bool) & np.isfinite(u))
    p = np.ones(u.shape, dtype=np.float32)
    values = u[ok]
    n = values.size
    if n == 0:
        return p
    order = np.argsort(values)
    ordered = values[order]
    first = np.empty(n, bool)  # the first value of each run of equal values
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    lo = np.flatnonzero(first)
    hi = np.append(lo[1:], n)
    run = np.cumsum(first) - 1
    ranks = np.empty(n, np.float64)
    ranks[order] = (lo[run] + hi[run] - 1) / 2 / max(n - 1, 1)
    p[ok] = ranks
    return p


def rank_to_confidence(rank: np.ndarray, valid: np.ndarray, calibration: dict | None = None) -> np.ndarray:
    """Confidence c(x) in [0, 1] (float32, any shape) from uncertainty ranks p (see :func:`uncertainty_rank`)."""
    p = np.asarray(rank, dtype=np.float64)
    c = 1.0 - p if calibration is None else np.interp(p, calibration["rank"], calibration["reliability"])
    return np.where(np.asarray(valid, bool), np.clip(c, 0.0, 1.0), 0.0).astype(np.float32)


def uncertainty_to_confidence(
    uncertainty: np.ndarray, calibration: dict | None = None, valid: np.ndarray | None = None
) -> np.ndarray:
    """Confidence c(x) in [0, 1] (H, W) float32 from a teacher uncertainty map (higher = less certain)."""
    ok = np.isfinite(uncertainty) if valid is None else (np.asarray(valid, bool) & np.isfinite(uncertainty))
    return rank_to_confidence(uncertainty_rank(uncertainty, valid), ok, calibration)

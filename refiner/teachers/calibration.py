"""Teacher calibration: how much a pixel of a given uncertainty rank can be trusted.

Errors are accumulated per rank bin (rank from :func:`refiner.teachers.confidence.uncertainty_rank`):
the mean |relative error| against ground truth where a clip has it; GT-free, the teacher's own
disagreement between consecutive frames (:func:`frame_disagreement`). The reliability of a bin is
e_min / e_bin, made non-increasing in rank (a monotone fit), so the most reliable bin maps to c = 1.
Also reported: Pearson corr(uncertainty, error) over all valid pixels.
"""

from __future__ import annotations

import numpy as np

from refiner.teachers.confidence import uncertainty_rank


class CalibrationAccumulator:
    """Streams frames into per-rank-bin error sums and a running correlation."""

    def __init__(self, bins: int = 10) -> None:
        self.bins = bins
        self.err_sum = np.zeros(bins)
        self.count = np.zeros(bins)
        self._moments = np.zeros(6)  # n, Σu, Σe, Σu², Σe², Σue

    def add(self, uncertainty: np.ndarray, error: np.ndarray, valid: np.ndarray) -> None:
        """One frame: uncertainty and non-negative error maps (H, W), valid mask."""
        ok = valid & np.isfinite(error) & np.isfinite(uncertainty)
        if not ok.any():
            return
        rank = uncertainty_rank(uncertainty, ok)[ok]
        b = np.minimum((rank * self.bins).astype(int), self.bins - 1)
        e = error[ok].astype(np.float64)
        self.err_sum += np.bincount(b, e, self.bins)
        self.count += np.bincount(b, minlength=self.bins)
        u = uncertainty[ok].astype(np.float64)
        self._moments += [u.size, u.sum(), e.sum(), (u * u).sum(), (e * e).sum(), (u * e).sum()]

    def state(self) -> dict:
        """The sums as plain lists (JSON), to merge clips later with :meth:`merge`."""
        return {
            "bins": self.bins,
            "err_sum": self.err_sum.tolist(),
            "count": self.count.tolist(),
            "moments": self._moments.tolist(),
        }

    @classmethod
    def merge(cls, states: list[dict], bins: int) -> CalibrationAccumulator:
        """One accumulator holding the sums of several :meth:`state` dicts (e.g. every training clip)."""
        acc = cls(bins)
        for s in states:
            if s["bins"] != bins:
                raise ValueError(f"calibration sums have {s['bins']} bins, expected {bins}; re-run the teacher stage")
            acc.err_sum += np.asarray(s["err_sum"])
            acc.count += np.asarray(s["count"])
            acc._moments += np.asarray(s["moments"])
        return acc

    def correlation(self) -> float | None:
        n, su, se, suu, see, sue = self._moments
        if n < 2:
            return None
        cov = sue / n - su * se / n**2
        var = (suu / n - (su / n) ** 2) * (see / n - (se / n) ** 2)
        return float(cov / np.sqrt(var)) if var > 0 else None

    def fit(self, source: str) -> dict:
        """The calibration table {rank, reliability, bin_error, source, corr_uncertainty_error}."""
        centres = (np.arange(self.bins) + 0.5) / self.bins
        mean_err = np.where(self.count > 0, self.err_sum / np.maximum(self.count, 1), np.nan)
        filled = np.isfinite(mean_err) & (mean_err > 0)
        if not filled.any():
            return identity_calibration(source="rank (no error data)")
        err = np.interp(centres, centres[filled], mean_err[filled])
        err = np.maximum.accumulate(err)  # monotone: a less certain rank is never more reliable
        reliability = err.min() / err
        return {
            "source": source,
            "rank": centres.tolist(),
            "reliability": reliability.tolist(),
            "bin_error": [None if not np.isfinite(v) else float(v) for v in mean_err],
            "corr_uncertainty_error": self.correlation(),
        }


STILL_COLOUR = 4  # uint8 levels: a pixel whose colour moves less than this between frames counts as unchanged


def frame_disagreement(
    prev_depth: np.ndarray, depth: np.ndarray, prev_rgb: np.ndarray, rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """GT-free error of frame t's depth: |Δ log D| against frame t−1 minus its median (the frame's global scale
    change, which no single-frame uncertainty can rank), at pixels whose colour barely changed (mean over
    channels < :data:`STILL_COLOUR` levels) and valid in both frames: there the scene most likely did not move
    in the image, so a depth change is the teacher's own inconsistency. Returns (error (H, W), mask (H, W))."""
    still = np.abs(rgb.astype(np.int16) - prev_rgb.astype(np.int16)).mean(-1) < STILL_COLOUR
    ok = still & (depth > 0) & (prev_depth > 0)
    if not ok.any():
        return np.zeros(depth.shape), ok
    change = np.log(np.where(ok, depth, 1.0)) - np.log(np.where(ok, prev_depth, 1.0))
    return np.abs(change - np.median(change[ok])), ok


def identity_calibration(source: str = "rank") -> dict:
    """c = 1 − rank, for teachers/clips with nothing to calibrate against."""
    return {"source": source, "rank": [0.0, 1.0], "reliability": [1.0, 0.0], "corr_uncertainty_error": None}

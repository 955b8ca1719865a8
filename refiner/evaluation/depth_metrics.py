"""Per-frame depth metrics: accuracy, flicker, scale over time, stereo jitter, confidence strata. Pure
functions on tensors (TAE: :mod:`refiner.evaluation.tae_metrics`; OPW: :mod:`refiner.evaluation.opw_metrics`).

Conventions: depth maps are (T, H, W) or (H, W) z-depth in metres, 0 = invalid; GT-based metrics
use pixels where GT > 0 and the prediction > 0. Per-frame metrics are averaged per frame, then over
frames. Nothing is scale-aligned unless a function says so (metric depth is scored as is).

- AbsRel = mean |D − G| / G; RMSE = sqrt(mean (D − G)²); log-RMSE = sqrt(mean (log D − log G)²);
  δ_k = share of pixels with max(D/G, G/D) < 1.25^k (strict).
- Flicker on static regions: per pixel, the temporal std (and the median absolute deviation) of depth
  over the still-camera segment divided by the pixel's temporal median; averaged over the static
  mask (pixels never on a moving object there, valid throughout).
- Scale over time: per frame, the median of D/G over valid pixels off moving objects; its std over
  the clip is ``scale_ratio_std``.
- Stereo jitter: mean |disp_t − disp_{t−1}| in pixels on static pixels of the still-camera segment,
  disp = fx · baseline / D.
"""

from __future__ import annotations

import numpy as np
import torch

_EPS = 1e-6


def depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """AbsRel, RMSE, log-RMSE, δ1..3 of one frame (H, W) on pixels valid in both; NaN when none are."""
    ok = (gt > 0) & (pred > 0) & torch.isfinite(pred)
    if not ok.any():
        return dict.fromkeys(("absrel", "rmse", "log_rmse", "d1", "d2", "d3"), float("nan"))
    d, g = pred[ok].double(), gt[ok].double()
    ratio = torch.maximum(d / g, g / d)
    return {
        "absrel": float(((d - g).abs() / g).mean()),
        "rmse": float((d - g).square().mean().sqrt()),
        "log_rmse": float((d.log() - g.log()).square().mean().sqrt()),
        "d1": float((ratio < 1.25).double().mean()),
        "d2": float((ratio < 1.25**2).double().mean()),
        "d3": float((ratio < 1.25**3).double().mean()),
    }


def per_frame_errors(pred: torch.Tensor, gt: torch.Tensor) -> list[dict[str, float]]:
    """:func:`depth_errors` for every frame of (T, H, W)."""
    return [depth_errors(p, g) for p, g in zip(pred, gt, strict=True)]


def mean_errors(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average per-frame metrics over frames (NaN frames skipped)."""
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def flicker(depth: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Relative temporal std and MAD of depth (T, H, W) over the (H, W) mask (see module docstring)."""
    if depth.shape[0] < 2 or not mask.any():
        return {"std_rel": float("nan"), "mad_rel": float("nan")}
    d = depth[:, mask].double()  # (T, P)
    med = d.median(0).values.clamp_min(_EPS)
    return {
        "std_rel": float((d.std(0) / med).mean()),
        "mad_rel": float(((d - med).abs().median(0).values / med).mean()),
    }


def scale_ratios(depth: torch.Tensor, gt: torch.Tensor, moving: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame global scale (T,): median of D/G over pixels valid in both and not on moving objects."""
    out = []
    for t in range(depth.shape[0]):
        ok = (depth[t] > 0) & (gt[t] > 0)
        if moving is not None:
            ok &= ~moving[t].bool()
        out.append((depth[t][ok].double() / gt[t][ok].double()).median() if ok.any() else torch.tensor(float("nan")))
    return torch.stack(out).double()


def disparity_jitter(depth: torch.Tensor, fx: torch.Tensor, baseline: float, mask: torch.Tensor) -> torch.Tensor:
    """Per frame pair (T−1,): mean |disp_t − disp_{t−1}| in pixels over the (H, W) mask."""
    disp = fx.reshape(-1, 1, 1).double() * baseline / depth.double().clamp_min(_EPS)
    if not mask.any() or depth.shape[0] < 2:
        return torch.zeros(0, dtype=torch.float64)
    return (disp[1:] - disp[:-1]).abs()[:, mask].mean(1)


STRATA = ("low", "medium", "high")  # teacher-confidence terciles


def confidence_terciles(hist: torch.Tensor) -> tuple[float, float]:
    """Tercile edges of c(x) from its histogram over [0, 1] (a clip's, summed span by span): the upper edge of
    the bin holding each tercile, so the quantiles are exact to one bin."""
    cdf = hist.double().cumsum(0) / hist.sum().clamp_min(1)
    bins = hist.numel()
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    return tuple(float(x) / bins for x in (torch.searchsorted(cdf, q) + 1).clamp_max(bins))


def _strata(conf: torch.Tensor, edges: tuple[float, float]) -> list[torch.Tensor]:
    c = conf.double()
    return [c <= edges[0], (c > edges[0]) & (c <= edges[1]), c > edges[1]]


def strata_sums(
    pred: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor, conf: torch.Tensor, edges: tuple[float, float]
) -> torch.Tensor:
    """Per teacher-confidence tercile (:data:`STRATA`) of (T, H, W): [pixels, Σ |D − G| / G, Σ (D − G)²,
    Σ |D − teacher|] over pixels valid in GT and prediction; (3, 4) float64 sums that add up over spans."""
    valid = (gt > 0) & (pred > 0)
    rows = []
    for sel in _strata(conf, edges):
        sel = sel & valid
        d, g = pred[sel].double(), gt[sel].double()
        rows.append(
            torch.stack(
                [sel.sum().double(), ((d - g).abs() / g).sum(), (d - g).square().sum(), (d - teacher[sel]).abs().sum()]
            )
        )
    return torch.stack(rows)


def strata_table(sums: torch.Tensor) -> dict[str, dict[str, float]]:
    """:func:`strata_sums` totals as share, AbsRel, RMSE and mean |ΔD| per tercile (NaN where a tercile is empty)."""
    n = sums[:, 0]
    total = n.sum().clamp_min(1)
    out = {}
    for name, (count, absrel, sq, delta) in zip(STRATA, sums, strict=True):
        k = count if count > 0 else torch.tensor(float("nan"), dtype=torch.float64)
        out[name] = {
            "share": float(count / total),
            "absrel": float(absrel / k),
            "rmse": float((sq / k).sqrt()),
            "mean_abs_delta_m": float(delta / k),
        }
    return out


def still_temporal_var(
    segment: torch.Tensor, static: torch.Tensor, conf: torch.Tensor, edges: tuple[float, float]
) -> dict[str, float]:
    """Per tercile of the pixel's mean c(x) over the still segment (T, H, W): the mean over static pixels of
    the temporal variance of depth relative to its squared temporal mean (NaN where a tercile has none)."""
    seg = segment.double()
    rel_var = seg.var(0) / seg.mean(0).clamp_min(_EPS).square()
    out = {}
    for name, sel in zip(STRATA, _strata(conf.double().mean(0), edges), strict=True):
        px = static & sel
        out[name] = float(rel_var[px].mean()) if px.any() else float("nan")
    return out


def motion_sums(pred: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """[pixels, Σ |D − G| / G, Σ |D − teacher|] on moving-object pixels (row 0) and on the static scene (row 1),
    over pixels valid in GT and prediction; (2, 3) float64 sums that add up over spans."""
    rows = []
    for sel in (moving, ~moving):
        ok = sel & (gt > 0) & (pred > 0)
        d, g = pred[ok].double(), gt[ok].double()
        rows.append(torch.stack([ok.sum().double(), ((d - g).abs() / g).sum(), (d - teacher[ok]).abs().sum()]))
    return torch.stack(rows)


def window_medians(depth: torch.Tensor, moving: torch.Tensor | None, length: int) -> list[float]:
    """Median depth over valid static-scene pixels per window of ``length`` frames of (T, H, W) (the drift curve)."""
    ok = depth > 0 if moving is None else (depth > 0) & ~moving
    return [float(depth[t : t + length][ok[t : t + length]].median()) for t in range(0, depth.shape[0], length)]

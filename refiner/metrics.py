"""Depth metrics: per-frame accuracy, temporal stability, stereo jitter. Pure functions on tensors.

Conventions: depth maps are (T, H, W) or (H, W) z-depth in metres, 0 = invalid; GT-based metrics
use pixels where GT > 0 and the prediction > 0. Per-frame metrics are averaged per frame, then over
frames. Nothing is scale-aligned unless a function says so (metric depth is scored as is).

- AbsRel = mean |D − G| / G; RMSE = sqrt(mean (D − G)²); log-RMSE = sqrt(mean (log D − log G)²);
  δ_k = share of pixels with max(D/G, G/D) < 1.25^k (strict).
- Flicker on static regions: per pixel, the temporal std (and the median absolute deviation) of depth
  over the still-camera segment divided by the pixel's temporal median; averaged over the static
  mask (pixels never on a moving object there, valid throughout).
- TAE (after Video Depth Anything, with a z-buffer): for consecutive frames i → j (both directions),
  back-project D_i with K_i, move by inv(P_j)·P_i (GT camera-to-world poses), project with K_j,
  round to the nearest pixel, keep points landing inside with z > 0; where several land on one
  pixel the nearest wins; count pixels where GT_j > 0, D_j > 0, GT_i > 0 at the source, and neither
  source nor target is on a moving object; error = mean |D_j − z| / D_j; TAE = 100 · mean over pairs.
- OPW, metric variant: GT optical flow from GT depth and poses (static scene; moving pixels
  excluded); D_{t−1} and I_{t−1} are sampled bilinearly at the flow target x' of each pixel x of frame t,
  and the point D_{t−1}(x')·K⁻¹[x', 1] is moved into camera t (GT poses), giving z'; error =
  Σ w·|D_t(x) − z'| / D_t / Σ w with w = exp(−50·‖I_t − I_{t−1}(x')‖²) (RGB in 0–1, squared norm averaged
  over channels). Zero for exact depth even while the camera moves; no per-frame normalisation, so scale
  flicker counts.
- Scale over time: per frame, the median of D/G over valid pixels off moving objects; its std over
  the clip is ``scale_ratio_std``.
- Stereo jitter: mean |disp_t − disp_{t−1}| in pixels on static pixels of the still-camera segment,
  disp = fx · baseline / D.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from refiner.camera import project, relative_pose, transform_points, unproject

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


def align_disparity_affine(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """For comparison with relative-depth papers only: one least-squares scale and shift of 1/D to 1/G
    over the whole clip; returns the aligned depth. Never used by the pipeline itself."""
    ok = (gt > 0) & (pred > 0)
    x, y = 1 / pred[ok].double(), 1 / gt[ok].double()
    A = torch.stack([x, torch.ones_like(x)], 1)
    s, b = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    disp = (s * 1 / pred.double().clamp_min(_EPS) + b).clamp_min(_EPS)
    return torch.where(pred > 0, 1 / disp, torch.zeros_like(disp)).to(pred.dtype)


def static_region_mask(moving: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(H, W) pixels never moving and always valid over frames (T, H, W) (the still-camera segment)."""
    return (~moving.bool()).all(0) & valid.bool().all(0)


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


def reproject(
    depth_i: torch.Tensor, K_i: torch.Tensor, K_j: torch.Tensor, T_ij: torch.Tensor, valid_i: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-project frame i's depth into frame j with a z-buffer: (z (H, W), hit mask (H, W))."""
    h, w = depth_i.shape
    pts = transform_points(T_ij[None], unproject(depth_i[None].float(), K_i[None]))
    uv, z = project(pts, K_j[None].float())
    u, v = uv[0, 0].round().long().flatten(), uv[0, 1].round().long().flatten()
    z = z[0].flatten()
    keep = valid_i.flatten() & (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    target = v[keep] * w + u[keep]
    zbuf = torch.full((h * w,), float("inf"), dtype=torch.float64)
    zbuf.scatter_reduce_(0, target, z[keep].double(), reduce="amin")
    hit = torch.isfinite(zbuf)
    return torch.where(hit, zbuf, 0.0).reshape(h, w), hit.reshape(h, w)


def tae(
    depth: torch.Tensor, K: torch.Tensor, poses: torch.Tensor, gt: torch.Tensor, moving: torch.Tensor | None = None
) -> float:
    """Temporal alignment error ×100 over consecutive pairs, both directions (see module docstring)."""
    errs = []
    static = ~moving.bool() if moving is not None else torch.ones_like(gt, dtype=torch.bool)
    for i in range(depth.shape[0] - 1):
        for a, b in ((i, i + 1), (i + 1, i)):
            T = relative_pose(poses[a][None], poses[b][None])[0]
            src_ok = (depth[a] > 0) & (gt[a] > 0) & static[a]
            z, hit = reproject(depth[a], K[a], K[b], T, src_ok)
            ok = hit & (depth[b] > 0) & (gt[b] > 0) & static[b]
            if ok.any():
                errs.append(float(((depth[b][ok].double() - z[ok]).abs() / depth[b][ok].double()).mean()))
    return 100 * float(np.mean(errs)) if errs else float("nan")


def _flow_targets(gt_t: torch.Tensor, K_t: torch.Tensor, K_s: torch.Tensor, T_ts: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (2, H, W) in frame s of each pixel of frame t (GT flow of a static scene)."""
    pts = transform_points(T_ts[None], unproject(gt_t[None].float(), K_t[None]))
    return project(pts, K_s[None].float())[0][0]


def _sample(img: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear sample of (C, H, W) at pixel coordinates (2, H, W); returns values and an in-bounds mask."""
    _, h, w = img.shape
    grid = torch.stack([(uv[0] + 0.5) / w * 2 - 1, (uv[1] + 0.5) / h * 2 - 1], -1)[None].float()
    out = F.grid_sample(img[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    inside = (uv[0] >= 0) & (uv[0] <= w - 1) & (uv[1] >= 0) & (uv[1] <= h - 1)
    return out, inside


def opw_metric(
    depth: torch.Tensor,
    rgb: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    moving: torch.Tensor | None = None,
    weight: float = 50.0,
) -> float:
    """Metric-space OPW: photometrically weighted relative depth error along GT flow (motion compensated).

    depth, gt (T, H, W); rgb (T, 3, H, W) in [0, 1]; K (T, 3, 3); poses (T, 4, 4) camera-to-world.
    """
    errs = []
    for t in range(1, depth.shape[0]):
        uv = _flow_targets(gt[t], K[t], K[t - 1], relative_pose(poses[t][None], poses[t - 1][None])[0])
        d_prev, inside = _sample(depth[t - 1][None], uv)
        i_prev, _ = _sample(rgb[t - 1], uv)
        ok = inside & (gt[t] > 0) & (depth[t] > 0) & (d_prev[0] > 0)
        if moving is not None:
            ok &= ~moving[t].bool() & ~moving[t - 1].bool()
        if not ok.any():
            continue
        w = torch.exp(-weight * (rgb[t].float() - i_prev).square().mean(0))[ok]
        # the previous frame's depth at x', as a 3D point moved into camera t: its z is what D_t should be
        homog = torch.cat([uv.double(), torch.ones_like(uv[:1]).double()])  # (3, H, W)
        rays = torch.einsum("ij,jhw->ihw", torch.linalg.inv(K[t - 1].double()), homog)
        pts = transform_points(
            relative_pose(poses[t - 1][None], poses[t][None]), (rays * d_prev.double()).float()[None]
        )
        z_prev = pts[0, 2].float()
        rel = (depth[t][ok] - z_prev[ok]).abs() / depth[t][ok]
        errs.append(float((w * rel).sum() / w.sum().clamp_min(_EPS)))
    return float(np.mean(errs)) if errs else float("nan")


def patch_medians(depth: torch.Tensor, fraction: float) -> torch.Tensor:
    """Median depth of the centred square patch (side ``fraction`` of the frame) per frame: (T,)."""
    h, w = depth.shape[-2:]
    ph, pw = max(1, int(h * fraction)), max(1, int(w * fraction))
    y0, x0 = (h - ph) // 2, (w - pw) // 2
    return depth[:, y0 : y0 + ph, x0 : x0 + pw].flatten(1).median(1).values


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


def stratified(
    pred: torch.Tensor,
    teacher: torch.Tensor,
    gt: torch.Tensor,
    conf: torch.Tensor,
    static: torch.Tensor,
    static_frames: int,
) -> dict[str, dict[str, float]]:
    """Metrics per teacher-confidence tercile (low / medium / high c(x)): AbsRel, RMSE, temporal variance
    of relative depth on static pixels of the still-camera segment, mean |ΔD| (pred − teacher)."""
    valid = (gt > 0) & (pred > 0)
    c = conf[valid].double()
    c = c[:: max(1, c.numel() // 4_000_000)]  # torch.quantile takes at most 16M values
    edges = torch.quantile(c, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)) if c.numel() else torch.zeros(2)
    seg_conf = conf[:static_frames].double().mean(0)  # per-pixel bin for the temporal variance
    out = {}
    for name, lo, hi in (("low", -1.0, edges[0]), ("medium", edges[0], edges[1]), ("high", edges[1], 2.0)):
        sel = valid & (conf.double() > lo) & (conf.double() <= hi)
        d, g = pred[sel].double(), gt[sel].double()
        row = {
            "share": float(sel.sum() / valid.sum().clamp_min(1)),
            "absrel": float(((d - g).abs() / g).mean()) if d.numel() else float("nan"),
            "rmse": float((d - g).square().mean().sqrt()) if d.numel() else float("nan"),
            "mean_abs_delta_m": float((pred - teacher)[sel].abs().double().mean()) if d.numel() else float("nan"),
        }
        if static_frames >= 2:
            seg = pred[:static_frames].double()
            px = static & (seg_conf > lo) & (seg_conf <= hi)
            rel_var = (seg.var(0) / seg.mean(0).clamp_min(_EPS).square())[px]
            row["temporal_var_rel"] = float(rel_var.mean()) if px.any() else float("nan")
        out[name] = row
    return out

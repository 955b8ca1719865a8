"""Training losses of the refiner. All tensors are [B, N, 1, H, W] unless noted; depth in metres.

- L_teacher = mean c·|log(D+ε) − log(D_teacher+ε)| (+ α·|D − D_teacher|): stay close to the clean teacher
  where it is confident.
- L_gt = mean |log D − log G| on valid GT pixels, only on windows flagged ``use_gt``.
- L_close = λ_gt·L_gt + λ_teacher·L_teacher (λ_gt > λ_teacher on GT windows).
- L_temp: |∂t log D| at the same pixel, where the scene is static there: the teacher's log depth
  changes less than τ(D) = τ0·(1 + τ_k·D) (small-change mask) and the colour does not change
  (a cheap low-res photometric gate m(x), checked forward and backward), weighted
  w = m·w0·(1 + k·(1 − c)) so uncertain pixels are smoothed more. Flow never supervises.
- L_res = λ_res·mean c·|ΔD|/D_teacher plus λ_mean·(window mean of ΔD/D_teacher)²: small residuals,
  no per-window bias.
- L_var: anti-collapse, relu(var(log D_teacher) − var(log D)) over low-confidence pixels per frame.
- L_edge (optional): |∇ΔD| weighted by exp(−|∇I|/σ), an edge-aware smoothness of the residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refiner.config import LossParams

_EPS = 1e-3


def _mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x * w).sum() / w.sum().clamp_min(1.0)


def teacher_loss(depth: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, l1_weight: float) -> torch.Tensor:
    valid = (teacher > 0).float()
    log_err = (torch.log(depth.clamp_min(0) + _EPS) - torch.log(teacher + _EPS)).abs()
    loss = _mean(conf * log_err, valid)
    if l1_weight:
        loss = loss + l1_weight * _mean((depth - teacher).abs(), valid)
    return loss


def gt_loss(depth: torch.Tensor, gt: torch.Tensor, use_gt: torch.Tensor) -> torch.Tensor:
    """Log-L1 to GT on windows with ``use_gt`` (0-d or [B] bool) and valid GT pixels."""
    sel = use_gt.reshape(-1, *([1] * (gt.dim() - 1))).float() * (gt > 0).float()
    err = (torch.log(depth.clamp_min(0) + _EPS) - torch.log(gt + _EPS)).abs()
    return _mean(err, sel)


def static_gate(rgb: torch.Tensor, factor: int, threshold: float) -> torch.Tensor:
    """m(x) in {0,1} [B,N-1,1,H,W]: colour at the pixel unchanged between t and t+1, checked on a low-res grid.

    The forward (t→t+1) and backward (t+1→t) differences are both tested at the low-res pixel and at its
    3×3 neighbourhood maximum, so a pixel next to a moving edge is excluded too.
    """
    b, n, c, h, w = rgb.shape
    low = F.avg_pool2d(rgb.reshape(b * n, c, h, w), factor).reshape(b, n, c, h // factor, w // factor)
    diff = (low[:, 1:] - low[:, :-1]).abs().mean(2, keepdim=True)  # symmetric: forward = backward at a pixel
    diff = F.max_pool2d(diff.reshape(b * (n - 1), 1, h // factor, w // factor), 3, stride=1, padding=1)
    gate = (diff < threshold).float()
    return F.interpolate(gate, size=(h, w), mode="nearest").reshape(b, n - 1, 1, h, w)


def temporal_loss(
    depth: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, rgb: torch.Tensor, p: LossParams, factor: int
) -> torch.Tensor:
    log_d = torch.log(depth.clamp_min(0) + _EPS)
    log_t = torch.log(teacher + _EPS)
    dt_pred = (log_d[:, 1:] - log_d[:, :-1]).abs()
    dt_teacher = (log_t[:, 1:] - log_t[:, :-1]).abs()
    tau = p.temp_tau * (1 + p.temp_tau_depth * teacher[:, 1:])
    small = (dt_teacher < tau).float() * (teacher[:, 1:] > 0).float() * (teacher[:, :-1] > 0).float()
    gate = static_gate(rgb, factor, p.temp_photo_threshold) * small
    c = torch.minimum(conf[:, 1:], conf[:, :-1])
    w = gate * (1 + p.temp_k * (1 - c))
    return (dt_pred * w).sum() / gate.sum().clamp_min(1.0)


def residual_loss(
    delta: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, mean_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c·|ΔD|/D mean, squared per-window mean of ΔD/D) on valid teacher pixels."""
    valid = (teacher > 0).float()
    rel = delta / (teacher + _EPS) * valid
    size = valid.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
    window_mean = rel.sum(dim=(1, 2, 3, 4)) / size
    return _mean(conf * rel.abs(), valid), mean_weight * (window_mean**2).mean()


def variance_loss(depth: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """Penalise losing per-frame log-depth variance on low-confidence pixels (no collapse to flat)."""
    m = ((conf < threshold) & (teacher > 0)).float()
    count = m.sum(dim=(2, 3, 4)).clamp_min(1.0)

    def var(x: torch.Tensor) -> torch.Tensor:
        mu = (x * m).sum(dim=(2, 3, 4)) / count
        return (((x - mu[..., None, None, None]) ** 2) * m).sum(dim=(2, 3, 4)) / count

    v_pred = var(torch.log(depth.clamp_min(0) + _EPS))
    v_teacher = var(torch.log(teacher + _EPS))
    return F.relu(v_teacher - v_pred).mean()


def edge_loss(delta: torch.Tensor, rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """Edge-aware smoothness of the residual: |∇ΔD| weighted by exp(−|∇I|/σ)."""
    gx = (delta[..., :, 1:] - delta[..., :, :-1]).abs()
    gy = (delta[..., 1:, :] - delta[..., :-1, :]).abs()
    ix = (rgb[..., :, 1:] - rgb[..., :, :-1]).abs().mean(2, keepdim=True)
    iy = (rgb[..., 1:, :] - rgb[..., :-1, :]).abs().mean(2, keepdim=True)
    return (gx * torch.exp(-ix / sigma)).mean() + (gy * torch.exp(-iy / sigma)).mean()


def compute_losses(
    depth: torch.Tensor, delta: torch.Tensor, batch: dict[str, torch.Tensor], p: LossParams, factor: int
) -> dict[str, torch.Tensor]:
    """All loss terms and their weighted ``total`` for a refined window ``depth`` with residual ``delta``."""
    teacher, conf, rgb = batch["teacher_full"], batch["conf_full"], batch["rgb"]
    use_gt = batch["use_gt"]
    l_teacher = teacher_loss(depth, teacher, conf, p.teacher_l1)
    l_gt = gt_loss(depth, batch["gt"], use_gt)
    any_gt = use_gt.any()
    l_close = torch.where(any_gt, p.lambda_gt * l_gt + p.lambda_teacher * l_teacher, p.lambda_teacher * l_teacher)
    l_temp = temporal_loss(depth, teacher, conf, rgb, p, factor)
    l_res, l_mean = residual_loss(delta, teacher, conf, p.residual_mean_weight)
    l_var = variance_loss(depth, teacher, conf, p.var_conf_threshold)
    terms = {
        "close": l_close,
        "teacher": l_teacher,
        "gt": l_gt,
        "temp": l_temp,
        "res": l_res,
        "res_mean": l_mean,
        "var": l_var,
    }
    total = l_close + p.w_temp * l_temp + p.lambda_res * l_res + l_mean + p.w_var * l_var
    if p.w_edge:
        terms["edge"] = edge_loss(delta, rgb, p.edge_sigma)
        total = total + p.w_edge * terms["edge"]
    terms["total"] = total
    return terms

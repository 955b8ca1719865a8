"""Training losses of the refiner. All tensors are [B, N, 1, H, W] unless noted; depth in metres.

- L_teacher = mean c·|log(D+ε) − log(D_teacher+ε)| (+ α·|D − D_teacher|): stay close to the clean teacher
  where it is confident.
- L_gt = mean |log D − log G| on valid GT pixels, only on windows flagged ``use_gt``.
- L_close = λ_gt·L_gt + λ_teacher·L_teacher (λ_gt > λ_teacher on GT windows).
- L_temp: |∂t log D| at the same pixel, where the scene is static there: the teacher's log depth
  changes less than τ(D) = τ0·(1 + τ_k·D) (small-change mask) and the colour does not change
  (a cheap low-res photometric gate m(x), checked forward and backward), weighted
  w = m·w0·(1 + k·(1 − c))·(1 − G) so uncertain pixels are smoothed more and edges (the guidance stage's
  map G, where depth bleeds and objects move) less. Flow never supervises.
- L_res = λ_res·mean c·|ΔD|/D_teacher plus λ_mean·(window mean of ΔD/D_teacher)²: small residuals,
  no per-window bias.
- L_var: the seed's anti-collapse term, max(0, σ_target − σ(ΔD/D)) over low-confidence pixels (c < c_thr)
  of each window: zero once the residual varies by σ_target there, positive at ΔD = 0.
- L_pose (windows with camera poses and GT): the refined depth of frame t moved into frame t±1 by the known
  camera motion (a depth warp with known intrinsics, never flow) against the refined depth sampled there,
  |log z − log D_{t±1}(uv)|, on pixels where the same warp of GT agrees with GT within ``pose_tol`` (that leaves
  out moving objects, occlusions and the image border). Consistency across a moving camera, which L_temp
  (still colour only) never asks for; VDA's TAE measures the same. GT only chooses the pixels, never the target.
- L_edge (optional): |∇ΔD| weighted by exp(−G/σ), an edge-aware smoothness of the residual (G: the guidance
  stage's edge map, colour or depth edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refiner.core.config import LossParams
from refiner.geometry.camera import relative_pose, reproject_and_sample
from refiner.geometry.masks import static_gate

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


def still_anchor(teacher: torch.Tensor, rgb: torch.Tensor, factor: int) -> torch.Tensor:
    """A GT-free denoised teacher: at pixels whose colour stays put over the whole window (:func:`static_gate`
    in every frame pair), the teacher's temporal median there; elsewhere the frame's own teacher depth."""
    if teacher.shape[1] < 2:
        return teacher
    still = static_gate(rgb, factor).amin(1, keepdim=True).bool() & (teacher > 0).all(1, keepdim=True)
    median = teacher.median(1, keepdim=True).values
    return torch.where(still, median.expand_as(teacher), teacher)


def gt_loss(depth: torch.Tensor, gt: torch.Tensor, use_gt: torch.Tensor) -> torch.Tensor:
    """Log-L1 to GT on windows with ``use_gt`` (0-d or [B] bool) and valid GT pixels."""
    sel = use_gt.reshape(-1, *([1] * (gt.dim() - 1))).float() * (gt > 0).float()
    err = (torch.log(depth.clamp_min(0) + _EPS) - torch.log(gt + _EPS)).abs()
    return _mean(err, sel)


def temporal_loss(
    depth: torch.Tensor,
    teacher: torch.Tensor,
    conf: torch.Tensor,
    rgb: torch.Tensor,
    edges: torch.Tensor,
    p: LossParams,
    factor: int,
) -> torch.Tensor:
    log_d = torch.log(depth.clamp_min(0) + _EPS)
    log_t = torch.log(teacher + _EPS)
    dt_pred = (log_d[:, 1:] - log_d[:, :-1]).abs()
    dt_teacher = (log_t[:, 1:] - log_t[:, :-1]).abs()
    tau = p.temp_tau * (1 + p.temp_tau_depth * teacher[:, 1:])
    small = (dt_teacher < tau).float() * (teacher[:, 1:] > 0).float() * (teacher[:, :-1] > 0).float()
    gate = static_gate(rgb, factor) * small
    c = torch.minimum(conf[:, 1:], conf[:, :-1])
    near_edge = torch.maximum(edges[:, 1:], edges[:, :-1]).clamp(0, 1)
    w = gate * (1 + p.temp_k * (1 - c)) * (1 - near_edge)
    return (dt_pred * w).sum() / gate.sum().clamp_min(1.0)


def _pair_frames(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) of every consecutive pair, both directions: [B, 2(N−1), ...] each from [B, N, ...]."""
    i = torch.arange(x.shape[1] - 1, device=x.device)
    return x[:, torch.cat([i + 1, i])], x[:, torch.cat([i, i + 1])]


def pose_loss(depth: torch.Tensor, gt: torch.Tensor, K: torch.Tensor, poses: torch.Tensor, tol: float) -> torch.Tensor:
    """L_pose (module docstring): depth, gt [B, N, 1, H, W], K [B, N, 3, 3], camera-to-world poses [B, N, 4, 4]
    (all zero where the clip has none: those windows add nothing)."""
    n = depth.shape[1]
    have = poses[:, :, 3, 3] != 0
    if n < 2 or not bool(have.all(1).any()):
        return depth.sum() * 0
    poses = torch.where(have[..., None, None], poses, torch.eye(4, dtype=poses.dtype, device=poses.device))
    pairs = map(_pair_frames, (depth[:, :, 0].float(), gt[:, :, 0], K, poses))
    d_src, d_dst, g_src, g_dst, k_src, k_dst, p_src, p_dst = (f.flatten(0, 1) for pair in pairs for f in pair)
    T = relative_pose(p_src, p_dst).float()
    z, sampled, inside = reproject_and_sample(d_src, d_dst, k_src, k_dst, T)
    with torch.no_grad():
        z_gt, g_at, inside_gt = reproject_and_sample(g_src, g_dst, k_src, k_dst, T)
        agree = (torch.log(z_gt.clamp_min(_EPS)) - torch.log(g_at.clamp_min(_EPS))).abs() < tol
        ok = inside & inside_gt & agree & (g_src > 0) & (g_at > 0) & (d_src > 0) & (sampled > 0)
        ok &= have.all(1).repeat_interleave(2 * (n - 1))[:, None, None]  # only pairs of windows with poses
    err = (torch.log(z.clamp_min(_EPS)) - torch.log(sampled.clamp_min(_EPS))).abs()
    return (err * ok).sum() / ok.sum().clamp_min(1)


def residual_loss(
    delta: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, mean_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c·|ΔD|/D mean, squared per-window mean of ΔD/D) on valid teacher pixels."""
    valid = (teacher > 0).float()
    rel = delta / (teacher + _EPS) * valid
    size = valid.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
    window_mean = rel.sum(dim=(1, 2, 3, 4)) / size
    return _mean(conf * rel.abs(), valid), mean_weight * (window_mean**2).mean()


def variance_loss(
    delta: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, threshold: float, sigma_target: float
) -> torch.Tensor:
    """The seed's anti-collapse term max(0, σ_target − σ(ΔD/D)) over pixels with c < threshold, per window:
    positive while the residual is (near) zero where the teacher is unsure, so ΔD → 0 is not free."""
    m = ((conf < threshold) & (teacher > 0)).float()
    count = m.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
    rel = delta / (teacher + _EPS)
    mu = (rel * m).sum(dim=(1, 2, 3, 4)) / count
    var = (((rel - mu[:, None, None, None, None]) ** 2) * m).sum(dim=(1, 2, 3, 4)) / count
    has = (m.sum(dim=(1, 2, 3, 4)) > 1).float()
    return (F.relu(sigma_target - torch.sqrt(var + 1e-12)) * has).mean()


def edge_loss(delta: torch.Tensor, edges: torch.Tensor, sigma: float) -> torch.Tensor:
    """Edge-aware smoothness of the residual: |∇ΔD| weighted by exp(−G/σ), G the guidance edge map."""
    gx = (delta[..., :, 1:] - delta[..., :, :-1]).abs()
    gy = (delta[..., 1:, :] - delta[..., :-1, :]).abs()
    wx = torch.exp(-torch.maximum(edges[..., :, 1:], edges[..., :, :-1]) / sigma)
    wy = torch.exp(-torch.maximum(edges[..., 1:, :], edges[..., :-1, :]) / sigma)
    return (gx * wx).mean() + (gy * wy).mean()


def compute_losses(
    depth: torch.Tensor,
    delta: torch.Tensor,
    batch: dict[str, torch.Tensor],
    p: LossParams,
    factor: int,
    anchor_still: bool = False,
) -> dict[str, torch.Tensor]:
    """All loss terms and their weighted ``total`` for a refined window ``depth`` with residual ``delta``;
    ``anchor_still``: L_teacher targets :func:`still_anchor` instead of each frame's teacher depth."""
    teacher, conf, rgb = batch["teacher"], batch["conf"], batch["rgb"]
    use_gt = batch["use_gt"]
    target = still_anchor(teacher, rgb, factor) if anchor_still else teacher
    l_teacher = teacher_loss(depth, target, conf, p.teacher_l1)
    l_gt = gt_loss(depth, batch["gt"], use_gt)
    any_gt = use_gt.any()
    l_close = torch.where(any_gt, p.lambda_gt * l_gt + p.lambda_teacher * l_teacher, p.lambda_teacher * l_teacher)
    l_temp = temporal_loss(depth, teacher, conf, rgb, batch["edges"], p, factor)
    l_res, l_mean = residual_loss(delta, teacher, conf, p.residual_mean_weight)
    l_var = variance_loss(delta, teacher, conf, p.var_conf_threshold, p.var_sigma_target)
    l_pose = pose_loss(depth, batch["gt"], batch["K"], batch["poses"], p.pose_tol) if p.w_pose else delta.sum() * 0
    terms = {
        "close": l_close,
        "teacher": l_teacher,
        "gt": l_gt,
        "temp": l_temp,
        "res": l_res,
        "res_mean": l_mean,
        "var": l_var,
        "pose": l_pose,
    }
    total = l_close + p.w_temp * l_temp + p.lambda_res * l_res + l_mean + p.w_var * l_var + p.w_pose * l_pose
    if p.w_edge:
        terms["edge"] = edge_loss(delta, batch["edges"], p.edge_sigma)
        total = total + p.w_edge * terms["edge"]
    terms["total"] = total
    return terms

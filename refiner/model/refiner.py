"""The refiner: teacher depth in, a small clamped residual ΔD out. Read top to bottom.

Per window of N frames at the low-res grid (h = H/f):

1. features: log D_teacher minus its window mean (so the network never sees absolute scale), c(x),
   and by flag ∂x c, ∂y c, a time encoding of the frame's place in the window, RGB Sobel edges;
2. a small CNN encoder (per frame) → Mamba over time at every low-res pixel (linear in N;
   optionally also backwards, as inference is offline per window) → a CNN decoder with a skip;
3. the decoder predicts a relative residual r; ΔD_low = r · D_teacher_low, soft-clamped
   (tanh, training) or hard-clamped (inference) to ±B(x), B = max(α·D, β)·(γ + 1 − c);
4. ΔD_low is upsampled with the stored mapping M (bilinear, or edge-aware guided by log depth);
   optionally a full-res CNN adds δD on edges; the total residual is clamped again at full res,
   set to 0 where the teacher is invalid, and refined = teacher_full + ΔD.

Option ``midres_branch``: a second encoder → Mamba → decoder at twice the low-res grid; its relative
residual and the upsampled low-res one are mixed by a learned per-pixel gate before step 3's clamp
(then done on that grid; ``delta_low`` still reports the low-res branch alone).

The last layer of each residual head starts at zero, so an untrained refiner returns the teacher
exactly. As the inputs are scale-free and ΔD is relative, scaling the teacher by k scales the output
by k (exactly when β = 0; β only floors the clamp for very near pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from refiner.config import ModelParams
from refiner.filters import sobel_magnitude
from refiner.lowres import downsample, downsample_depth, guided_upsample, upsample
from refiner.model.mamba import make_mamba

_EPS = 1e-6
GUIDE_SIGMA_LOG_DEPTH = 0.05  # guided upsampling: a 5% depth difference halves a neighbour's weight (approx.)


@dataclass
class RefinerOutput:
    depth: torch.Tensor  # [B,N,1,H,W] refined depth = teacher + delta_full
    delta_low: torch.Tensor  # [B,N,1,h,w] clamped low-res residual (metres)
    delta_raw_low: torch.Tensor  # [B,N,1,h,w] before the clamp
    delta_full: torch.Tensor  # [B,N,1,H,W] total clamped residual
    clamp_hit_rate: torch.Tensor  # 0-d: share of valid low-res pixels at (hard) or near (soft: > 0.9·B) the bound

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """Residual statistics on valid pixels: mean |ΔD| (m), mean |ΔD|/D, share with |ΔD|/D < 1%, clamp hits."""
        teacher = (self.depth - self.delta_full).float()
        valid = teacher > 0
        delta = self.delta_full.float()[valid]
        rel = delta.abs() / teacher[valid]
        empty = delta.numel() == 0
        return {
            "mean_abs_delta_m": 0.0 if empty else float(delta.abs().mean()),
            "mean_rel_delta": 0.0 if empty else float(rel.mean()),
            "frac_rel_delta_below_1pct": 1.0 if empty else float((rel < 0.01).float().mean()),
            "clamp_hit_rate": float(self.clamp_hit_rate),
        }


def log_window_mean(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log D, its mean over each window's valid pixels [B,1,1,1,1], valid mask) for depth [B, N, 1, H, W]."""
    valid = depth > 0
    log_d = torch.log(depth.clamp_min(_EPS))
    mean = (log_d * valid).sum((1, 2, 3, 4), keepdim=True) / valid.sum((1, 2, 3, 4), keepdim=True).clamp_min(1)
    return log_d, mean, valid


def residual_bound(depth: torch.Tensor, conf: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """B(x) = max(α·D, β)·(γ + 1 − c): larger where the teacher is far or unsure."""
    return torch.clamp_min(alpha * depth, beta) * (gamma + 1 - conf.clamp(0, 1))


def clamp_residual(raw: torch.Tensor, bound: torch.Tensor, hard: bool) -> torch.Tensor:
    """±bound: hard clip, or the smooth B·tanh(raw/B) used in training."""
    bound = bound.clamp_min(_EPS)
    return torch.maximum(torch.minimum(raw, bound), -bound) if hard else bound * torch.tanh(raw / bound)


def _conv_block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.GELU())


def _zero_head(cin: int) -> nn.Conv2d:
    head = nn.Conv2d(cin, 1, 3, padding=1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class TemporalMixer(nn.Module):
    """Pre-norm residual Mamba over time at every pixel; with ``bidirectional`` also over reversed time."""

    def __init__(self, p: ModelParams) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(p.ssm_hidden)
        self.forward_ssm = make_mamba(p.ssm_hidden, p.d_state, p.d_conv, p.expand, p.use_mamba_ssm)
        self.backward_ssm = (
            make_mamba(p.ssm_hidden, p.d_state, p.d_conv, p.expand, p.use_mamba_ssm) if p.bidirectional else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [S, N, C] (S sequences = batch × pixels) → same shape."""
        y = self.norm(x)
        out = self.forward_ssm(y)
        if self.backward_ssm is not None:
            out = out + self.backward_ssm(y.flip(1)).flip(1)
        return x + out


class DepthAwareMixing(nn.Module):
    """Spatial context at the low-res grid: a dilated conv whose output is gated by the local log depth,
    so features mix within a depth layer more than across a depth edge."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = _conv_block(channels, channels, dilation=2)
        self.gate = nn.Sequential(nn.Conv2d(1 + channels, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, feat: torch.Tensor, log_depth: torch.Tensor) -> torch.Tensor:
        return feat + self.gate(torch.cat([log_depth, feat], 1)) * self.mix(feat)


class ResidualBranch(nn.Module):
    """Encoder (per frame) → Mamba over time at every pixel → decoder with a skip: a relative residual r."""

    def __init__(self, p: ModelParams, n_in: int) -> None:
        super().__init__()
        c = p.channels
        self.encoder = nn.Sequential(_conv_block(n_in, c), _conv_block(c, c))
        self.mixing = DepthAwareMixing(c) if p.depth_aware_mixing else None
        self.to_ssm = nn.Linear(c, p.ssm_hidden)
        self.temporal = TemporalMixer(p)
        self.from_ssm = nn.Linear(p.ssm_hidden, c)
        self.decoder = nn.Sequential(_conv_block(2 * c, c), _zero_head(c))

    def forward(self, x: torch.Tensor, log_rel: torch.Tensor, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B·N, C_in, h, w], log_rel [B, N, 1, h, w] → (r [B, N, 1, h, w], encoder features [B·N, C, h, w])."""
        h, w = x.shape[-2:]
        feat = self.encoder(x)
        if self.mixing is not None:
            feat = self.mixing(feat, log_rel.flatten(0, 1))
        c = feat.shape[1]
        seq = feat.reshape(b, n, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, n, c)
        seq = self.from_ssm(self.temporal(self.to_ssm(seq)))
        temporal = seq.reshape(b, h, w, n, c).permute(0, 3, 4, 1, 2).reshape(b * n, c, h, w)
        return self.decoder(torch.cat([feat, temporal], 1)).float().reshape(b, n, 1, h, w), feat


class Refiner(nn.Module):
    """Residual video depth refiner over windows [B, N, 1, H, W] (see the module docstring)."""

    def __init__(self, p: ModelParams) -> None:
        super().__init__()
        self.p = p
        c = p.channels
        n_in = 2 + 2 * p.use_conf_grad + 2 * p.use_time_encoding + p.use_rgb_edges
        self.low = ResidualBranch(p, n_in)
        # optional mid-res branch at twice the low-res grid, fused by a learned per-pixel gate
        self.mid = ResidualBranch(p, n_in) if p.midres_branch else None
        self.fuse = nn.Sequential(nn.Conv2d(c, 1, 3, padding=1), nn.Sigmoid()) if p.midres_branch else None
        self.highres = (
            nn.Sequential(_conv_block(4, c // 2), _conv_block(c // 2, c // 2), _zero_head(c // 2))
            if p.highres_refine
            else None
        )

    def _features(self, depth_low, conf_low, rgb_full) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame input channels [B·N, C_in, h, w] and the scale-free log depth [B, N, 1, h, w]."""
        b, n, _, h, w = depth_low.shape
        log_d, mean, valid = log_window_mean(depth_low)
        log_rel = torch.where(valid, log_d - mean, torch.zeros_like(log_d))
        feats = [log_rel, conf_low]
        if self.p.use_conf_grad:
            gx = F.pad(conf_low[..., :, 1:] - conf_low[..., :, :-1], (0, 1))
            gy = F.pad(conf_low[..., 1:, :] - conf_low[..., :-1, :], (0, 0, 0, 1))
            feats += [gx, gy]
        if self.p.use_time_encoding:
            pos = torch.arange(n, device=depth_low.device, dtype=depth_low.dtype) / max(n - 1, 1)
            enc = torch.stack([torch.sin(math.pi * pos), torch.cos(math.pi * pos)], 1)  # [N, 2]
            feats.append(enc[None, :, :, None, None].expand(b, n, 2, h, w))
        if self.p.use_rgb_edges:
            if rgb_full is None:
                raise ValueError("model.use_rgb_edges is on but no rgb_full was given to the refiner")
            gray = rgb_full.mean(2, keepdim=True)
            edges = F.adaptive_avg_pool2d(sobel_magnitude(gray).flatten(0, 1), (h, w)).reshape(b, n, 1, h, w)
            feats.append(edges)
        return torch.cat(feats, 2).flatten(0, 1), log_rel

    def _clamped(self, rel, depth, conf, hard: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Relative residual → metres; (clamped ΔD, raw ΔD, clamp hit rate) on that grid, 0 where invalid."""
        p = self.p
        valid = depth > 0
        raw = torch.where(valid, rel * depth, torch.zeros_like(rel))
        bound = residual_bound(depth, conf, p.clamp_alpha, p.clamp_beta, p.clamp_gamma)
        delta = torch.where(valid, clamp_residual(raw, bound, hard), torch.zeros_like(rel))
        near = raw.abs() >= (bound if hard else 0.9 * bound)
        return delta, raw, (near & valid).sum() / valid.sum().clamp_min(1)

    def forward(
        self,
        depth_low: torch.Tensor,
        conf_low: torch.Tensor,
        depth_full: torch.Tensor,
        conf_full: torch.Tensor,
        mapping,
        rgb_full: torch.Tensor | None = None,
        hard_clamp: bool = False,
    ) -> RefinerOutput:
        p = self.p
        b, n, _, h, w = depth_low.shape
        H, W = depth_full.shape[-2:]
        depth_low, conf_low = depth_low.float(), conf_low.float()
        depth_full, conf_full = depth_full.float(), conf_full.float()

        # 1-2. encoder → Mamba over time per pixel → decoder with a skip from the encoder
        x, log_rel = self._features(depth_low, conf_low, rgb_full)
        rel, _ = self.low(x, log_rel, b, n)

        # 3. relative residual → metres, clamped at the low-res grid
        delta_low, raw_low, hit_rate = self._clamped(rel, depth_low, conf_low, hard_clamp)
        grid, grid_depth, factor = delta_low, depth_low, H // h
        if self.mid is not None:  # fuse with the mid-res branch; the residual then lives on its grid
            if factor % 2:
                raise ValueError(f"model.midres_branch needs an even low-res factor, got {factor}")
            factor //= 2
            depth_mid, conf_mid = downsample_depth(depth_full, factor), downsample(conf_full, factor)
            x_mid, log_rel_mid = self._features(depth_mid, conf_mid, rgb_full)
            rel_mid, feat_mid = self.mid(x_mid, log_rel_mid, b, n)
            gate = self.fuse(feat_mid).float().reshape(b, n, 1, 2 * h, 2 * w)
            rel_up = upsample(rel, [2, 2, 0, 0], (2 * h, 2 * w))
            grid, _, hit_rate = self._clamped((1 - gate) * rel_up + gate * rel_mid, depth_mid, conf_mid, hard_clamp)
            grid_depth = depth_mid

        # 4. upsample to full res, optional full-res correction, clamp again, zero where the teacher is invalid
        valid = depth_full > 0
        if p.guided_upsampling:  # edge-aware: the residual does not bleed across teacher depth edges
            log_full = torch.log(depth_full.clamp_min(_EPS))
            log_grid = torch.log(grid_depth.clamp_min(_EPS))
            delta = guided_upsample(grid, log_grid, log_full, factor, GUIDE_SIGMA_LOG_DEPTH)
        else:
            delta = upsample(grid, mapping if self.mid is None else [factor, factor, 0, 0], (H, W))
        if self.highres is not None:
            log_t, mean, _ = log_window_mean(depth_full)
            log_r = torch.log((depth_full + delta).clamp_min(_EPS))
            edges = sobel_magnitude(rgb_full.mean(2, keepdim=True)) if rgb_full is not None else torch.zeros_like(delta)
            hr_in = torch.cat([(log_t - mean) * valid, (log_r - mean) * valid, conf_full, edges.float()], 2)
            delta = delta + self.highres(hr_in.flatten(0, 1)).float().reshape(b, n, 1, H, W) * depth_full
        bound = residual_bound(depth_full, conf_full, p.clamp_alpha, p.clamp_beta, p.clamp_gamma)
        hard = hard_clamp or self.highres is None  # without the full-res head, ΔD_low was shaped already
        delta_full = torch.where(valid, clamp_residual(delta, bound, hard), torch.zeros_like(delta))
        return RefinerOutput(depth_full + delta_full, delta_low, raw_low, delta_full, hit_rate)

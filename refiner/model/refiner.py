"""The refiner: teacher depth in, a small clamped residual ΔD out. Read top to bottom.

``Refiner(p, low_res_factor)(depth, conf, rgb=None, hard_clamp=False, state=None)`` on windows
[B, N, 1, H, W] of teacher depth (metres) and confidence c(x) ∈ [0, 1]:

1. the low-res grid (h = H/f): depth by an f×f mean where all pixels are valid, c(x) by an area mean;
2. features per frame: log D minus its window mean (the network never sees absolute scale), c(x), the
   frame's mean of that log depth (its global scale against the window), a keyframe flag, and by flag
   ∂x c, ∂y c, a time encoding, RGB Sobel edges, and (``noise_features``) how noisy the teacher is: each
   pixel's frame-to-frame log-depth change over the window and the spread of the frames' global scale;
3. a small CNN encoder (per frame) → Mamba over time at every low-res pixel (forwards, optionally also
   backwards within the window; the forward scan can start from the state carried from the previous
   window, so context runs beyond one window at constant memory) → a CNN decoder with a skip;
4. the decoder predicts a relative residual r; ΔD_low = r·D_low, clamped to ±B(x),
   B = max(α·D, β)·(γ + 1 − c) + κ·σ(x)·D with σ the teacher's own temporal noise at that pixel over the
   window (``clamp_noise`` κ; the bound follows a noisy teacher): tanh-soft in training, hard when asked;
5. ΔD_low is upsampled with the mapping M (bilinear, or edge-aware guided by log depth); optionally a
   full-res CNN adds δD on edges;
6. optionally (``temporal_blend``) a full-res temporal aggregation: each pixel of the corrected depth moves
   toward a depth- and colour-weighted mean over the window at that pixel, by a per-pixel gate the decoder
   predicts (:class:`TemporalBlend`): the per-pixel noise the low-res residual cannot reach;
7. the total is clamped again (soft in training) and set to 0 where the teacher is invalid;
   refined = teacher + ΔD.

Option ``midres_branch``: a second encoder → Mamba → decoder at twice the low-res grid, its relative
residual mixed with the upsampled low-res one by a learned per-pixel gate before step 4's clamp.

The last layer of each residual head starts at zero, so an untrained refiner returns the teacher
exactly. As the inputs are scale-free and ΔD is relative, scaling the teacher by k scales the output
by k (exactly when β = 0; β only floors the clamp for very near pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from refiner.core.config import ModelParams
from refiner.geometry.filters import sobel_magnitude
from refiner.geometry.lowres_map import low_mapping
from refiner.geometry.lowres_sampling import downsample, downsample_depth, guided_upsample, upsample
from refiner.model.blend import TemporalBlend
from refiner.model.mamba import Mamba, make_mamba

_EPS = 1e-6
GUIDE_SIGMA_LOG_DEPTH = 0.05  # guided upsampling: a 5% depth difference halves a neighbour's weight (approx.)
NEAR_BOUND = 0.9  # a soft-clamped residual beyond this share of its bound counts as a clamp hit
NOISE_FLOOR = 1e-3  # log(noise + this): the noise features stay finite on a perfectly steady teacher


@dataclass
class RefinerOutput:
    depth: torch.Tensor  # [B,N,1,H,W] refined depth = teacher + delta_full
    delta_low: torch.Tensor  # [B,N,1,h,w] clamped low-res residual (metres)
    delta_full: torch.Tensor  # [B,N,1,H,W] total clamped residual
    clamp_hit_rate: dict[str, torch.Tensor]  # per clamp ("low", "full"): share of valid pixels at the bound
    state: list | None = None  # the temporal cores' carried state, for the next window

    @torch.no_grad()
    def stats(self, teacher: torch.Tensor) -> dict[str, float]:
        """Residual statistics on valid pixels: mean |ΔD| (m), mean |ΔD|/D, share with |ΔD|/D < 1%, clamp hits."""
        valid = teacher > 0
        count = int(valid.sum())
        delta = self.delta_full.float().abs() * valid  # masked sums: no boolean indexing (a copy and a sync)
        rel = delta / teacher.clamp_min(_EPS)
        empty = count == 0
        return {
            "mean_abs_delta_m": 0.0 if empty else float(delta.sum()) / count,
            "mean_rel_delta": 0.0 if empty else float(rel.sum()) / count,
            "frac_rel_delta_below_1pct": 1.0 if empty else float(((rel < 0.01) & valid).sum()) / count,
            **{f"clamp_hit_rate_{k}": float(v) for k, v in self.clamp_hit_rate.items()},
        }


def log_window_mean(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log D, its mean over each window's valid pixels [B,1,1,1,1], valid mask) for depth [B, N, 1, H, W]."""
    valid = depth > 0
    log_d = torch.log(depth.clamp_min(_EPS))
    mean = (log_d * valid).sum((1, 2, 3, 4), keepdim=True) / valid.sum((1, 2, 3, 4), keepdim=True).clamp_min(1)
    return log_d, mean, valid


def temporal_noise(depth: torch.Tensor) -> torch.Tensor:
    """Each pixel's noise level over its window, [B, 1, 1, H, W] from depth [B, N, 1, H, W]: the RMS of the
    frame-to-frame change of log depth over pairs valid in both frames, / √2 (the std of i.i.d. noise); 0 with
    one frame. Real motion raises it too: the model sees it as an input, never as a target."""
    log_d = torch.log(depth.clamp_min(_EPS))
    pair = ((depth[:, 1:] > 0) & (depth[:, :-1] > 0)).float()
    change = (log_d[:, 1:] - log_d[:, :-1]) * pair
    return torch.sqrt((change**2).sum(1, keepdim=True) / (2 * pair.sum(1, keepdim=True).clamp_min(1)))


def residual_bound(
    depth: torch.Tensor, conf: torch.Tensor, alpha: float, beta: float, gamma: float, noise: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """B(x) = max(α·D, β)·(γ + 1 − c) + noise·D: larger where the teacher is far, unsure, or noisy over time
    (``noise``: κ times :func:`temporal_noise`, so the bound follows the teacher's own flicker)."""
    return torch.clamp_min(alpha * depth, beta) * (gamma + 1 - conf.clamp(0, 1)) + noise * depth


def clamp_residual(raw: torch.Tensor, bound: torch.Tensor, hard: bool) -> torch.Tensor:
    """±bound: hard clip, or the smooth B·tanh(raw/B) used in training (its gradient never vanishes)."""
    bound = bound.clamp_min(_EPS)
    return torch.maximum(torch.minimum(raw, bound), -bound) if hard else bound * torch.tanh(raw / bound)


def clamped(raw: torch.Tensor, depth: torch.Tensor, conf: torch.Tensor, p: ModelParams, hard: bool):
    """(ΔD clamped to ±B, 0 where the teacher is invalid; share of valid pixels at or near the bound)."""
    valid = depth > 0
    noise = p.clamp_noise * temporal_noise(depth) if p.clamp_noise else 0.0
    bound = residual_bound(depth, conf, p.clamp_alpha, p.clamp_beta, p.clamp_gamma, noise)
    delta = torch.where(valid, clamp_residual(raw, bound, hard), torch.zeros_like(raw))
    near = raw.abs() >= (bound if hard else NEAR_BOUND * bound)
    return delta, (near & valid).sum() / valid.sum().clamp_min(1)


def _conv_block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.GELU())


def _zero_head(cin: int, cout: int = 1) -> nn.Conv2d:
    head = nn.Conv2d(cin, cout, 3, padding=1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class TemporalMixer(nn.Module):
    """Pre-norm residual Mamba over time at every pixel; with ``bidirectional`` also over reversed time.

    The forward scan may start from a carried state and hand on its state after frame ``state_index``.
    """

    def __init__(self, p: ModelParams) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(p.ssm_hidden)
        self.forward_ssm = make_mamba(p.ssm_hidden, p.d_state, p.d_conv, p.expand, p.use_mamba_ssm, p.carry_state)
        self.backward_ssm = (
            make_mamba(p.ssm_hidden, p.d_state, p.d_conv, p.expand, p.use_mamba_ssm) if p.bidirectional else None
        )

    def forward(self, x: torch.Tensor, state=None, state_index: int | None = None):
        """x: [S, N, C] (S sequences = batch × pixels) → (same shape, next state or None)."""
        y = self.norm(x)
        if state_index is None and state is None:
            out, new_state = self.forward_ssm(y), None
        else:
            out, new_state = self.forward_ssm(y, state=state, state_index=state_index)
        if self.backward_ssm is not None:
            out = out + self._time_reversed(y)
        return x + out, new_state

    def _time_reversed(self, y: torch.Tensor) -> torch.Tensor:
        """The backward direction: the backward block over reversed time (ours flips slice by slice, in cache)."""
        if isinstance(self.backward_ssm, Mamba):
            return self.backward_ssm(y, time_reversed=True)
        return self.backward_ssm(y.flip(1)).flip(1)


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
    """Encoder (per frame) → Mamba over time at every pixel → decoder with a skip: a relative residual r
    (and, with ``outputs`` 2, the temporal-blend gate logit z)."""

    def __init__(self, p: ModelParams, n_in: int, outputs: int = 1) -> None:
        super().__init__()
        c = p.channels
        self.encoder = nn.Sequential(_conv_block(n_in, c), _conv_block(c, c))
        self.mixing = DepthAwareMixing(c) if p.depth_aware_mixing else None
        self.to_ssm = nn.Linear(c, p.ssm_hidden)
        self.temporal = TemporalMixer(p)
        self.from_ssm = nn.Linear(p.ssm_hidden, c)
        self.decoder = nn.Sequential(_conv_block(2 * c, c), _zero_head(c, outputs))

    def forward(self, x: torch.Tensor, log_rel: torch.Tensor, state=None, state_index: int | None = None):
        """x [B, N, C_in, h, w], log_rel [B, N, 1, h, w] → (r and gate [B, N, outputs, h, w], features
        [B·N, C, h, w], state)."""
        b, n, _, h, w = x.shape
        feat, seq = self._encode(x, log_rel)
        mixed, state = self.temporal(seq, state, state_index)
        temporal = rearrange(self.from_ssm(mixed), "(b h w) n c -> (b n) c h w", b=b, h=h, w=w)
        r = self.decoder(torch.cat([feat, temporal], 1)).float()
        return rearrange(r, "(b n) c h w -> b n c h w", b=b), feat, state

    def _encode(self, x: torch.Tensor, log_rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-frame features [B·N, C, h, w], the temporal core's input sequences [B·h·w, N, ssm_hidden])."""
        b, n = x.shape[:2]
        feat = self.encoder(rearrange(x, "b n c h w -> (b n) c h w"))
        if self.mixing is not None:
            feat = self.mixing(feat, rearrange(log_rel, "b n c h w -> (b n) c h w"))
        return feat, self.to_ssm(rearrange(feat, "(b n) c h w -> (b h w) n c", b=b, n=n))

    def carried_state(self, x: torch.Tensor, log_rel: torch.Tensor, state_index: int):
        """The forward scan's state after frame ``state_index``, from a zero state: only the encoder and the
        forward scan run (the backward scan, decoder and everything after cannot change it), and only on frames
        0..state_index: the encoder works per frame and the scan is causal, so later frames cannot change that
        state (the window-wide terms, such as the window's mean log depth, are already in ``x``)."""
        _, seq = self._encode(x[:, : state_index + 1], log_rel[:, : state_index + 1])
        mixer = self.temporal
        return mixer.forward_ssm(mixer.norm(seq), state=None, state_index=state_index)[1]


class Refiner(nn.Module):
    """Residual video depth refiner over windows [B, N, 1, H, W] (see the module docstring)."""

    def __init__(self, p: ModelParams, low_res_factor: int) -> None:
        super().__init__()
        self.p, self.factor = p, low_res_factor
        c = p.channels
        n_in = 4 + 2 * p.use_conf_grad + 2 * p.use_time_encoding + p.use_rgb_edges + 2 * p.noise_features
        self.low = ResidualBranch(p, n_in, 1 + p.temporal_blend)
        self.blend = TemporalBlend() if p.temporal_blend else None
        self.mid = ResidualBranch(p, n_in) if p.midres_branch else None
        self.fuse = nn.Sequential(nn.Conv2d(c, 1, 3, padding=1), nn.Sigmoid()) if p.midres_branch else None
        self.highres = (
            nn.Sequential(_conv_block(4, c // 2), _conv_block(c // 2, c // 2), _zero_head(c // 2))
            if p.highres_refine
            else None
        )

    def _features(self, depth, conf, rgb, keyframes) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame input channels [B, N, C_in, h, w] and the scale-free log depth [B, N, 1, h, w]."""
        b, n, _, h, w = depth.shape
        log_d, mean, valid = log_window_mean(depth)
        log_rel = torch.where(valid, log_d - mean, torch.zeros_like(log_d))
        frame_mean = (log_rel * valid).sum((2, 3, 4), keepdim=True) / valid.sum((2, 3, 4), keepdim=True).clamp_min(1)
        key = torch.zeros(b, n, device=depth.device) if keyframes is None else keyframes.float().reshape(b, n)
        feats = [log_rel, conf, frame_mean.expand_as(log_rel), key[:, :, None, None, None].expand_as(log_rel)]
        if self.p.use_conf_grad:
            feats += [
                F.pad(conf[..., :, 1:] - conf[..., :, :-1], (0, 1)),
                F.pad(conf[..., 1:, :] - conf[..., :-1, :], (0, 0, 0, 1)),
            ]
        if self.p.noise_features:  # how noisy this teacher is here and over the whole window (log scale)
            pixel = torch.log(temporal_noise(depth) + NOISE_FLOOR).expand_as(log_rel)
            scale = torch.log(frame_mean.std(1, keepdim=True, unbiased=False) + NOISE_FLOOR).expand_as(log_rel)
            feats += [pixel, scale]
        if self.p.use_time_encoding:
            pos = torch.arange(n, device=depth.device, dtype=depth.dtype) / max(n - 1, 1)
            enc = torch.stack([torch.sin(math.pi * pos), torch.cos(math.pi * pos)], 1)  # [N, 2]
            feats.append(enc[None, :, :, None, None].expand(b, n, 2, h, w))
        if self.p.use_rgb_edges:
            if rgb is None:
                raise ValueError("model.use_rgb_edges is on but no rgb was given to the refiner")
            edges = F.adaptive_avg_pool2d(sobel_magnitude(rgb.mean(2, keepdim=True)).flatten(0, 1), (h, w))
            feats.append(edges.reshape(b, n, 1, h, w))
        return torch.cat(feats, 2), log_rel

    def _midres(self, rel, depth, conf, rgb, keyframes, hard):
        """Fuse with the mid-res branch: (ΔD on the mid grid, its depth, hit rate, factor)."""
        f = self.factor // 2
        depth_mid, conf_mid = downsample_depth(depth, f), downsample(conf, f)
        x_mid, log_rel_mid = self._features(depth_mid, conf_mid, rgb, keyframes)
        rel_mid, feat_mid, _ = self.mid(x_mid, log_rel_mid)
        b, n, _, h2, w2 = rel_mid.shape
        gate = rearrange(self.fuse(feat_mid).float(), "(b n) c h w -> b n c h w", b=b)
        rel_up = upsample(rel, [2, 2, 0, 0], (h2, w2))
        delta, hit = clamped(((1 - gate) * rel_up + gate * rel_mid) * depth_mid, depth_mid, conf_mid, self.p, hard)
        return delta, depth_mid, hit, f

    def _to_full(self, grid, grid_depth, depth, conf, rgb, factor):
        """Upsample the residual to full res; the optional full-res head adds an edge correction."""
        H, W = depth.shape[-2:]
        if self.p.guided_upsampling:  # edge-aware: the residual does not bleed across teacher depth edges
            log_full, log_grid = torch.log(depth.clamp_min(_EPS)), torch.log(grid_depth.clamp_min(_EPS))
            delta = guided_upsample(grid, log_grid, log_full, factor, GUIDE_SIGMA_LOG_DEPTH)
        else:
            delta = upsample(grid, low_mapping(factor), (H, W))
        if self.highres is None:
            return delta
        valid = depth > 0
        log_t, mean, _ = log_window_mean(depth)
        log_r = torch.log((depth + delta).clamp_min(_EPS))
        edges = sobel_magnitude(rgb.mean(2, keepdim=True)).float() if rgb is not None else torch.zeros_like(delta)
        hr_in = torch.cat([(log_t - mean) * valid, (log_r - mean) * valid, conf, edges], 2)
        correction = self.highres(rearrange(hr_in, "b n c h w -> (b n) c h w")).float()
        return delta + rearrange(correction, "(b n) c h w -> b n c h w", b=depth.shape[0]) * depth

    def carried_state(self, depth, conf, rgb=None, keyframes=None, state_index: int = 0):
        """What ``forward(..., state_index=state_index).state`` returns, at a fraction of the cost: the state
        the temporal core carries into the next window (training's carried prefix needs only that)."""
        depth, conf = depth.float(), conf.float()
        depth_low, conf_low = downsample_depth(depth, self.factor), downsample(conf, self.factor)
        x, log_rel = self._features(depth_low, conf_low, rgb, keyframes)
        return self.low.carried_state(x, log_rel, state_index)

    def forward(self, depth, conf, rgb=None, keyframes=None, hard_clamp=False, state=None, state_index=None):
        """depth, conf [B, N, 1, H, W] (rgb [B, N, 3, H, W] in [0, 1], keyframes [B, N] bool, optional)."""
        depth, conf = depth.float(), conf.float()
        if depth.shape[-1] % self.factor or depth.shape[-2] % self.factor:
            raise ValueError(
                f"frame size {tuple(depth.shape[-2:])} is not a multiple of the low-res factor {self.factor}"
            )
        depth_low, conf_low = downsample_depth(depth, self.factor), downsample(conf, self.factor)
        x, log_rel = self._features(depth_low, conf_low, rgb, keyframes)
        out, _, state = self.low(x, log_rel, state, state_index)
        rel = out[:, :, :1]
        delta_low, hit_low = clamped(rel * depth_low, depth_low, conf_low, self.p, hard_clamp)
        grid, grid_depth, hit_grid, factor = delta_low, depth_low, hit_low, self.factor
        if self.mid is not None:
            grid, grid_depth, hit_grid, factor = self._midres(rel, depth, conf, rgb, keyframes, hard_clamp)
        delta = self._to_full(grid, grid_depth, depth, conf, rgb, factor)
        if self.blend is not None:  # full-res temporal aggregation of the corrected depth, gated per pixel
            gate = upsample(out[:, :, 1:2], low_mapping(self.factor), depth.shape[-2:])
            delta = self.blend(depth + delta, rgb, gate) - depth
        delta, hit_full = clamped(delta, depth, conf, self.p, hard_clamp)
        hits = {"low": hit_low, "full": hit_full} | ({"mid": hit_grid} if self.mid is not None else {})
        return RefinerOutput(depth + delta, delta_low, delta, hits, state)

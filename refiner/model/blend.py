"""Full-resolution temporal aggregation with a learned gate (:class:`TemporalBlend`) and its weighted mean
over the window with a hand-written backward (:class:`_WindowMean`).

Each pixel of the (already scale-corrected) depth moves toward a weighted mean of the window's depths at the
same pixel:

    A_t = Σ_s w_ts·D_s / Σ_s w_ts,  w_ts = exp(l_ts)·[D_s > 0],
    l_ts = −½·r_ts² − ½·‖I_s − I_t‖²/σ_c² − ½·((s − t)/τ)²,  r_ts = (D_s − D_t)/(σ_d·D_t),
    D'_t = D_t + m_t·(A_t − D_t),  m_t = g·sigmoid(z_t),  g = BLEND_GAIN_SCALE·γ,

with σ_d, σ_c, τ learned scalars (initialised like the bilateral baseline) and the gate z predicted by the
low-res decoder, upsampled. γ starts at 0 (ReZero style: the refiner starts as the identity and γ still gets
a gradient); the residual clamp after it bounds the result. Frames whose depth or colour differ at the pixel
(motion, occlusion) get little weight. One frame t at a time, so memory stays O(N·H·W) without autograd.

Gradients, with λ_t = (∂L/∂A_t)/Σ_s w_ts and g_ts = ∂L/∂l_ts = λ_t·(D_s − A_t)·w_ts:
∂L/∂D_s = Σ_t λ_t·w_ts − g_ts·r_ts/(σ_d·D_t), ∂L/∂D_t += Σ_s g_ts·r_ts·D_s/(σ_d·D_t²),
∂L/∂log σ_d = Σ g·r², ∂L/∂log σ_c = Σ g·‖I_s − I_t‖²/σ_c², ∂L/∂log τ = Σ g·((s − t)/τ)².
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_EPS = 1e-6
BLEND_GAIN_SCALE = 20.0  # TemporalBlend's gain g = 20·γ: γ learns at the optimiser's step size, g 20× faster


def _colour_sq(rgb: Tensor | None, t: int, out: Tensor | None = None, tmp: Tensor | None = None) -> Tensor | None:
    """‖I_s − I_t‖² for every s, [B, N, 1, H, W] (None without RGB), written into ``out`` when given
    (``tmp``: a scratch buffer of the same shape).

    Summed plane by plane: several times faster than reducing the strided colour axis, with the same
    additions in the same order."""
    if rgb is None:
        return None
    planes = rgb.unbind(2)
    out = torch.sub(planes[0], planes[0][:, t : t + 1], out=None if out is None else out[:, :, 0]).square_()
    for plane in planes[1:]:
        out.add_(torch.sub(plane, plane[:, t : t + 1], out=None if tmp is None else tmp[:, :, 0]).square_())
    return out.unsqueeze(2)


def _colour_sq_kept(rgb: Tensor, t: int, keep: list, tmp: Tensor) -> Tensor:
    """:func:`_colour_sq` reusing the symmetric pairs s < t from the frames already kept (half the work)."""
    colour = rgb.new_empty(rgb.shape[0], rgb.shape[1], 1, *rgb.shape[3:])
    for s, (_, kept, _) in enumerate(keep[:t]):
        colour[:, s] = kept[:, t]
    _colour_sq(rgb[:, t:], 0, out=colour[:, t:], tmp=tmp[:, t:])
    return colour


def _depth_term(depth: Tensor, t: int, inv_sd: float, out: Tensor | None = None) -> Tensor:
    """r_ts = (D_s − D_t)/(σ_d·max(D_t, ε)) for every s, [B, N, 1, H, W] (into ``out`` when given)."""
    return torch.sub(depth, depth[:, t : t + 1], out=out).mul_(inv_sd / depth[:, t : t + 1].clamp_min(_EPS))


def _frame_weights(
    depth: Tensor,
    valid: Tensor,
    colour: Tensor | None,
    t: int,
    inv: tuple[float, float, float],
    out: Tensor | None = None,
) -> Tensor:
    """w_ts over s [B, N, 1, H, W] for frame t (into ``out`` when given); ``inv`` = (1/σ_d, 1/σ_c, 1/τ)."""
    inv_sd, inv_sc, inv_tau = inv
    logw = _depth_term(depth, t, inv_sd, out).square_().mul_(-0.5)
    if colour is not None:
        logw.add_(colour, alpha=-0.5 * inv_sc**2)
    for s in range(depth.shape[1]):  # the time term: one scalar per frame s
        if s != t:
            logw[:, s].sub_(0.5 * ((s - t) * inv_tau) ** 2)
    return logw.exp_().mul_(valid)


def _means(depth: Tensor, rgb: Tensor | None, inv: tuple[float, float, float], keep: list | None = None) -> Tensor:
    """A_t for every t, [B, N, 1, H, W]; with ``keep``, each frame's (weights, colour term, Σw) appended to it.

    What is not kept goes through buffers reused from frame to frame: fresh window-sized tensors per frame
    cost more in page faults than in arithmetic."""
    means, valid = [], (depth > 0).to(depth.dtype)  # a float mask: multiplying by it needs no conversion
    scratch = torch.empty_like(depth)  # the colour planes' differences, then w·D
    colour_buf, weight_buf = (None, None) if keep is not None else (torch.empty_like(depth), torch.empty_like(depth))
    for t in range(depth.shape[1]):
        if keep is not None and rgb is not None:
            colour = _colour_sq_kept(rgb, t, keep, scratch)
        else:
            colour = _colour_sq(rgb, t, colour_buf, scratch)
        w = _frame_weights(depth, valid, colour, t, inv, weight_buf)
        total = w.sum(1)
        means.append(torch.mul(w, depth, out=scratch).sum(1) / total.clamp_min(_EPS))
        if keep is not None:
            keep.append((w, colour, total))
    return torch.stack(means, 1)


def _frame_grads(depth: Tensor, means: Tensor, grad: Tensor, kept: tuple, t: int, inv: tuple) -> tuple[Tensor, ...]:
    """Frame t's share of the gradients: (∂L/∂D over s, ∂L/∂D_t through the 1/D_t in r, ∂L/∂ log-scales [3])."""
    w, colour, total = kept
    inv_sd, inv_sc, inv_tau = inv
    d_t = depth[:, t : t + 1]
    d_c, is_big = d_t.clamp_min(_EPS), d_t > _EPS
    a_t = means[:, t : t + 1] * (total >= _EPS).unsqueeze(1)  # ∂A/∂w_s = (D_s − A)/Σw unless Σw was clamped
    lam = grad[:, t : t + 1] / total.clamp_min(_EPS).unsqueeze(1)
    g_l = (depth - a_t).mul_(lam).mul_(w)  # ∂L/∂l_ts
    r = _depth_term(depth, t, inv_sd)
    g_r = g_l * r  # −∂L/∂r_ts
    g_s = torch.addcmul(lam * w, g_r, inv_sd / d_c, value=-1.0)  # through Σ w·D and through r's D_s
    # ∂r_ts/∂D_t = −(1/σ_d)·(D_c + (D_s − D_t)·[D_t > ε]) / D_c², D_c = max(D_t, ε)
    g_t = (g_r * (depth * is_big + (d_c - d_t * is_big))).sum(1, keepdim=True) * (inv_sd / d_c.square())
    steps = torch.arange(depth.shape[1], dtype=depth.dtype, device=depth.device) - t
    g_logs = torch.stack(
        [
            (g_r * r).sum(),
            (g_l * colour).sum() * inv_sc**2 if colour is not None else g_r.new_zeros(()),
            (g_l.sum((0, 2, 3, 4)) * (steps * inv_tau).square()).sum(),
        ]
    )
    return g_s, g_t, g_logs


class _WindowMean(torch.autograd.Function):
    """A_t with a hand-written backward through depth and the three log-scales (the per-frame weights are
    kept from the forward pass: N²·H·W values per window)."""

    @staticmethod
    def forward(ctx, depth, rgb, log_sd, log_sc, log_tau):  # noqa: ANN001, ANN205
        ctx.inv, ctx.kept = tuple(math.exp(-float(v)) for v in (log_sd, log_sc, log_tau)), []
        out = _means(depth, rgb, ctx.inv, ctx.kept)
        ctx.save_for_backward(depth, out)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        depth, means = ctx.saved_tensors
        g_depth, g_logs = torch.zeros_like(depth), depth.new_zeros(3)
        for t, kept in enumerate(ctx.kept):
            g_s, g_t, g_l = _frame_grads(depth, means, grad, kept, t, ctx.inv)
            g_depth += g_s
            g_depth[:, t : t + 1] += g_t
            g_logs += g_l
        return g_depth, None, g_logs[0], g_logs[1], g_logs[2]


def window_mean(depth: Tensor, rgb: Tensor | None, log_sd: Tensor, log_sc: Tensor, log_tau: Tensor) -> Tensor:
    """A_t for every t, [B, N, 1, H, W] (see the module docstring); without autograd nothing is kept."""
    if torch.is_grad_enabled() and any(v.requires_grad for v in (depth, log_sd, log_sc, log_tau)):
        return _WindowMean.apply(depth, rgb, log_sd, log_sc, log_tau)
    return _means(depth, rgb, tuple(math.exp(-float(v)) for v in (log_sd, log_sc, log_tau)))


class TemporalBlend(nn.Module):
    """D' = D + m·(A − D) where the teacher is valid, m = BLEND_GAIN_SCALE·γ·sigmoid(z) (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_sigma_depth = nn.Parameter(torch.tensor(math.log(0.05)))
        self.log_sigma_colour = nn.Parameter(torch.tensor(math.log(0.1)))
        self.log_tau = nn.Parameter(torch.tensor(math.log(3.0)))
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, depth: Tensor, rgb: Tensor | None, gate_logit: Tensor) -> Tensor:
        """depth [B, N, 1, H, W] (> 0 valid), rgb [B, N, 3, H, W] or None, gate_logit [B, N, 1, H, W] → depth."""
        means = window_mean(depth, rgb, self.log_sigma_depth, self.log_sigma_colour, self.log_tau)
        m = BLEND_GAIN_SCALE * self.gain * torch.sigmoid(gate_logit)
        return torch.where(depth > 0, depth + m * (means - depth), depth)

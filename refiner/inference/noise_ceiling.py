"""A noise ceiling at inference: a teacher noisier over time than any the refiner trained on is brought inside
its range before the model and back out after it.

Per pixel of a window, with m the mean log depth over the window's valid frames and σ the pixel's temporal
noise (:func:`refiner.model.refiner.temporal_noise`), deviations from m are scaled by k = min(1, σ_max/σ):

    compressed log D' = m + k·(log D − m)

The model's change there, log R' − log D', is split into its per-pixel mean over the window (a level correction,
applied as it is) and the rest (the temporal correction, scaled back by 1/k):

    log R − log D = μ + (log R' − log D' − μ) / k

The model sees a teacher whose noise is at most σ_max; what it removes there is removed from the real teacher in
proportion, while a steady correction is never amplified. A zero residual gives the teacher exactly (do-no-harm),
pixels with σ ≤ σ_max are untouched (k = 1), and all of it is relative to the teacher's own depth, so metric scale
is kept.
"""

import torch

from refiner.model.refiner import temporal_noise

_EPS = 1e-6


def compression(depth: torch.Tensor, sigma_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, k) for depth [N, 1, H, W] (0 = invalid): the per-pixel mean log depth over valid frames [1, 1, H, W]
    and the factor k = min(1, σ_max/σ) [1, 1, H, W]."""
    valid = depth > 0
    log_d = torch.log(depth.clamp_min(_EPS))
    mean = (log_d * valid).sum(0, keepdim=True) / valid.sum(0, keepdim=True).clamp_min(1)
    sigma = temporal_noise(depth[None])[0]
    return mean, (sigma_max / sigma.clamp_min(_EPS)).clamp(max=1.0)


def compress(depth: torch.Tensor, mean: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The teacher with its deviations from ``mean`` scaled by ``k`` in log depth (0 stays 0)."""
    squeezed = torch.exp(mean + k * (torch.log(depth.clamp_min(_EPS)) - mean))
    return torch.where(depth > 0, squeezed, torch.zeros_like(depth))


def below_ceiling(depth: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """A batch of windows [B, N, 1, H, W] as the model sees it under the ceiling (each window compressed on its own;
    ``sigma_max`` 0 returns it as it is): what GT-free adaptation trains on."""
    if sigma_max <= 0:
        return depth
    return torch.stack([compress(w, *compression(w, sigma_max)) for w in depth])


def under_ceiling(window_delta, depth: torch.Tensor, sigma_max: float) -> tuple[torch.Tensor, ...]:
    """Run ``window_delta(depth')`` (→ ΔD' [N, H, W], *rest) on the compressed teacher and return (ΔD, *rest) for
    the real one; ``sigma_max`` 0 runs it on ``depth`` as it is."""
    if sigma_max <= 0:
        return window_delta(depth)
    mean, k = compression(depth, sigma_max)
    squeezed = compress(depth, mean, k)
    delta, *rest = window_delta(squeezed)
    teacher = depth[:, 0]
    valid = teacher > 0
    change = torch.log1p(delta / squeezed[:, 0].clamp_min(_EPS)) * valid  # log R' − log D'
    level = change.sum(0, keepdim=True) / valid.sum(0, keepdim=True).clamp_min(1)
    ratio = level + (change - level) / k[:, 0]  # the per-pixel level passes as it is, the temporal part scales back
    return (torch.where(valid, teacher * torch.expm1(ratio), torch.zeros_like(delta)), *rest)

"""The temporal blend's window mean: values and hand-written gradients against autograd through the formula."""

import math

import pytest
import torch

from refiner.model.blend import TemporalBlend, window_mean


def _reference(depth, rgb, log_sd, log_sc, log_tau):
    """A_t = Σ_s w_ts·D_s / Σ_s w_ts written out with autograd ops, one frame t at a time."""
    n = depth.shape[1]
    steps = torch.arange(n, dtype=depth.dtype)
    means = []
    for t in range(n):
        d_t = depth[:, t : t + 1]
        logw = -0.5 * ((depth - d_t) * torch.exp(-log_sd) / d_t.clamp_min(1e-6)).square()
        if rgb is not None:
            logw = logw - 0.5 * (rgb - rgb[:, t : t + 1]).square().sum(2, keepdim=True) * torch.exp(-2 * log_sc)
        logw = logw - 0.5 * ((steps - t) * torch.exp(-log_tau)).square()[None, :, None, None, None]
        w = torch.exp(logw) * (depth > 0)
        means.append((w * depth).sum(1) / w.sum(1).clamp_min(1e-6))
    return torch.stack(means, 1)


def _inputs(with_rgb: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(2, 5, 1, 4, 3, generator=g, dtype=torch.float64) * 0.4 + 1.0
    depth[0, 2, 0, 1, 1] = 0.0  # an invalid pixel: never a neighbour, its own mean unused
    rgb = torch.rand(2, 5, 3, 4, 3, generator=g, dtype=torch.float64) * 0.3 if with_rgb else None
    logs = [torch.tensor(math.log(v), dtype=torch.float64) for v in (0.05, 0.1, 3.0)]
    return depth, rgb, logs


@pytest.mark.parametrize("with_rgb", [True, False])
def test_window_mean_values_and_gradients_match_autograd(with_rgb):
    depth, rgb, logs = _inputs(with_rgb)
    grad = torch.randn(2, 5, 1, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = [depth.clone().requires_grad_(True), *(v.clone().requires_grad_(True) for v in logs)]
    ref = [depth.clone().requires_grad_(True), *(v.clone().requires_grad_(True) for v in logs)]
    a = window_mean(ours[0], rgb, *ours[1:])
    b = _reference(ref[0], rgb, *ref[1:])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    (a * grad).sum().backward()
    (b * grad).sum().backward()
    for x, y in zip(ours, ref, strict=True):
        expected = torch.zeros_like(x) if y.grad is None else y.grad  # without colour, σ_c weighs nothing
        torch.testing.assert_close(x.grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("with_rgb", [True, False])
def test_window_mean_without_autograd_equals_the_training_path_bit_for_bit(with_rgb):
    """Inference runs every frame through reused buffers, training keeps fresh per-frame tensors (and reuses
    the symmetric colour pairs): the same numbers either way, and the formula's."""
    depth, rgb, logs = _inputs(with_rgb, seed=1)
    depth, rgb, logs = depth.float(), None if rgb is None else rgb.float(), [v.float() for v in logs]
    with torch.no_grad():
        buffered = window_mean(depth, rgb, *logs)
    kept = window_mean(depth.clone().requires_grad_(True), rgb, *logs).detach()
    assert torch.equal(buffered, kept)
    torch.testing.assert_close(buffered, _reference(depth, rgb, *logs))


def test_window_mean_of_a_constant_window_is_the_constant():
    depth = torch.full((1, 4, 1, 2, 2), 2.5)
    with torch.no_grad():
        out = window_mean(depth, torch.rand(1, 4, 3, 2, 2), *(torch.tensor(0.0) for _ in range(3)))
    torch.testing.assert_close(out, depth)


def test_blend_is_the_identity_at_zero_gain_and_keeps_invalid_pixels():
    depth, rgb, _ = _inputs(True)
    blend = TemporalBlend().double()
    out = blend(depth, rgb, torch.randn_like(depth))
    torch.testing.assert_close(out, depth, rtol=0, atol=0)
    with torch.no_grad():
        blend.gain.fill_(0.05)
    out = blend(depth, rgb, torch.zeros_like(depth))
    assert out[0, 2, 0, 1, 1] == 0 and not torch.equal(out, depth)

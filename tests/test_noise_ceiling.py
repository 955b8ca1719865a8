"""The inference noise ceiling: identity where the teacher is calm, a round trip, do-no-harm, metric scale."""

import math

import torch

from refiner.inference.noise_ceiling import below_ceiling, compress, compression, under_ceiling
from refiner.model.refiner import temporal_noise


def _noisy(sigma: float, n: int = 8, seed: int = 0) -> torch.Tensor:
    """[n, 1, 4, 4] depth around 2 m with log-normal noise of std ``sigma`` per frame."""
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.exp(sigma * torch.randn(n, 1, 4, 4, generator=g))


def test_hand_values_of_one_pixel():
    # log depths 0, 0.2, 0, 0.2: mean 0.1; changes ±0.2 → temporal noise sqrt(0.04 / 2) = 0.1414
    depth = torch.exp(torch.tensor([0.0, 0.2, 0.0, 0.2])).reshape(4, 1, 1, 1)
    mean, k = compression(depth, 0.05)
    assert math.isclose(float(mean), 0.1, rel_tol=1e-5)
    assert math.isclose(float(k), 0.05 / math.sqrt(0.02), rel_tol=1e-4)
    squeezed = compress(depth, mean, k)
    torch.testing.assert_close(temporal_noise(squeezed[None])[0], torch.full((1, 1, 1, 1), 0.05), rtol=1e-4, atol=0)


def test_calm_pixels_are_untouched_and_the_window_mean_is_a_fixed_point():
    calm, wild = _noisy(0.01), _noisy(0.3, seed=1)
    _, k_calm = compression(calm, 0.05)
    assert torch.equal(k_calm, torch.ones_like(k_calm))
    mean, k = compression(wild, 0.05)
    assert (k < 0.5).all()
    # a model that returns the per-pixel geometric mean on the compressed teacher gives it on the real one too
    (delta,) = under_ceiling(lambda d: ((torch.exp(mean) - d)[:, 0],), wild, 0.05)
    torch.testing.assert_close(wild[:, 0] + delta, torch.exp(mean).expand_as(wild)[:, 0], rtol=1e-4, atol=1e-5)


def test_a_zero_residual_gives_the_teacher_and_invalid_pixels_get_none():
    depth = _noisy(0.3)
    depth[2, 0, 1, 1] = 0  # one invalid pixel in one frame
    (delta,) = under_ceiling(lambda d: (torch.zeros_like(d[:, 0]),), depth, 0.05)
    assert torch.equal(delta, torch.zeros_like(delta))  # bit-exact teacher
    (delta,) = under_ceiling(lambda d: (0.1 * d[:, 0],), depth, 0.05)
    assert delta[2, 1, 1] == 0 and torch.isfinite(delta).all()


def test_it_smooths_a_noisy_teacher_in_proportion_and_keeps_metric_scale():
    depth = _noisy(0.3)

    def to_the_mean(d: torch.Tensor) -> tuple[torch.Tensor]:
        """A model that removes half of each pixel's deviation from its window mean (in depth)."""
        return (0.5 * (d.mean(0, keepdim=True) - d)[:, 0],)

    (delta,) = under_ceiling(to_the_mean, depth, 0.05)
    refined = depth[:, 0] + delta
    assert temporal_noise(refined[None, :, None])[0].mean() < 0.7 * temporal_noise(depth[None])[0].mean()
    (delta_k,) = under_ceiling(to_the_mean, depth * 3.0, 0.05)
    torch.testing.assert_close(depth[:, 0] * 3.0 + delta_k, refined * 3.0, rtol=1e-4, atol=1e-5)


def test_a_steady_correction_is_not_amplified():
    depth = _noisy(0.3)
    _, k = compression(depth, 0.05)
    assert k.max() < 0.5  # a temporal correction would be scaled back by more than 2x here
    (delta,) = under_ceiling(lambda d: (0.01 * d[:, 0],), depth, 0.05)
    torch.testing.assert_close(delta, 0.01 * depth[:, 0], rtol=1e-4, atol=1e-6)


def test_a_ceiling_of_zero_is_off():
    depth = _noisy(0.3)
    seen = []
    under_ceiling(lambda d: (seen.append(d) or torch.zeros_like(d[:, 0]),), depth, 0.0)
    assert seen[0] is depth


def test_a_batch_is_compressed_window_by_window():
    calm, wild = _noisy(0.01), _noisy(0.3, seed=1)
    out = below_ceiling(torch.stack([calm, wild]), 0.05)
    assert torch.equal(out[0], calm)  # the calm window does not borrow the wild one's factor
    assert temporal_noise(out[1:]).max() <= 0.05 * (1 + 1e-4) < temporal_noise(wild[None]).min()

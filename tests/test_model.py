"""The refiner: shapes, do-no-harm at init, clamp bounds, metric scale, invalid pixels, gradients."""

import pytest
import torch

from refiner.core.config import ModelParams
from refiner.geometry.lowres_sampling import downsample, downsample_depth
from refiner.model.refiner import Refiner, TemporalMixer, clamp_residual, residual_bound, temporal_noise

SMALL = ModelParams.from_file(channels=8, ssm_hidden=8, d_state=4)


def _inputs(b=2, n=5, size=16, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    shape = (b, n, 1, size, width or size)
    depth = torch.rand(*shape, generator=g) * 4 + 0.5
    conf = torch.rand(*shape, generator=g)
    rgb = torch.rand(b, n, 3, size, width or size, generator=g)
    return depth, conf, rgb


def _randomise(model, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def test_shapes_and_exact_teacher_at_init():
    d, c, rgb = _inputs()
    out = Refiner(SMALL, 4)(d, c, rgb)
    assert out.depth.shape == d.shape and out.delta_full.shape == d.shape
    assert out.delta_low.shape == downsample(d, 4).shape
    assert torch.equal(out.depth, d)  # do-no-harm at step 0: bit-exact teacher
    assert out.stats(d)["mean_abs_delta_m"] == 0.0 and all(float(v) == 0.0 for v in out.clamp_hit_rate.values())


@pytest.mark.parametrize("n", [1, 2, 12])
def test_any_window_length(n):
    d, c, _ = _inputs(b=1, n=n)
    out = _randomise(Refiner(SMALL, 4))(d, c)
    assert out.depth.shape == (1, n, 1, 16, 16) and torch.isfinite(out.depth).all()


def test_non_square_frames():
    d, c, rgb = _inputs(b=1, n=4, size=16, width=28)
    out = _randomise(Refiner(SMALL.replace(guided_upsampling=True, midres_branch=True), 4))(d, c, rgb)
    assert out.depth.shape == d.shape and torch.isfinite(out.depth).all()
    with pytest.raises(ValueError, match="multiple of the low-res factor"):
        Refiner(SMALL, 4)(d[..., :15, :], c[..., :15, :])


def _bound(d, c, p):
    """The clamp's bound with its noise term: κ · the window's temporal noise (these random frames are very noisy)."""
    noise = p.clamp_noise * temporal_noise(d)
    return residual_bound(d, c, p.clamp_alpha, p.clamp_beta, p.clamp_gamma, noise)


@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"highres_refine": True, "depth_aware_mixing": True, "use_rgb_edges": True, "guided_upsampling": True},
        {"midres_branch": True},
        {"midres_branch": True, "guided_upsampling": True},
    ],
)
def test_clamp_bounds_hold_with_random_weights(hard, flags):
    p = SMALL.replace(use_conf_grad=True, **flags)
    d, c, rgb = _inputs()
    out = _randomise(Refiner(p, 4), scale=3.0)(d, c, rgb, hard_clamp=hard)
    bound_full = _bound(d, c, p)
    bound_low = _bound(downsample_depth(d, 4), downsample(c, 4), p)
    assert (out.delta_full.abs() <= bound_full * (1 + 1e-5)).all()
    assert (out.delta_low.abs() <= bound_low * (1 + 1e-5)).all()
    assert all(0 <= float(v) <= 1 for v in out.clamp_hit_rate.values())
    assert float(out.clamp_hit_rate["low"]) > 0  # the clamp had something to do with these weights


def test_residual_bound_hand_values():
    depth, conf = torch.tensor([10.0, 0.1]), torch.tensor([1.0, 0.0])
    # max(0.05·10, 0.02)·(0.5 + 0) = 0.25 ; max(0.005, 0.02)·(0.5 + 1) = 0.03
    torch.testing.assert_close(residual_bound(depth, conf, 0.05, 0.02, 0.5), torch.tensor([0.25, 0.03]))
    raw = torch.tensor([1.0, -0.01])
    torch.testing.assert_close(clamp_residual(raw, torch.tensor([0.25, 0.03]), hard=True), torch.tensor([0.25, -0.01]))
    soft = clamp_residual(raw, torch.tensor([0.25, 0.03]), hard=False)
    assert soft[0] < 0.25 and soft[0] > 0.24 and -0.01 < soft[1] < -0.0095


def test_soft_clamp_gradient_is_not_zero_at_the_bound():
    bound = torch.tensor([0.2, 0.2, 0.2])
    raw = torch.tensor([0.2, 0.4, -0.3], requires_grad=True)  # at and beyond the bound
    clamp_residual(raw, bound, hard=False).sum().backward()
    # d/dr B·tanh(r/B) = 1 − tanh²(r/B): 0.42 at r = B, 0.07 at r = 2B
    torch.testing.assert_close(raw.grad, 1 - torch.tanh(raw.detach() / bound) ** 2)
    assert (raw.grad > 0.05).all()


def test_metric_scale_is_preserved():
    d, c, _ = _inputs()
    k = 3.7
    torch.testing.assert_close(Refiner(SMALL, 4)(d * k, c).depth, d * k)
    # with trained-like weights and no absolute floor in the clamp, the output scales with the teacher exactly
    # (κ = 0 here: with these i.i.d. random frames the noise term lets ΔD cancel D, where float32 rounding shows;
    # the noise level itself is scale-free, checked below)
    model = _randomise(Refiner(SMALL.replace(clamp_beta=0.0, clamp_noise=0.0), 4))
    out, out_k = model(d, c), model(d * k, c)
    assert not torch.equal(out.depth, d)
    torch.testing.assert_close(out_k.depth, out.depth * k, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(temporal_noise(d * k), temporal_noise(d), rtol=1e-4, atol=1e-6)


def test_invalid_teacher_pixels_get_no_residual():
    d, c, _ = _inputs()
    d[:, :, :, :4, :] = 0  # an invalid band (e.g. padding)
    out = _randomise(Refiner(SMALL, 4))(d, c)
    assert (out.depth[:, :, :, :4] == 0).all() and torch.isfinite(out.depth).all()


def test_gradients_reach_every_parameter():
    p = SMALL.replace(highres_refine=True, depth_aware_mixing=True, midres_branch=True)
    model = _randomise(Refiner(p, 4), scale=0.1)
    d, c, rgb = _inputs()
    model(d, c, rgb, state=None).depth.square().mean().backward()
    missing = [n for n, q in model.named_parameters() if q.grad is None or not q.grad.abs().sum() > 0]
    assert missing == []


def test_bidirectional_core_sees_the_future_unidirectional_does_not():
    x = torch.randn(3, 6, SMALL.ssm_hidden)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(3, 2, SMALL.ssm_hidden)  # change the last frames only
    for bidirectional in (False, True):
        torch.manual_seed(0)
        core = TemporalMixer(SMALL.replace(bidirectional=bidirectional))
        past_changed = not torch.allclose(core(x)[0][:, :4], core(x2)[0][:, :4])
        assert past_changed == bidirectional


def test_carried_state_makes_a_window_depend_on_the_previous_one():
    model = _randomise(Refiner(SMALL.replace(carry_state=True), 4), scale=0.3)
    d, c, _ = _inputs(b=1, n=12)
    d2 = d.clone()
    d2[:, :3] *= 1.2  # change only frames before the next window's start (6)
    state = model(d, c, state_index=5).state
    state2 = model(d2, c, state_index=5).state
    nxt, nxt2 = model(d[:, 6:], c[:, 6:], state=state).depth, model(d[:, 6:], c[:, 6:], state=state2).depth
    assert not torch.allclose(nxt, nxt2)  # window k sees window k − 1 through the carried state
    alone = model(d[:, 6:], c[:, 6:]).depth
    assert not torch.allclose(nxt, alone)


@pytest.mark.parametrize("flags", [{}, {"depth_aware_mixing": True, "use_rgb_edges": True}])
def test_carried_state_alone_equals_the_full_forwards_state(flags):
    model = _randomise(Refiner(SMALL.replace(carry_state=True, **flags), 4), scale=0.3)
    d, c, rgb = _inputs(b=2, n=8)
    keys = torch.tensor([[True, False] * 4] * 2)
    with torch.no_grad():
        full = model(d, c, rgb, keys, state_index=3).state
        alone = model.carried_state(d, c, rgb, keys, state_index=3)
    for a, b in zip(alone, full, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bf16_autocast_runs_and_returns_float32():
    d, c, _ = _inputs()
    model = _randomise(Refiner(SMALL, 4), scale=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(d, c)
    assert out.depth.dtype == torch.float32 and torch.isfinite(out.depth).all()


def test_midres_branch_is_exact_at_init_and_scale_equivariant():
    p = SMALL.replace(midres_branch=True, clamp_beta=0.0)
    d, c, _ = _inputs()
    assert torch.equal(Refiner(p, 4)(d, c).depth, d)
    model = _randomise(Refiner(p, 4))
    out, out_k = model(d, c), model(d * 2.5, c)
    assert not torch.equal(out.depth, d)
    torch.testing.assert_close(out_k.depth, out.depth * 2.5, rtol=1e-4, atol=1e-5)

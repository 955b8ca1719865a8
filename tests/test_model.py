"""The refiner: shapes, do-no-harm at init, clamp bounds, metric scale, invalid pixels, gradients."""

import dataclasses

import pytest
import torch

from refiner.config import ModelParams
from refiner.lowres import downsample, low_mapping
from refiner.model import Refiner
from refiner.model.refiner import TemporalMixer, clamp_residual, residual_bound

SMALL = ModelParams(channels=8, ssm_hidden=8, d_state=4)
MAPPING = torch.as_tensor(low_mapping(4))


def _inputs(b=2, n=5, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(b, n, 1, size, size, generator=g) * 4 + 0.5
    conf = torch.rand(b, n, 1, size, size, generator=g)
    rgb = torch.rand(b, n, 3, size, size, generator=g)
    return downsample(depth, 4), downsample(conf, 4), depth, conf, rgb


def _randomise(model, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def test_shapes_and_exact_teacher_at_init():
    d_low, c_low, d, c, rgb = _inputs()
    out = Refiner(SMALL)(d_low, c_low, d, c, MAPPING, rgb_full=rgb)
    assert out.depth.shape == d.shape and out.delta_full.shape == d.shape
    assert out.delta_low.shape == d_low.shape == out.delta_raw_low.shape
    assert torch.equal(out.depth, d)  # do-no-harm at step 0: bit-exact teacher
    assert out.stats()["mean_abs_delta_m"] == 0.0 and float(out.clamp_hit_rate) == 0.0


@pytest.mark.parametrize("n", [1, 2, 12])
def test_any_window_length(n):
    d_low, c_low, d, c, rgb = _inputs(b=1, n=n)
    out = _randomise(Refiner(SMALL))(d_low, c_low, d, c, MAPPING)
    assert out.depth.shape == (1, n, 1, 16, 16) and torch.isfinite(out.depth).all()


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
    p = dataclasses.replace(SMALL, use_conf_grad=True, **flags)
    d_low, c_low, d, c, rgb = _inputs()
    out = _randomise(Refiner(p), scale=3.0)(d_low, c_low, d, c, MAPPING, rgb_full=rgb, hard_clamp=hard)
    bound_full = residual_bound(d, c, p.clamp_alpha, p.clamp_beta, p.clamp_gamma)
    bound_low = residual_bound(d_low, c_low, p.clamp_alpha, p.clamp_beta, p.clamp_gamma)
    assert (out.delta_full.abs() <= bound_full * (1 + 1e-5)).all()
    assert (out.delta_low.abs() <= bound_low * (1 + 1e-5)).all()
    assert out.delta_raw_low.abs().max() > bound_low.max()  # the clamp actually had something to do
    assert 0 < float(out.clamp_hit_rate) <= 1


def test_residual_bound_hand_values():
    depth, conf = torch.tensor([10.0, 0.1]), torch.tensor([1.0, 0.0])
    # max(0.05·10, 0.02)·(0.5 + 0) = 0.25 ; max(0.005, 0.02)·(0.5 + 1) = 0.03
    torch.testing.assert_close(residual_bound(depth, conf, 0.05, 0.02, 0.5), torch.tensor([0.25, 0.03]))
    raw = torch.tensor([1.0, -0.01])
    torch.testing.assert_close(clamp_residual(raw, torch.tensor([0.25, 0.03]), hard=True), torch.tensor([0.25, -0.01]))
    soft = clamp_residual(raw, torch.tensor([0.25, 0.03]), hard=False)
    assert soft[0] < 0.25 and soft[0] > 0.24 and -0.01 < soft[1] < -0.0095


def test_metric_scale_is_preserved():
    d_low, c_low, d, c, _ = _inputs()
    k = 3.7
    at_init = Refiner(SMALL)
    torch.testing.assert_close(at_init(d_low * k, c_low, d * k, c, MAPPING).depth, d * k)
    # with trained-like weights and no absolute floor in the clamp, the output scales with the teacher exactly
    model = _randomise(Refiner(dataclasses.replace(SMALL, clamp_beta=0.0)))
    out, out_k = model(d_low, c_low, d, c, MAPPING), model(d_low * k, c_low, d * k, c, MAPPING)
    assert not torch.equal(out.depth, d)
    torch.testing.assert_close(out_k.depth, out.depth * k, rtol=1e-4, atol=1e-5)


def test_invalid_teacher_pixels_get_no_residual():
    d_low, c_low, d, c, _ = _inputs()
    d[:, :, :, :4, :] = 0  # an invalid band (e.g. padding)
    out = _randomise(Refiner(SMALL))(downsample(d, 4), c_low, d, c, MAPPING)
    assert (out.depth[:, :, :, :4] == 0).all() and torch.isfinite(out.depth).all()


def test_gradients_reach_every_parameter():
    p = dataclasses.replace(SMALL, highres_refine=True, depth_aware_mixing=True, midres_branch=True)
    model = _randomise(Refiner(p), scale=0.1)
    d_low, c_low, d, c, rgb = _inputs()
    model(d_low, c_low, d, c, MAPPING, rgb_full=rgb).depth.square().mean().backward()
    missing = [n for n, q in model.named_parameters() if q.grad is None or not q.grad.abs().sum() > 0]
    assert missing == []


def test_bidirectional_core_sees_the_future_unidirectional_does_not():
    x = torch.randn(3, 6, SMALL.ssm_hidden)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(3, 2, SMALL.ssm_hidden)  # change the last frames only
    for bidirectional in (False, True):
        torch.manual_seed(0)
        core = TemporalMixer(dataclasses.replace(SMALL, bidirectional=bidirectional))
        past_changed = not torch.allclose(core(x)[:, :4], core(x2)[:, :4])
        assert past_changed == bidirectional


def test_bf16_autocast_runs_and_returns_float32():
    d_low, c_low, d, c, _ = _inputs()
    model = _randomise(Refiner(SMALL), scale=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(d_low, c_low, d, c, MAPPING)
    assert out.depth.dtype == torch.float32 and torch.isfinite(out.depth).all()


def test_midres_branch_is_exact_at_init_and_scale_equivariant():
    p = dataclasses.replace(SMALL, midres_branch=True, clamp_beta=0.0)
    d_low, c_low, d, c, _ = _inputs()
    assert torch.equal(Refiner(p)(d_low, c_low, d, c, MAPPING).depth, d)
    model = _randomise(Refiner(p))
    out, out_k = model(d_low, c_low, d, c, MAPPING), model(d_low * 2.5, c_low, d * 2.5, c, MAPPING)
    assert not torch.equal(out.depth, d)
    torch.testing.assert_close(out_k.depth, out.depth * 2.5, rtol=1e-4, atol=1e-5)

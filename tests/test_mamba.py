"""The pure-PyTorch Mamba: its scan against a step-by-step recurrence, and against mamba_ssm where it runs."""

import math

import pytest
import torch
import torch.nn.functional as F

from refiner.model.mamba import Mamba, make_mamba, mamba_ssm_usable, selective_scan_ref


def _recurrence(x, delta, A, B, C, D):
    """h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_t, y_t = C_t·h_t + D x_t, one scalar at a time."""
    b, d, L = x.shape
    n = A.shape[1]
    y = torch.zeros(b, d, L, dtype=torch.float64)
    for i in range(b):
        for c in range(d):
            h = [0.0] * n
            for t in range(L):
                dt, xt = float(delta[i, c, t]), float(x[i, c, t])
                h = [math.exp(dt * float(A[c, k])) * h[k] + dt * float(B[i, k, t]) * xt for k in range(n)]
                y[i, c, t] = sum(float(C[i, k, t]) * h[k] for k in range(n)) + float(D[c]) * xt
    return y


def test_scan_matches_the_recurrence():
    g = torch.Generator().manual_seed(0)
    b, d, n, L = 2, 3, 4, 5
    x = torch.randn(b, d, L, generator=g)
    delta = F.softplus(torch.randn(b, d, L, generator=g))
    A = -torch.rand(d, n, generator=g) * 2
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    D = torch.randn(d, generator=g)
    torch.testing.assert_close(selective_scan_ref(x, delta, A, B, C, D).double(), _recurrence(x, delta, A, B, C, D))


def test_scan_hand_case_single_state():
    # A = −ln 2, Δ = 1: the state halves each step; B = C = 1, D = 0, x = 1 → h = 1, 1.5, 1.75
    x = torch.ones(1, 1, 3)
    y = selective_scan_ref(x, torch.ones(1, 1, 3), torch.tensor([[-math.log(2)]]), x[:, :1], x[:, :1], torch.zeros(1))
    torch.testing.assert_close(y, torch.tensor([[[1.0, 1.5, 1.75]]]))


def test_mamba_block_names_shapes_and_causality():
    m = Mamba(d_model=16, d_state=4, d_conv=3, expand=2)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "A_log": (32, 4),
        "D": (32,),
        "in_proj.weight": (64, 16),
        "conv1d.weight": (32, 1, 3),
        "conv1d.bias": (32,),
        "x_proj.weight": (1 + 8, 32),
        "dt_proj.weight": (32, 1),
        "dt_proj.bias": (32,),
        "out_proj.weight": (16, 32),
    }
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    x = torch.randn(2, 7, 16)
    y = m(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 4:] += 1.0  # changing the future leaves the past unchanged
    torch.testing.assert_close(m(x2)[:, :4], y[:, :4])
    assert not torch.allclose(m(x2)[:, 4:], y[:, 4:])


def test_scan_stays_float32_under_bf16_autocast():
    m = Mamba(d_model=8, d_state=4)
    x = torch.randn(3, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        inner = selective_scan_ref(
            torch.randn(1, 2, 3).bfloat16(),
            torch.rand(1, 2, 3),
            -torch.rand(2, 2),
            *torch.randn(2, 1, 2, 3),
            torch.ones(2),
        )
    assert inner.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_make_mamba_falls_back_to_the_pure_version():
    m = make_mamba(8, 4, 4, 2, use_mamba_ssm="never")
    assert isinstance(m, Mamba)


@pytest.mark.skipif(not mamba_ssm_usable()[0], reason=f"mamba_ssm not usable here: {mamba_ssm_usable()[1]}")
def test_pure_mamba_matches_mamba_ssm_with_the_same_weights():
    from mamba_ssm import Mamba as CudaMamba

    torch.manual_seed(0)
    ours = Mamba(d_model=32, d_state=8, d_conv=4, expand=2).cuda()
    theirs = CudaMamba(d_model=32, d_state=8, d_conv=4, expand=2).cuda()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 12, 32, device="cuda")
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-3, atol=1e-4)

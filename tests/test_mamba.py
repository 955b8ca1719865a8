"""The pure-PyTorch Mamba: its scans against a step-by-step recurrence and each other, carried state, and
mamba_ssm where it runs."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import refiner.model.ops.scan as scan_mod
from refiner.model.mamba import Mamba, MambaState, make_mamba, mamba_ssm_usable
from refiner.model.ops.scan import selective_scan, selective_scan_ref


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
    expected = _recurrence(x, delta, A, B, C, D)
    torch.testing.assert_close(selective_scan_ref(x, delta, A, B, C, D).double(), expected)
    torch.testing.assert_close(selective_scan(x, delta, A, B, C, D, block=1).double(), expected)


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


def _scan_inputs(b: int, d: int, n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, length, generator=g)
    delta = F.softplus(torch.randn(b, d, length, generator=g) - 1)
    A = -torch.rand(d, n, generator=g) * 4
    B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    return x, delta, A, B, C, torch.randn(d, generator=g)


@pytest.mark.parametrize(
    ("b", "d", "n", "length", "block"),
    [(1, 1, 1, 1, None), (5, 3, 4, 1, 2), (7, 6, 8, 12, 3), (10, 64, 8, 12, None), (9, 5, 2, 7, 1), (4, 3, 3, 5, 100)],
)
def test_fast_scan_matches_the_reference(b, d, n, length, block):
    args = _scan_inputs(b, d, n, length)
    torch.testing.assert_close(selective_scan(*args, block=block), selective_scan_ref(*args), rtol=1e-5, atol=1e-5)


def test_fast_scan_reads_time_major_views_and_stays_float32():
    x, delta, A, B, C, D = _scan_inputs(6, 4, 3, 9)
    views = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (x, delta, B, C)]  # as Mamba passes them
    y = selective_scan(views[0].bfloat16(), views[1], A, views[2], views[3], D, block=4)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, selective_scan_ref(x.bfloat16(), delta, A, B, C, D), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [None, 2, 3])
def test_fast_scan_carries_state_across_a_split(block):
    x, delta, A, B, C, D = _scan_inputs(5, 4, 3, 10)
    full = selective_scan(x, delta, A, B, C, D, block=block)
    for k in (1, 4, 9):
        head, h = selective_scan(
            x[..., :k], delta[..., :k], A, B[..., :k], C[..., :k], D, state_index=k - 1, block=block
        )
        assert h.shape == (5, 4, 3)
        tail = selective_scan(x[..., k:], delta[..., k:], A, B[..., k:], C[..., k:], D, h0=h, block=block)
        torch.testing.assert_close(torch.cat([head, tail], -1), full, rtol=1e-6, atol=1e-6)


def test_fast_scan_state_matches_the_recurrence_and_checks_its_index():
    x, delta, A, B, C, D = _scan_inputs(2, 3, 2, 4)
    _, h = selective_scan(x, delta, A, B, C, D, state_index=1)
    # one state step by hand: h_1 = exp(Δ_1 A) (Δ_0 B_0 x_0) + Δ_1 B_1 x_1
    step = [(delta[..., t] * x[..., t])[..., None] * B[:, None, :, t] for t in (0, 1)]
    torch.testing.assert_close(h, torch.exp(delta[..., 1, None] * A) * step[0] + step[1])
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="state_index"):
            selective_scan(x, delta, A, B, C, D, state_index=bad)


@pytest.mark.parametrize("scan", [selective_scan, selective_scan_ref])
def test_both_scans_share_one_signature_with_state_in_and_out(scan):
    x, delta, A, B, C, D = _scan_inputs(3, 4, 3, 8)
    full = selective_scan_ref(x, delta, A, B, C, D)
    head, h = scan(x[..., :5], delta[..., :5], A, B[..., :5], C[..., :5], D, None, 4)
    tail = scan(x[..., 5:], delta[..., 5:], A, B[..., 5:], C[..., 5:], D, h, None)
    torch.testing.assert_close(torch.cat([head, tail], -1), full, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="state_index"):
        scan(x, delta, A, B, C, D, None, 8)


@pytest.mark.parametrize("keep_bytes", [0, 1 << 30])  # states recomputed in backward / kept from forward
def test_fast_scan_gradients_match_the_reference(monkeypatch, keep_bytes):
    monkeypatch.setattr(scan_mod, "KEEP_STATES_BYTES", keep_bytes)
    args = _scan_inputs(5, 3, 4, 6)
    ours = [t.clone().requires_grad_(True) for t in args]
    ref = [t.clone().requires_grad_(True) for t in args]
    g = torch.randn(5, 3, 6, generator=torch.Generator().manual_seed(1))
    (selective_scan(*ours, block=2) * g).sum().backward()
    (selective_scan_ref(*ref) * g).sum().backward()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keep_bytes", [0, 1 << 30])
def test_fast_scan_gradients_flow_through_the_carried_state(monkeypatch, keep_bytes):
    monkeypatch.setattr(scan_mod, "KEEP_STATES_BYTES", keep_bytes)
    args = _scan_inputs(4, 3, 2, 8)
    g = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(2))
    one = [t.clone().requires_grad_(True) for t in args]
    (selective_scan(*one) * g).sum().backward()
    two = [t.clone().requires_grad_(True) for t in args]
    x, delta, A, B, C, D = two
    head, h = selective_scan(x[..., :3], delta[..., :3], A, B[..., :3], C[..., :3], D, state_index=2)
    tail = selective_scan(x[..., 3:], delta[..., 3:], A, B[..., 3:], C[..., 3:], D, h0=h)
    (torch.cat([head, tail], -1) * g).sum().backward()
    for a, b in zip(one, two, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_scan_compile_is_opt_in_and_falls_back_to_eager(monkeypatch):
    monkeypatch.delenv(scan_mod.COMPILE_ENV, raising=False)
    assert scan_mod._Compiled.get() is None  # off unless asked for

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setenv(scan_mod.COMPILE_ENV, "1")
    monkeypatch.setattr(scan_mod._Compiled, "fn", None)
    monkeypatch.setattr(scan_mod._Compiled, "failed", False)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    args = _scan_inputs(3, 2, 2, 4)
    with pytest.warns(UserWarning, match="torch.compile"):
        y = selective_scan(*args)
    torch.testing.assert_close(y, selective_scan_ref(*args), rtol=1e-5, atol=1e-5)
    assert scan_mod._Compiled.get() is None  # disabled for the rest of the process


@pytest.mark.slow
def test_compiled_scan_equals_eager_values_state_and_gradients(monkeypatch):
    """REFINER_SCAN_COMPILE=1 really compiles the block (about 20 s on 2 cores) and gives the eager scan's
    outputs, state and gradients; skipped only where torch.compile cannot run (the fallback test covers that)."""
    monkeypatch.setenv(scan_mod.COMPILE_ENV, "1")
    monkeypatch.setattr(scan_mod._Compiled, "fn", None)
    monkeypatch.setattr(scan_mod._Compiled, "failed", False)
    eager = [t.requires_grad_() for t in _scan_inputs(6, 4, 3, 5, seed=3)]
    compiled = [t.detach().clone().requires_grad_() for t in eager]
    with pytest.MonkeyPatch.context() as off:
        off.setenv(scan_mod.COMPILE_ENV, "0")
        y_e, h_e = selective_scan(*eager, state_index=2, block=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y_c, h_c = selective_scan(*compiled, state_index=2, block=4)
    if scan_mod._Compiled.get() is None:
        pytest.skip(f"torch.compile cannot run here: {[str(w.message) for w in caught]}")
    torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_c, h_e, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y_e)
    (y_e * g).sum().backward()
    (y_c * g).sum().backward()
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


@pytest.fixture(params=["whole", "sliced"])
def batch_slices(request, monkeypatch) -> str:
    """Mamba.forward on the whole batch at once, or in slices of 5 sequences scanned one sequence per block."""
    if request.param == "sliced":
        monkeypatch.setattr(Mamba, "_batch_step", lambda self, hidden_states: 5)
        monkeypatch.setattr(scan_mod, "BLOCK_BYTES_CPU", 1)
    return request.param


def _old_forward(m: Mamba, hidden_states: torch.Tensor) -> torch.Tensor:
    """The block's forward before carried state: nn.Conv1d and the reference scan."""
    x, z = m.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)
    x = F.silu(m.conv1d(x)[..., : hidden_states.shape[1]])
    dt, B, C = m.x_proj(x.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(F.linear(dt, m.dt_proj.weight) + m.dt_proj.bias).transpose(1, 2)
    y = selective_scan_ref(x, delta, -torch.exp(m.A_log), B.transpose(1, 2), C.transpose(1, 2), m.D)
    return m.out_proj((y * F.silu(z)).transpose(1, 2))


@pytest.mark.parametrize(("d_conv", "length"), [(4, 12), (3, 1), (1, 5), (4, 2)])
def test_mamba_without_state_is_the_old_block(d_conv, length, batch_slices):
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=d_conv, expand=2)
    with torch.no_grad():
        m.conv1d.bias.normal_()
    x = torch.randn(9, length, 16)
    torch.testing.assert_close(m(x), _old_forward(m, x), rtol=1e-5, atol=1e-6)


def _chunked(m: Mamba, x: torch.Tensor, cut: int) -> torch.Tensor:
    head, state = m(x[:, :cut], state_index=cut - 1)
    assert isinstance(state, MambaState)
    assert state.h.shape == (x.shape[0], m.d_inner, m.d_state)
    assert state.conv.shape == (x.shape[0], m.d_inner, m.d_conv - 1)
    tail, _ = m(x[:, cut:], state=state)
    return torch.cat([head, tail], 1)


@pytest.mark.parametrize("d_conv", [4, 2, 1])
def test_mamba_chunks_with_carried_state_equal_one_pass(d_conv, batch_slices):
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=d_conv, expand=2)
    x = torch.randn(13, 18, 16)
    with torch.no_grad():
        full = m(x)
        for cut in (1, 2, 3, 5, 12, 17):
            torch.testing.assert_close(_chunked(m, x, cut), full, rtol=1e-6, atol=1e-6)
    # and with autograd on (the training path)
    torch.testing.assert_close(_chunked(m, x.requires_grad_(True), 7), full, rtol=1e-6, atol=1e-6)


def test_mamba_overlapping_windows_continue_the_sequence(batch_slices):
    # windows of 12 frames with stride 6: window 2 starts at frame 6 from the state after frame 5 of window 1
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=4, expand=1)
    x = torch.randn(11, 24, 16)
    with torch.no_grad():
        full = m(x)
        _, state = m(x[:, 0:12], state_index=5)
        second, state = m(x[:, 6:18], state=state, state_index=5)
        third, _ = m(x[:, 12:24], state=state, state_index=11)
    torch.testing.assert_close(second, full[:, 6:18], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(third, full[:, 12:24], rtol=1e-6, atol=1e-6)


def test_mamba_state_starting_from_zeros_and_bad_index():
    m = Mamba(d_model=8, d_state=4, d_conv=4, expand=1)
    x = torch.randn(3, 6, 8)
    with torch.no_grad():
        out, state = m(x, state_index=5)
        torch.testing.assert_close(out, m(x))
        zeros = MambaState(torch.zeros(3, 8, 4), torch.zeros(3, 8, 3))
        out2, state2 = m(x, state=zeros)  # state_index defaults to the last step
        torch.testing.assert_close(out2, out)
        torch.testing.assert_close(state2.h, state.h)
        torch.testing.assert_close(state2.conv, m.in_proj(x)[:, 3:, :8].mT)
        with pytest.raises(ValueError, match="state_index"):
            m(x, state_index=6)


def test_mamba_tags_a_log_and_d_for_no_weight_decay():
    m = Mamba(d_model=8, d_state=4)
    tagged = {name for name, p in m.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert tagged == {"A_log", "D"}


def test_make_mamba_uses_our_block_when_state_is_carried():
    assert isinstance(make_mamba(8, 4, 4, 2, use_mamba_ssm="auto", needs_state=True), Mamba)


def test_mamba_under_bf16_autocast_is_close_to_float32():
    torch.manual_seed(0)
    m = Mamba(d_model=32, d_state=8, d_conv=4, expand=1)
    x = torch.randn(20, 12, 32)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
            y_state, state = m(x, state_index=5)
    assert state.h.dtype == torch.float32
    for out in (y, y_state):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))


def test_mamba_in_place_outputs_and_time_reversal_equal_the_plain_block(batch_slices):
    """Without autograd the slices write into one output instead of being concatenated, and ``time_reversed``
    flips each slice instead of the whole batch: both give the plain computation's numbers bit for bit."""
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=4, expand=1)
    x = torch.randn(13, 12, 16)
    concatenated = m(x).detach()  # with autograd: the slices' outputs are concatenated
    flipped = m(x.flip(1)).flip(1).detach()
    with torch.no_grad():
        assert torch.equal(m(x), concatenated)
        assert torch.equal(m(x, time_reversed=True), flipped)
    assert torch.equal(m(x, time_reversed=True).detach(), flipped)
    with pytest.raises(ValueError, match="carries no state"):
        m(x, state_index=3, time_reversed=True)


def test_mamba_time_reversal_gives_the_flipped_blocks_gradients_bit_for_bit(batch_slices):
    """Training's results do not move: every weight gradient sums its steps in the flipped block's order."""
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=4, expand=1)
    x, grad = torch.randn(13, 12, 16), torch.randn(13, 12, 16)
    grads = []
    for run in (lambda: m(x.flip(1)).flip(1), lambda: m(x, time_reversed=True)):
        m.zero_grad()
        run().backward(grad)
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])

"""Selective scans (Gu & Dao, 2023): a reference and a fast one with one signature, as ``mamba_ssm.ops``
holds the ops apart from the module (:mod:`refiner.model.mamba`).

Selective state-space recurrence per channel d and state n, for t = 1..L:

    h_t = exp(Δ_t · A) ⊙ h_{t−1} + Δ_t · B_t · x_t,        y_t = ⟨C_t, h_t⟩ + D · x_t.

Both scans take ``(x, delta, A, B, C, D, h0=None, state_index=None)`` and run in float32, also under autocast.
:func:`selective_scan_ref` is the step-by-step reference. :func:`selective_scan` is the fast scan: it works on the
batch in blocks small enough to stay in cache, with time-major [b, L, n, d] tiles (d innermost, so every op is a
long contiguous loop), exp(ΔA) and ΔB·x built per block in one op each, and ⟨C, h⟩ as a batched matmul, written into
reused buffers (``time_major=True`` takes the tensors in that layout, as the module computes them). Under autograd
it is :class:`_ScanFn`, whose hand-written backward runs the adjoint recurrence backwards in time instead of
autograd's graph of per-step ops. Both can start from a state h0 and return the state after step ``state_index``.

``REFINER_SCAN_COMPILE=1`` runs each scan block through ``torch.compile``. It is opt-in: on 2 CPU cores
it made the block about 10% faster after 5–7 s of compilation per new shape (with or without autograd);
on a GPU without mamba_ssm it fuses the per-step kernels. Any compile failure warns once and falls back
to eager for the rest of the process.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import NamedTuple

import torch
from torch import Tensor

BLOCK_BYTES_CPU = 3 << 20  # one [block, L, n, d] float32 scan tile: about the size of a core's L2 cache
COMPILE_ENV = "REFINER_SCAN_COMPILE"


def selective_scan_ref(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    h0: torch.Tensor | None = None,
    state_index: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference scan in float32, one time step after another: :func:`selective_scan`'s signature, shapes and
    results (y, or (y, the state after step ``state_index``))."""
    if state_index is not None and not 0 <= state_index < x.shape[-1]:
        raise ValueError(f"state_index must be in [0, {x.shape[-1]}), got {state_index}")
    with torch.autocast(x.device.type, enabled=False):
        x, delta, A, B, C, D = (t.float() for t in (x, delta, A, B, C, D))
        h = x.new_zeros(x.shape[0], x.shape[1], A.shape[1]) if h0 is None else h0.float()  # [b, d, n]
        ys, kept = [], None
        for t, (x_t, dt_t, B_t, C_t) in enumerate(
            zip(x.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1), strict=True)
        ):
            h = torch.exp(dt_t.unsqueeze(-1) * A) * h + (dt_t * x_t).unsqueeze(-1) * B_t.unsqueeze(1)
            ys.append((h * C_t.unsqueeze(1)).sum(-1))
            kept = h if t == state_index else kept
        y = torch.stack(ys, dim=-1) + D[None, :, None] * x
        return y if state_index is None else (y, kept)


class _Inputs(NamedTuple):
    """The fast scan's tensors, time-major and float32: x, delta [b, L, d]; At = Aᵀ [n, d]; B, C [b, L, n]; D [d];
    h0 [b, n, d] or None."""

    x: Tensor
    delta: Tensor
    At: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    h0: Tensor | None

    def rows(self, sl: slice, contiguous: bool = False) -> _Inputs:
        """The sequences ``sl`` of the batch (copied contiguous when asked)."""

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else (t[sl].contiguous() if contiguous else t[sl])

        return _Inputs(cut(self.x), cut(self.delta), self.At, cut(self.B), cut(self.C), self.D, cut(self.h0))


def _scan_block(
    x: Tensor, delta: Tensor, At: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None, state_index: int | None
) -> tuple[Tensor, Tensor | None]:
    """Autograd-friendly scan of one block: x, delta [bb, L, d]; At [n, d]; B, C [bb, L, n]; h0 [bb, n, d]
    → (y [bb, L, d], h [bb, n, d] after step ``state_index`` or None)."""
    dA = torch.exp(delta.unsqueeze(2) * At)  # [bb, L, n, d]
    dBx = (delta * x).unsqueeze(2) * B.unsqueeze(3)
    h, hs = h0, []
    for dA_t, dBx_t in zip(dA.unbind(1), dBx.unbind(1), strict=True):  # unbind: one stack in backward
        h = dBx_t if h is None else torch.addcmul(dBx_t, dA_t, h)
        hs.append(h)
    y = torch.matmul(C.unsqueeze(2), torch.stack(hs, 1)).squeeze(2)
    return torch.addcmul(y, x, D), (None if state_index is None else hs[state_index])


def _block_states(
    x: Tensor, delta: Tensor, At: Tensor, B: Tensor, h0: Tensor | None, buf_a: Tensor, buf_h: Tensor
) -> tuple[Tensor, Tensor]:
    """(exp(ΔA), states h) of one block x, delta [bb, L, d], B [bb, L, n], written into buf_a / buf_h
    [bb, L, n, d]: h_t = exp(Δ_t·A) ⊙ h_{t−1} + Δ_t·x_t·B_t from h0 (None: zeros)."""
    dA = torch.mul(delta.unsqueeze(2), At, out=buf_a).exp_()
    hs = torch.mul(torch.mul(delta, x).unsqueeze(2), B.unsqueeze(3), out=buf_h)
    hs_t, dA_t = hs.unbind(1), dA.unbind(1)  # views, made once
    if h0 is not None:
        hs_t[0].addcmul_(dA_t[0], h0)
    for t in range(1, x.shape[1]):
        hs_t[t].addcmul_(dA_t[t], hs_t[t - 1])
    return dA, hs


def _scan_block_into(
    inp: _Inputs, state_index: int | None, y: Tensor, h_out: Tensor | None, buf_a: Tensor, buf_h: Tensor
) -> None:
    """The same as :func:`_scan_block` without autograd, written into y / h_out through reused buffers."""
    bb, length = inp.x.shape[:2]
    _, hs = _block_states(inp.x, inp.delta, inp.At, inp.B, inp.h0, buf_a[:bb], buf_h[:bb])
    n, d = hs.shape[2:]
    torch.bmm(inp.C.reshape(bb * length, 1, n), hs.view(bb * length, n, d), out=y.view(bb * length, 1, d))
    y.addcmul_(inp.x, inp.D)
    if h_out is not None:
        h_out.copy_(hs[:, state_index])


class _Compiled:
    """``torch.compile`` of :func:`_scan_block`, opt-in by ``REFINER_SCAN_COMPILE=1``; eager on any failure."""

    fn = None
    failed = False

    @classmethod
    def get(cls) -> object | None:
        if cls.failed or os.environ.get(COMPILE_ENV, "0") in ("", "0"):
            return None
        if cls.fn is None:
            try:
                cls.fn = torch.compile(_scan_block, dynamic=None)
            except Exception as e:  # no compiler, unsupported platform, ...
                cls.disable(e)
        return cls.fn

    @classmethod
    def disable(cls, e: Exception) -> None:
        cls.fn, cls.failed = None, True
        warnings.warn(f"torch.compile of the selective scan failed, using eager ({e})", stacklevel=3)


def _block_size(b: int, length: int, n: int, d: int, device: torch.device, block: int | None) -> int:
    """Sequences per scan block: ``block``, else about ``BLOCK_BYTES_CPU`` per tile on CPU, all on GPU."""
    if block is not None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        return min(block, b)
    if device.type != "cpu":
        return b  # GPU memory bandwidth: one block, the fewest kernel launches
    return max(1, min(b, BLOCK_BYTES_CPU // (4 * length * n * d)))


def _run_block(args: tuple, state_index: int | None) -> tuple[Tensor, Tensor | None]:
    """One block through the compiled scan when it is on and works, else eager."""
    fn = _Compiled.get()
    if fn is not None:
        try:
            return fn(*args, state_index)
        except Exception as e:
            _Compiled.disable(e)
    return _scan_block(*args, state_index)


def _scan_time_major(
    inputs: tuple[Tensor, ...], h0: Tensor | None, state_index: int | None, block: int | None
) -> tuple[Tensor, Tensor | None]:
    """The fast scan on time-major ``inputs`` (x, delta [b, L, d]; A [d, n]; B, C [b, L, n]; D [d]) from h0
    [b, n, d] → (y [b, L, d] float32, h [b, n, d] after step ``state_index`` or None).

    With autograd, the gradients come from :class:`_ScanFn`'s hand-written backward (or from autograd through
    the compiled block when ``REFINER_SCAN_COMPILE`` is on)."""
    with torch.autocast(inputs[0].device.type, enabled=False):
        x, delta, A, B, C, D = (t.float() for t in inputs)
        h0 = None if h0 is None else h0.float()
        b, length, d = x.shape
        if state_index is not None and not 0 <= state_index < length:
            raise ValueError(f"state_index must be in [0, {length}), got {state_index}")
        At = A.t().contiguous()  # [n, d]
        blk = _block_size(b, length, At.shape[0], d, x.device, block)
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, delta, A, B, C, D, h0))
        if _Compiled.get() is not None:
            return _scan_functional(_Inputs(x, delta, At, B, C, D, h0), state_index, blk)
        if grad:
            y, h = _ScanFn.apply(x, delta, At, B, C, D, h0, state_index, blk)
            return y, (None if state_index is None else h)
        return _scan_nograd(_Inputs(x, delta, At, B, C, D, h0), state_index, blk)


def _scan_nograd(
    inp: _Inputs, state_index: int | None, blk: int, keep: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor | None]:
    """The blocked scan without autograd, through buffers reused from block to block, or written into ``keep``
    (exp(ΔA) and the states h, each [b, L, n, d]) for a backward pass to reuse."""
    x, At = inp.x, inp.At
    b, length, d = x.shape
    y = x.new_empty(b, length, d)
    h_out = None if state_index is None else x.new_empty(b, *At.shape)
    if keep is None:
        buf_a, buf_h = x.new_empty(min(blk, b), length, *At.shape), x.new_empty(min(blk, b), length, *At.shape)
    for s in range(0, b, blk):
        sl = slice(s, s + blk)
        if keep is not None:
            buf_a, buf_h = keep[0][sl], keep[1][sl]
        h_part = None if h_out is None else h_out[sl]
        _scan_block_into(inp.rows(sl), state_index, y[sl], h_part, buf_a, buf_h)
    return y, h_out


def _scan_block_grads(
    inp: _Inputs, states: tuple[Tensor, Tensor], gy: Tensor, g_state: tuple[Tensor, int] | None
) -> tuple[Tensor, ...]:
    """Gradients of one block (shapes as :func:`_scan_block`; ``states`` from :func:`_block_states`):
    (gx, gdelta, gAt, gB, gC, gD, gh0 or None).

    With a_t = exp(Δ_t·A) and λ_t = ∂L/∂h_t = C_t·gy_t + a_{t+1} ⊙ λ_{t+1} (plus the carried state's gradient
    at its step): ∂L/∂(Δ_t·A) = λ_t ⊙ h_{t−1} ⊙ a_t, ∂L/∂(Δ_t·x_t·B_t) = λ_t, ∂L/∂C_t = Σ_d gy_t·h_t."""
    x, delta, At, B, C, D, h0 = inp
    bb, length, d = x.shape
    n = At.shape[0]
    dA, hs = states
    lam = C.unsqueeze(3) * gy.unsqueeze(2)  # [bb, L, n, d]
    if g_state is not None:
        lam[:, g_state[1]] += g_state[0]
    lams, dAs = lam.unbind(1), dA.unbind(1)  # views, made once
    for t in range(length - 2, -1, -1):
        lams[t].addcmul_(dAs[t + 1], lams[t + 1])
    flat = (bb * length, n, d)
    dx = delta * x
    gC = torch.linalg.vecdot(hs, gy.unsqueeze(2))  # Σ_d over the contiguous axis: 3x a batched matrix-vector bmm
    gB = torch.linalg.vecdot(lam, dx.unsqueeze(2))
    lam_B = torch.bmm(B.reshape(bb * length, 1, n), lam.view(flat)).view(bb, length, d)  # Σ_n B·λ
    gh0 = None if h0 is None else lam[:, 0] * dA[:, 0]
    g_exp = lam.mul_(dA)  # ∂L/∂(Δ·A) = λ ⊙ a ⊙ h_{t−1}, in λ's buffer
    g_exp[:, 1:].mul_(hs[:, :-1])
    if h0 is None:
        g_exp[:, 0].zero_()
    else:
        g_exp[:, 0].mul_(h0)
    gdelta = (g_exp * At).sum(2).addcmul_(lam_B, x)
    gAt = (g_exp * delta.unsqueeze(2)).sum((0, 1))
    gx = torch.addcmul(gy * D, lam_B, delta)
    gD = (gy * x).sum((0, 1))
    return gx, gdelta, gAt, gB, gC, gD, gh0


KEEP_STATES_BYTES = 256 << 20  # the forward pass keeps exp(ΔA) and h for backward up to this size, else recomputes


class _ScanFn(torch.autograd.Function):
    """The blocked scan with a hand-written backward instead of autograd's graph of per-step ops. The forward
    keeps exp(ΔA) and the states for the backward when they fit ``KEEP_STATES_BYTES``; otherwise the backward
    recomputes them block by block (memory O(block))."""

    @staticmethod
    def forward(ctx, x, delta, At, B, C, D, h0, state_index, blk):  # noqa: ANN001, ANN205
        size = (x.shape[0], x.shape[1], *At.shape)
        keep = None
        if 2 * math.prod(size) * 4 <= KEEP_STATES_BYTES:
            keep = (x.new_empty(size), x.new_empty(size))
        y, h = _scan_nograd(_Inputs(x, delta, At, B, C, D, h0), state_index, blk, keep)
        ctx.save_for_backward(x, delta, At, B, C, D, h0, *(keep or ()))
        ctx.state_index, ctx.blk = state_index, blk
        return y, (x.new_zeros(0) if h is None else h)

    @staticmethod
    def backward(ctx, gy, g_state):  # noqa: ANN001, ANN205
        saved = ctx.saved_tensors
        inp, keep = _Inputs(*saved[:7]), saved[7:]
        use_state = ctx.state_index is not None and g_state is not None and g_state.numel() > 0
        parts = []
        for s in range(0, inp.x.shape[0], ctx.blk):
            sl = slice(s, s + ctx.blk)
            part = inp.rows(sl, contiguous=True)
            if keep:
                states = keep[0][sl], keep[1][sl]
            else:  # recomputed as the forward pass computed them
                size = (*part.x.shape[:2], *inp.At.shape)
                empty = (part.x.new_empty(size), part.x.new_empty(size))
                states = _block_states(part.x, part.delta, inp.At, part.B, part.h0, *empty)
            gs = (g_state[sl], ctx.state_index) if use_state else None
            parts.append(_scan_block_grads(part, states, gy[sl].contiguous(), gs))
        gx, gdelta, gAt, gB, gC, gD, gh0 = (
            None if p[0] is None else (torch.cat(p) if i not in (2, 5) else sum(p))
            for i, p in enumerate(zip(*parts, strict=True))
        )
        return gx, gdelta, gAt, gB, gC, gD, gh0, None, None


def _scan_functional(inp: _Inputs, state_index: int | None, blk: int) -> tuple[Tensor, Tensor | None]:
    """Blocked scan with functional ops (autograd, torch.compile), results concatenated."""
    ys, hs = [], []
    for s in range(0, inp.x.shape[0], blk):
        sl = slice(s, s + blk)
        y, h = _run_block(tuple(inp.rows(sl)), state_index)
        ys.append(y)
        hs.append(h)
    if len(ys) == 1:
        return ys[0], hs[0]
    return torch.cat(ys), (None if state_index is None else torch.cat(hs))


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    h0: torch.Tensor | None = None,
    state_index: int | None = None,
    *,
    block: int | None = None,
    time_major: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fast scan, the same maths as :func:`selective_scan_ref`, in float32.

    x, delta [b, d, L]; A [d, n]; B, C [b, n, L]; D [d]; h0 [b, d, n] initial state (None: zeros).
    Returns y [b, d, L], or (y, h [b, d, n] after step ``state_index`` ∈ [0, L)) when ``state_index`` is given.
    ``block``: sequences per cache block (None: sized to the cache on CPU, the whole batch on GPU).
    ``time_major``: the tensors are laid out as :class:`refiner.model.mamba.Mamba` computes them instead: x, delta
    [b, L, d]; B, C [b, L, n]; h0 and h [b, n, d]; y [b, L, d]. Inputs that are transposed views of time-major
    tensors are read without copies.
    """
    if time_major:
        y, h = _scan_time_major((x, delta, A, B, C, D), h0, state_index, block)
        return y if state_index is None else (y, h)
    inputs = (x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D)
    y, h = _scan_time_major(inputs, None if h0 is None else h0.transpose(1, 2), state_index, block)
    y = y.transpose(1, 2)
    return y if state_index is None else (y, h.transpose(1, 2))

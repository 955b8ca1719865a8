"""A pure-PyTorch Mamba block with the same parameter names and shapes as ``mamba_ssm.Mamba``, and
:func:`make_mamba`, which picks the CUDA kernels when they can run.

The block: in_proj → (x, z); x → causal depthwise conv1d → SiLU → scan (:mod:`refiner.model.ops.scan`);
y · SiLU(z) → out_proj, with Δ_t = softplus(dt_proj(x_proj(x_t)_dt) + bias), B_t, C_t = x_proj(x_t)_{B,C},
A = −exp(A_log). The scan's state h0 and the state after step ``state_index``, with the conv1d's input history
(:class:`MambaState`), carry context from window to window at constant memory. On CPU, :class:`Mamba` also runs
the whole block on slices of the batch, so its activations stay in cache too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from refiner.model.ops.scan import selective_scan

CHUNK_BYTES_CPU = 3 << 19  # one [slice, L, d_inner] float32 activation of Mamba.forward's batch slices


class MambaState(NamedTuple):
    """Carried state of a :class:`Mamba` block between consecutive chunks of one sequence."""

    h: torch.Tensor  # [b, d_inner, d_state] float32 SSM state after the chunk's state_index
    conv: torch.Tensor  # [b, d_inner, d_conv − 1] the conv1d's inputs just before the next chunk's start


class Mamba(nn.Module):
    """Mamba block on [batch, length, d_model]; parameter names follow ``mamba_ssm.Mamba``."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # Δ starts log-uniform in [dt_min, dt_max]: the bias is softplus⁻¹ of it
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp_min(dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation: A = −(1, 2, ..., d_state) for every channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_log._no_weight_decay = True  # as mamba_ssm tags them: the trainer leaves them out of weight decay
        self.D._no_weight_decay = True

    def forward(
        self,
        hidden_states: torch.Tensor,
        state: MambaState | None = None,
        state_index: int | None = None,
        time_reversed: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, MambaState]:
        """[b, L, d_model] → same shape.

        With ``state`` (from the previous chunk; None: zeros) or ``state_index``, the chunk continues a
        longer sequence and (output, state after step ``state_index``, default L − 1) is returned: the
        next chunk, starting at step ``state_index`` + 1 of this one, continues exactly from there.
        ``time_reversed``: the block over reversed time, ``self(x.flip(1)).flip(1)`` without flipping
        the whole batch (each slice is flipped in cache); it carries no state.
        """
        b, length = hidden_states.shape[:2]
        if state_index is not None and not 0 <= state_index < length:
            raise ValueError(f"state_index must be in [0, {length}), got {state_index}")
        carry = state is not None or state_index is not None
        if carry and time_reversed:
            raise ValueError("a time-reversed Mamba block carries no state (it is the backward direction)")
        index = None if not carry else (length - 1 if state_index is None else state_index)
        step = self._batch_step(hidden_states)
        out = self._output_buffer(hidden_states, step)
        parts = []
        for s in range(0, b, step):  # on CPU: slices of the batch that keep every intermediate in cache
            part = None if state is None else MambaState(state.h[s : s + step], state.conv[s : s + step])
            into = None if out is None else out[s : s + step]
            parts.append(self._forward(hidden_states[s : s + step], part, index, time_reversed, into))
        if out is None:
            out = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        if not carry:
            return out
        if len(parts) == 1:
            return out, parts[0][1]
        return out, MambaState(*(torch.cat(t) for t in zip(*(p[1] for p in parts), strict=True)))

    def _batch_step(self, hidden_states: torch.Tensor) -> int:
        """Sequences per slice: all of them on GPU, about ``CHUNK_BYTES_CPU`` per [slice, L, d_inner] on CPU."""
        b, length = hidden_states.shape[:2]
        if hidden_states.device.type != "cpu":
            return max(b, 1)
        return max(1, min(b, CHUNK_BYTES_CPU // (4 * length * self.d_inner)))

    def _output_buffer(self, hidden_states: torch.Tensor, step: int) -> torch.Tensor | None:
        """Where the slices write their outputs when several run without autograd or autocast (else None: the
        slices' outputs are concatenated), so the whole output is not copied once more."""
        device = hidden_states.device.type
        if step >= hidden_states.shape[0] or torch.is_grad_enabled() or torch.is_autocast_enabled(device):
            return None
        return hidden_states.new_empty(*hidden_states.shape[:2], self.d_model)

    def _forward(
        self,
        hidden_states: torch.Tensor,
        state: MambaState | None,
        index: int | None,
        time_reversed: bool = False,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MambaState | None]:
        """The block on one slice of the batch (written into ``out`` when given); the state after step
        ``index`` when it is not None."""
        if time_reversed:
            hidden_states = hidden_states.flip(1)
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # [b, L, d_inner] each, time-major
        history = None
        if index is not None:  # the conv's inputs before this chunk (zeros at the start of the sequence)
            history = x.new_zeros(x.shape[0], self.d_conv - 1, x.shape[2]) if state is None else state.conv.mT
        x_conv = F.silu(self._causal_conv(x, history))
        dt, B, C = self.x_proj(x_conv).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())
        A = -torch.exp(self.A_log.float())
        h0 = None if state is None else state.h.mT
        out_scan = selective_scan(x_conv, delta, A, B, C, self.D, h0, index, time_major=True)
        y, h = out_scan if index is not None else (out_scan, None)
        y = (y * F.silu(z.float())).to(hidden_states.dtype)
        if out is None:  # (flipped after out_proj: its weight gradient sums the steps in the same order as before)
            out = self.out_proj(y)
            out = out.flip(1) if time_reversed else out
        else:  # out_proj has no bias and acts per step: the same product on flipped steps, written in place
            torch.matmul(y.flip(1) if time_reversed else y, self.out_proj.weight.mT, out=out)
        if index is None:
            return out, None
        keep = self.d_conv - 1  # the conv's inputs at steps index − keep + 1 .. index, from history where < 0
        recent = torch.cat([history.to(x.dtype), x[:, max(0, index + 1 - keep) : index + 1]], 1)
        return out, MambaState(h.mT, recent[:, recent.shape[1] - keep :].mT.contiguous())

    def _causal_conv(self, x: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """Depthwise causal conv1d (the ``conv1d`` weights) over time on x [b, L, d] after ``history``
        [b, d_conv − 1, d] (None: zeros), in float32 → [b, L, d]."""
        k, length = self.d_conv, x.shape[1]
        w = self.conv1d.weight[:, 0].float()  # [d, k]; tap k − 1 multiplies the current step
        x = x.float()
        padded = x if history is None else torch.cat([history.float(), x], 1)
        pad = 0 if history is None else k - 1
        out = torch.addcmul(self.conv1d.bias.float(), x, w[:, k - 1])
        for tap in range(k - 1):
            lag = k - 1 - tap  # this tap reads step t − lag
            first = max(0, lag - pad)  # the earliest output step with that input inside ``padded``
            if first < length:
                out[:, first:].addcmul_(padded[:, pad + first - lag : pad + length - lag], w[:, tap])
        return out


def mamba_ssm_usable() -> tuple[bool, str]:
    """Whether ``mamba_ssm.Mamba`` can run here, and why not."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        import mamba_ssm  # noqa: F401
    except Exception as e:  # ImportError, or a CUDA extension that fails to load
        return False, f"mamba_ssm does not import ({e})"
    return True, "ok"


def make_mamba(
    d_model: int, d_state: int, d_conv: int, expand: int, use_mamba_ssm: str = "auto", needs_state: bool = False
) -> nn.Module:
    """``mamba_ssm.Mamba`` (CUDA kernels) when ``use_mamba_ssm`` is "auto", it is usable and no carried state
    is needed, else :class:`Mamba`.

    mamba_ssm's fused forward always starts from a zero state, so a block that carries state from window
    to window (``needs_state``) is always ours. Both have the same state-dict keys and shapes, so
    checkpoints move between them.
    """
    if use_mamba_ssm == "auto" and not needs_state and mamba_ssm_usable()[0]:
        from mamba_ssm import Mamba as CudaMamba

        return CudaMamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return Mamba(d_model, d_state, d_conv, expand)

"""A pure-PyTorch Mamba block with the same parameter names and shapes as ``mamba_ssm.Mamba``, a
reference selective scan, and :func:`make_mamba`, which picks the CUDA kernels when they can run.

Selective state-space recurrence per channel d and state n (Gu & Dao, 2023), for t = 1..L:

    h_t = exp(Δ_t · A) ⊙ h_{t−1} + Δ_t · B_t · x_t,        y_t = ⟨C_t, h_t⟩ + D · x_t,

with Δ_t = softplus(dt_proj(x_proj(x_t)_dt) + bias), B_t, C_t = x_proj(x_t)_{B,C}, A = −exp(A_log).
The block: in_proj → (x, z); x → causal depthwise conv1d → SiLU → scan; y · SiLU(z) → out_proj.
The scan always runs in float32, also under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def selective_scan_ref(
    x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor
) -> torch.Tensor:
    """Reference scan in float32. x, delta: [b, d, L]; A: [d, n]; B, C: [b, n, L]; D: [d] → y [b, d, L]."""
    with torch.autocast(x.device.type, enabled=False):
        x, delta, A, B, C, D = (t.float() for t in (x, delta, A, B, C, D))
        h = x.new_zeros(x.shape[0], x.shape[1], A.shape[1])  # [b, d, n]
        ys = []
        for x_t, dt_t, B_t, C_t in zip(x.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1), strict=True):
            h = torch.exp(dt_t.unsqueeze(-1) * A) * h + (dt_t * x_t).unsqueeze(-1) * B_t.unsqueeze(1)
            ys.append((h * C_t.unsqueeze(1)).sum(-1))
        return torch.stack(ys, dim=-1) + D[None, :, None] * x


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

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)  # [b, d_inner, L] each
        x = F.silu(self.conv1d(x)[..., :length])  # causal: keep the first L outputs
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float()).transpose(1, 2)
        A = -torch.exp(self.A_log.float())
        y = selective_scan_ref(x, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D)
        y = y * F.silu(z.float())
        return self.out_proj(y.transpose(1, 2).to(hidden_states.dtype))


def mamba_ssm_usable() -> tuple[bool, str]:
    """Whether ``mamba_ssm.Mamba`` can run here, and why not."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        import mamba_ssm  # noqa: F401
    except Exception as e:  # ImportError, or a CUDA extension that fails to load
        return False, f"mamba_ssm does not import ({e})"
    return True, "ok"


def make_mamba(d_model: int, d_state: int, d_conv: int, expand: int, use_mamba_ssm: str = "auto") -> nn.Module:
    """``mamba_ssm.Mamba`` (CUDA kernels) when ``use_mamba_ssm`` is "auto" and it is usable, else :class:`Mamba`.

    Both have the same state-dict keys and shapes, so checkpoints move between them.
    """
    if use_mamba_ssm == "auto" and mamba_ssm_usable()[0]:
        from mamba_ssm import Mamba as CudaMamba

        return CudaMamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return Mamba(d_model, d_state, d_conv, expand)

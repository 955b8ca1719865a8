"""Scatter-reduce of the kept points of a tensor into a flat buffer, without boolean indexing.

Indexing by a mask (``values[keep]``) costs a nonzero pass and a copy of every kept value; on the millions of
points of a z-buffer splat that was most of its time. Instead every point scatters, and the ones not kept land
in one spare slot past the end of the buffer, which is dropped.
"""

from __future__ import annotations

import torch


def scatter_kept(
    values: torch.Tensor, index: torch.Tensor, keep: torch.Tensor, size: int, reduce: str, fill: float
) -> torch.Tensor:
    """A flat buffer of ``size`` slots, ``fill`` where nothing lands, holding ``reduce`` ("amin", "amax", ...)
    of ``values`` at ``index`` over the points where ``keep`` is true (all three of one shape)."""
    buffer = torch.full((size + 1,), fill, dtype=values.dtype, device=values.device)
    target = torch.where(keep, index, size).flatten()
    return buffer.scatter_reduce_(0, target, values.flatten(), reduce=reduce)[:-1]

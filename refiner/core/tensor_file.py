"""A safetensors file read whole (the refiner's checkpoints and the learned teacher's weights): its tensors and its
metadata, or the caller's error naming the file, what it should be and how to rebuild it."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


def read_tensor_file(
    path: str | Path, what: str, fix: str, error: type[Exception]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """({name: tensor} on the CPU, metadata) of the safetensors file ``path``; raises ``error`` saying
    "<path>: <what> not found" or "<path>: unreadable <what>", each followed by ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found; {fix}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 (not a mapping)
    except (SafetensorError, OSError) as e:
        raise error(f"{path}: unreadable {what}, not a readable safetensors file ({e}); {fix}") from e

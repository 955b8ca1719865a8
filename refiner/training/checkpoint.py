"""Refiner checkpoints: weights in safetensors with the model params in its metadata, and the
resumable training state (loadable with ``torch.load(weights_only=True)``). Both written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from refiner.core.config import ConfigError, ModelParams
from refiner.core.store import atomic_path
from refiner.core.tensor_file import read_tensor_file
from refiner.model.refiner import Refiner

FORMAT = "video-depth-refiner/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or from another architecture."""


OFF_BEFORE = {"clamp_noise": 0.0, "noise_features": False}  # model params newer than some checkpoints: off there


def _architecture(model: torch.nn.Module) -> str:
    return json.dumps({k: list(v.shape) for k, v in sorted(model.state_dict().items())})


def _recorded_shapes(architecture: str | None) -> dict[str, list[int]]:
    try:
        shapes = json.loads(architecture or "{}")
    except json.JSONDecodeError:
        return {}
    return shapes if isinstance(shapes, dict) else {}


def _first_mismatch(shapes: dict[str, list[int]], model: torch.nn.Module, what: str = "the checkpoint") -> str | None:
    """The first tensor (by name) ``what`` lacks, has in excess or holds with another shape than ``model``, in words;
    None when every tensor fits."""
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    for name in sorted(set(shapes) | set(expected)):
        if name not in shapes:
            return f"{what} lacks tensor {name!r} (shape {expected[name]})"
        if name not in expected:
            return f"{what} has tensor {name!r} (shape {shapes[name]}) that the model does not"
        if list(shapes[name]) != expected[name]:
            return f"tensor {name!r} has shape {list(shapes[name])} in {what} but {expected[name]} in the model"
    return None


def save_refiner(
    path: str | Path, model: torch.nn.Module, params: ModelParams, low_res_factor: int, extra: dict
) -> None:
    """Weights + model params + the low-res factor they were trained with, as one safetensors file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "model_params": json.dumps(params.model_dump()),
        "low_res_factor": str(int(low_res_factor)),
        "architecture": _architecture(model),
        "extra": json.dumps(extra),
    }
    with atomic_path(path) as tmp:
        tmp.write_bytes(_sorted_header(save(state, metadata=meta)))


def _sorted_header(data: bytes) -> bytes:
    """The safetensors file ``data`` with its JSON header's keys sorted. The writer emits the metadata in a
    different order on every run, so the same weights would give different bytes (and DVC hashes)."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensor data stays 8-byte aligned, as the writer keeps it
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def load_refiner(path: str | Path, device: str | torch.device = "cpu") -> tuple[Refiner, dict]:
    """Rebuild the refiner from a safetensors checkpoint; returns (model in eval mode, metadata)."""
    path = Path(path)
    state, meta = read_tensor_file(path, "checkpoint", "run the train stage (dvc repro train)", CheckpointError)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a refiner checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        params = ModelParams(**{**OFF_BEFORE, **json.loads(meta["model_params"])})
        factor = int(meta["low_res_factor"])
    except (TypeError, ValueError, KeyError, ConfigError) as e:
        raise CheckpointError(f"{path}: model params do not fit this code ({e}); retrain it") from e
    model = Refiner(params, factor)
    mismatch = _first_mismatch({k: list(v.shape) for k, v in state.items()}, model)
    if mismatch is None and meta.get("architecture") != _architecture(model):
        mismatch = _first_mismatch(_recorded_shapes(meta.get("architecture")), model, "its recorded architecture")
    if mismatch is not None:
        raise CheckpointError(
            f"{path}: {mismatch}: the weights are from another architecture than the model params stored with them "
            "build; retrain with the current code (dvc repro train) or pass the checkpoint these weights came from"
        )
    model.load_state_dict(state)
    meta = {**meta, "model_params": params, "low_res_factor": factor}
    return model.to(device).eval(), meta


def save_training_state(path: Path, fingerprint: str, step: int, best: dict, model, ema, opt, scaler) -> None:
    """Everything needed to resume: run fingerprint, step, the best so far (with its weights), model/EMA/
    optimiser/scaler states."""
    state = {
        "fingerprint": fingerprint,
        "step": step,
        "best": best,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: Path, fingerprint: str, steps: int, model, ema, opt, scaler) -> tuple[int, dict] | None:
    """Restore an interrupted run saved by :func:`save_training_state`; returns (step, best).

    Returns None (and restores nothing) when the state belongs to another run (other params or data) or
    already reached ``steps``: training then starts afresh.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated by a kill mid-write cannot happen (atomic), but a foreign file can
        raise CheckpointError(f"{path}: unreadable training state ({e}); delete it to start over") from e
    if state.get("fingerprint") != fingerprint or int(state["step"]) >= steps:
        return None
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: training state is from another architecture; delete it to start over") from e
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return int(state["step"]), state["best"]

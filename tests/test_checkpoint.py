"""Checkpoints: round trip, and clear errors for missing, corrupt or foreign-architecture files."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from refiner.core.config import ModelParams
from refiner.model.refiner import Refiner
from refiner.training.checkpoint import CheckpointError, load_refiner, save_refiner

SMALL = ModelParams.from_file(channels=8, ssm_hidden=8, d_state=4)


def _saved(tmp_path):
    torch.manual_seed(0)
    model = Refiner(SMALL, 4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "model.safetensors"
    save_refiner(path, model, SMALL, 4, {"step": 7})
    return model, path


def test_round_trip_gives_the_same_outputs(tmp_path):
    model, path = _saved(tmp_path)
    loaded, meta = load_refiner(path)
    assert meta["model_params"] == SMALL and meta["low_res_factor"] == 4 and loaded.factor == 4
    d = torch.rand(1, 3, 1, 16, 16) + 1
    args = (d, torch.rand_like(d))
    torch.testing.assert_close(loaded(*args).depth, model.eval()(*args).depth)


def test_the_same_weights_give_the_same_file(tmp_path):
    """DVC hashes the checkpoint: the safetensors writer's metadata order varies from call to call, ours not."""
    model, path = _saved(tmp_path)
    copies = [tmp_path / f"copy{i}.safetensors" for i in range(8)]
    for c in copies:
        save_refiner(c, model, SMALL, 4, {"step": 7})
    assert {c.read_bytes() for c in copies} == {path.read_bytes()}
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["extra"] == json.dumps({"step": 7})
        assert all(torch.equal(f.get_tensor(k), v) for k, v in model.state_dict().items())


def test_foreign_architecture_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["model_params"] = json.dumps(SMALL.replace(channels=16).model_dump())
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_refiner(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*train"):
        load_refiner(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_refiner(bad)

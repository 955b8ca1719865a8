"""The training loop on a tiny clip: runs, logs, resumes, and runs as 2 gloo processes under torchrun."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from refiner.checkpoint import load_refiner
from refiner.config import params_from_dict
from refiner.train import lr_at, train

from .clip_fixtures import make_stores

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "windows": {"length": 6, "overlap": 3, "keyframes": [0, 2, 4]},
    "train": {"steps": 4, "eval_every": 2, "crop": 16, "holdout_frames": 6, "warmup_steps": 1, "batch_size": 2},
    "model": {"channels": 8, "ssm_hidden": 8, "d_state": 4},
}


def _raw(**train) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return raw


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("clip"), frames=14, size=32, factor=4, static_frames=6)


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.05, abs=0.01)


def test_train_logs_checkpoints_and_resumes(stores, tmp_path):
    decoded, teacher = stores
    out, reports = tmp_path / "train", tmp_path / "reports"
    metrics = train(params_from_dict(_raw()), str(decoded), str(teacher), str(out), str(reports), progress=False)
    rows = list(csv.DictReader((reports / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["loss_total"]) == float(r["loss_total"]) for r in rows)  # no NaN
    assert metrics["best_step"] in (0, 2, 4)
    assert json.loads((reports / "metrics.json").read_text())["best_step"] == metrics["best_step"]
    model, meta = load_refiner(out / "model.safetensors")
    assert meta["low_mapping"] == [4.0, 4.0, 0.0, 0.0]
    state = torch.load(out / "state" / "last.pt", weights_only=True)
    assert state["step"] == 4
    # resume: 2 more steps continue from step 4 instead of starting again
    train(params_from_dict(_raw(steps=6)), str(decoded), str(teacher), str(out), str(reports), progress=False)
    rows = list(csv.DictReader((reports / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_end_with_identical_weights(stores, tmp_path):
    decoded, teacher = stores
    shutil.copytree(decoded, tmp_path / "data/decoded/clip.zarr")
    shutil.copytree(teacher, tmp_path / "data/teacher/clip.zarr")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_raw(steps=3, eval_every=3, batch_size=1)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run(
        [*cmd, str(ROOT / "stages/train.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d+/\d+) weights ([0-9a-f]{64})", run.stdout + run.stderr))
    assert sorted(digests) == ["0/2", "1/2"], run.stdout[-3000:]
    assert len(set(digests.values())) == 1
    assert (tmp_path / "data/train/model.safetensors").is_file()


def test_changed_params_start_afresh_instead_of_resuming(stores, tmp_path):
    decoded, teacher = stores
    out, reports = tmp_path / "train", tmp_path / "reports"
    train(params_from_dict(_raw(steps=2)), str(decoded), str(teacher), str(out), str(reports), progress=False)
    train(params_from_dict(_raw(steps=3, lr=0.002)), str(decoded), str(teacher), str(out), str(reports), progress=False)
    rows = list(csv.DictReader((reports / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert float(rows[0]["lr"]) == pytest.approx(0.002)

"""The training loop on a tiny corpus: runs, logs with dvclive, resumes, never touches the test split, and runs
as 2 gloo processes under torchrun."""

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

from refiner.model.refiner import Refiner
from refiner.training.checkpoint import load_refiner
from refiner.training.train import lr_at, param_groups, train

from .clip_fixtures import make_corpus, tiny_params

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "windows": {"length": 6, "overlap": 3, "keyframes": [0, 2, 4], "inference_length": 12, "inference_overlap": 6},
    "train": {"steps": 4, "eval_every": 2, "crop": 16, "warmup_steps": 1, "batch_size": 2, "init": None},
    "model": {"channels": 8, "ssm_hidden": 8, "d_state": 4},
}


def _params(**train):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return tiny_params(**raw)


def _steps(reports: Path) -> list[int]:
    rows = csv.DictReader((reports / "plots/metrics/train/loss_total.tsv").open(), delimiter="\t")
    return [int(r["step"]) for r in rows]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), frames=14, size=32, static_frames=6)


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.05, abs=0.01)


def test_weight_decay_only_on_matrices():
    model = Refiner(_params().model, 4)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    skipped = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    assert {"A_log", "D", "bias", "weight"} <= skipped  # norms' weights are 1-D
    assert not any(names[id(p)].endswith(("A_log", ".D")) for p in decay["params"])


def test_train_logs_checkpoints_and_resumes(manifest, tmp_path):
    out, state, reports = tmp_path / "model.safetensors", tmp_path / "state", tmp_path / "reports"
    metrics = train(_params(), manifest, out, state, reports, progress=False)
    assert _steps(reports) == [0, 1, 2, 3]
    assert metrics["best_step"] in (0, 2, 4)
    assert json.loads((reports / "metrics.json").read_text())["best_step"] == metrics["best_step"]
    model, meta = load_refiner(out)
    assert meta["low_res_factor"] == 4 and json.loads(meta["extra"])["step"] == metrics["best_step"]
    assert torch.load(state / "last.pt", weights_only=True)["step"] == 4
    # resume: 2 more steps continue from step 4 instead of starting again, and the model is written again
    out.unlink()
    train(_params(steps=6), manifest, out, state, reports, progress=False)
    assert _steps(reports) == [0, 1, 2, 3, 4, 5] and out.is_file()


def test_changed_params_start_afresh_instead_of_resuming(manifest, tmp_path):
    out, state, reports = tmp_path / "m.safetensors", tmp_path / "state", tmp_path / "reports"
    train(_params(steps=2), manifest, out, state, reports, progress=False)
    train(_params(steps=3, lr=0.002), manifest, out, state, tmp_path / "reports2", progress=False)
    assert _steps(tmp_path / "reports2") == [0, 1, 2]


def test_training_never_reads_the_test_split(manifest, tmp_path):
    shutil.rmtree(Path(json.loads((manifest / "clips/te.json").read_text())["teacher"]).parent)
    train(_params(steps=2), manifest, tmp_path / "m.safetensors", tmp_path / "s", tmp_path / "r", progress=False)


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_end_with_identical_weights(tmp_path):
    manifest = make_corpus(tmp_path / "corpus", frames=14, size=32, static_frames=6)
    params = _params(steps=3, eval_every=3, batch_size=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = [str(ROOT / "stages/train.py"), str(manifest), "model.safetensors", "state", "reports"]
    run = subprocess.run([*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d+/\d+) weights ([0-9a-f]{64})", run.stdout + run.stderr))
    assert sorted(digests) == ["0/2", "1/2"], run.stdout[-3000:]
    assert len(set(digests.values())) == 1
    assert (tmp_path / "model.safetensors").is_file()


def test_fine_tuning_starts_from_the_init_weights_and_refuses_a_foreign_one(manifest, tmp_path):
    from refiner.training.checkpoint import save_refiner

    params = _params(steps=2)
    init = Refiner(params.model, 4)
    with torch.no_grad():
        init.low.decoder[-1].weight.normal_(0, 0.05)  # not the identity any more
    save_refiner(tmp_path / "init.safetensors", init, params.model, 4, {})
    out = tmp_path / "m.safetensors"
    metrics = train(
        params.merged({"train": {"init": str(tmp_path / "init.safetensors")}}),
        manifest,
        out,
        tmp_path / "s",
        tmp_path / "r",
        progress=False,
    )
    if metrics["best_step"] == 0:  # kept as it came: then it is the init model, not a fresh identity one
        torch.testing.assert_close(load_refiner(out)[0].low.decoder[-1].weight, init.low.decoder[-1].weight)
    other = params.merged({"model": {"channels": 6}, "train": {"init": str(tmp_path / "init.safetensors")}})
    with pytest.raises(ValueError, match="train.init"):
        train(other, manifest, out, tmp_path / "s2", tmp_path / "r2", progress=False)

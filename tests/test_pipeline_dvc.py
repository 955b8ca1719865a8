"""A real `dvc repro` of the corpus pipeline on a tiny config, in a temporary git repository."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from refiner.core.errors import repro_target
from refiner.data.shards import shard_of

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {
    "tr_a": {"kind": "synthetic", "seed": 1, "camera_path": "dolly"},
    "tr_b": {"kind": "synthetic", "seed": 2, "camera_path": "pan"},
    "va": {"kind": "synthetic", "seed": 3, "camera_path": "forward"},
    "te_a": {"kind": "synthetic", "seed": 4, "camera_path": "orbit"},
    "te_b": {"kind": "synthetic", "seed": 5, "camera_path": "dolly", "teacher": "learned"},  # a second teacher
}
TINY = {
    "corpus": {
        "synthetic": {"width": 40, "height": 32, "frames": 8, "static_frames": 5, "fps": 6},
        "clips": CLIPS,
        "train": ["tr_a", "tr_b"],
        "val": ["va"],
        "test": ["te_a", "te_b"],
    },
    "decode": {"size": 32},
    "prepare": {"shards": [0, 1], "local_cpus": 2},  # tr_a, va in shard 0; tr_b, te_a, te_b in shard 1
    "windows": {"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
    "train": {"steps": 2, "eval_every": 2, "crop": 16, "warmup_steps": 1, "init": None},
    "model": {"channels": 4, "ssm_hidden": 4, "d_state": 2},
    "evaluate": {"bilateral_radius": 1},
    "adapt": {"clips": ["te_b"], "steps": 2, "crop": 16},
}


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _ran(out: str) -> set[str]:
    """Stages a repro ran, without the file a per-shard stage comes from ('pipelines/prepare/dvc.yaml:prepare@0')."""
    return set(re.findall(r"Running stage '(?:[^':]+:)?([^']+)'", out))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "pipelines", tmp / "pipelines", ignore=shutil.ignore_patterns("dvc.lock"))
    shutil.copytree(ROOT / "stages", tmp / "stages")
    shutil.copytree(ROOT / "models", tmp / "models")
    shutil.copytree(ROOT / "refiner", tmp / "refiner", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((tmp / "params.yaml").read_text())
    for section, values in TINY.items():
        for key, value in values.items():
            if key == "synthetic":
                params[section][key].update(value)
            else:
                params[section][key] = value
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = str(tmp)
    _run(["git", "init", "-q"], tmp, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], tmp, env)
    _run(["git", "add", "-A"], tmp, env)  # a clone has commits (dvclive needs one)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], tmp, env)
    first = _run([sys.executable, "-m", "dvc", "repro"], tmp, env)
    return tmp, env, first.stdout


@pytest.mark.slow
def test_repro_builds_the_corpus_trains_and_reports_the_test_split(repo):
    tmp, env, out = repo
    ran = _ran(out)
    assert {"shards", "prepare@0", "prepare@1", "manifest", "train", "report"} <= ran  # 2 stages prepare 5 clips
    assert not [s for s in ran if s.split("@")[0] in ("synth", "decode", "teacher", "guidance")]
    for clip in CLIPS:
        assert (tmp / f"data/clips/{shard_of(clip, 2)}/{clip}/guidance.zarr/zarr.json").is_file()
    assert {s for s in ran if s.startswith("test@")} == {"test@0", "test@1"}  # one stage per shard, not per clip
    assert "0 test clips: 0 run" in out and "2 test clips: 2 run, 0 up to date" in out  # te_a, te_b: shard 1
    agg = json.loads((tmp / "reports/metrics.json").read_text())
    assert agg["clips"] == ["te_a", "te_b"]
    groups = agg["groups"]  # one group per teacher; the adapted refiner only where adapt.clips lists the clip
    assert groups["simulated"]["clips"] == ["te_a"] and groups["learned"]["clips"] == ["te_b"]
    assert "refiner_adapt" in groups["learned"]["methods"] and "refiner_adapt" not in groups["simulated"]["methods"]
    test = tmp / "data/test/1"
    assert (test / "te_a/adapted/NOT_ADAPTED").is_file() and (test / "te_b/adapted/refined.zarr").is_dir()
    assert {p.name for p in (test / "te_b").iterdir()} >= {"refined.zarr", "side_by_side.mp4", "stereo_sbs.mp4"}
    per = {c: json.loads((tmp / f"reports/clips/1/{c}/metrics.json").read_text()) for c in ("te_a", "te_b")}
    shard = json.loads((tmp / "reports/clips/1.json").read_text())  # the stage's metrics: each clip's figures
    assert shard["te_b"]["methods"] == per["te_b"]["methods"] and "refiner_adapt" in shard["te_b"]["methods"]
    for method, figures in agg["methods"].items():
        for key, value in figures.items():
            assert value == pytest.approx(
                (per["te_a"]["methods"][method][key] + per["te_b"]["methods"][method][key]) / 2
            )
    assert per["te_a"]["clip"]["split"] == "test"
    assert "Frames held out" not in (tmp / "reports/clips/1/te_a/evaluation.md").read_text()
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show"], tmp, env)
    assert "reports/metrics.json" in shown.stdout and "reports/train/metrics.json" in shown.stdout


def _untouched(tmp: Path, clips: list[str]) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file the prepare and test stages wrote for these clips."""
    roots = ("data/clips", "reports/teacher", "data/test", "reports/clips")
    files = [f for c in clips for root in roots for f in (tmp / root).glob(f"*/{c}/**/*")]
    return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files if f.is_file()}


@pytest.mark.slow
def test_second_repro_does_nothing_and_a_test_clip_change_reruns_that_clip_only(repo):
    tmp, env, _ = repo
    second = _run([sys.executable, "-m", "dvc", "repro"], tmp, env)
    assert "Running stage" not in second.stdout
    target = repro_target("prepare", str(shard_of("te_a", 2)))  # what error messages tell users to run
    dry = _run([sys.executable, "-m", "dvc", "repro", "--dry", "-f", "-s", target], tmp, env)
    assert _ran(dry.stdout) == {"prepare@1"}
    others = _untouched(tmp, ["tr_a", "tr_b", "va", "te_a"])
    params = yaml.safe_load((tmp / "params.yaml").read_text())
    params["corpus"]["clips"]["te_b"]["seed"] = 9
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run([sys.executable, "-m", "dvc", "repro"], tmp, env)
    ran = _ran(third.stdout)
    assert {"shards", "prepare@1", "manifest", "test@1", "report"} <= ran
    assert "train" not in ran and "prepare@0" not in ran  # te_b's shard only, and no training for a test clip
    assert "3 clips: 1 prepared, 2 up to date" in third.stdout  # inside prepare@1: te_b's work only
    assert "2 test clips: 1 run, 1 up to date" in third.stdout  # inside test@1: te_b only
    assert _untouched(tmp, ["tr_a", "tr_b", "va", "te_a"]) == others  # no other clip's file was written
    status = _run([sys.executable, "-m", "dvc", "status"], tmp, env)
    assert "up to date" in status.stdout


@pytest.mark.slow
def test_sigint_during_train_keeps_the_model_and_the_next_repro_resumes(repo):
    tmp, env, _ = repo
    model = tmp / "data/train/model.safetensors"
    before = model.read_bytes()
    params = yaml.safe_load((tmp / "params.yaml").read_text())
    params["train"].update(steps=300, eval_every=2)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state = tmp / ".cache/train/last.pt"
    state.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-s", "train"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # Ctrl-C's default action even where this test runs in the background (which inherits SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while not state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.is_file(), "training never saved its state"
    stop = time.time() + 120
    while proc.poll() is None and time.time() < stop:  # a SIGINT landing in a finaliser is ignored: send again
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    assert proc.returncode not in (None, 0), proc.stdout.read()  # interrupted
    assert model.read_bytes() == before  # the previous model is still there, untouched
    again = _run([sys.executable, "-m", "dvc", "repro", "-s", "train"], tmp, env)
    assert "resuming from" in again.stdout + again.stderr and model.is_file()
    assert model.read_bytes() != before

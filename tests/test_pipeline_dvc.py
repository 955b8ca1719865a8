"""A real `dvc repro` of the pipeline on a tiny config, in a temporary git repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synth": {"width": 40, "height": 32, "frames": 8, "static_frames": 5, "fps": 6},
    "decode": {"size": 32},
    "windows": {"length": 4, "overlap": 2, "keyframes": [0, 2]},
    "train": {"steps": 2, "eval_every": 2, "crop": 16, "holdout_frames": 4, "warmup_steps": 1},
    "model": {"channels": 4, "ssm_hidden": 4, "d_state": 2},
    "evaluate": {"bilateral_radius": 1},
    "holdout": {"frames": 5, "static_frames": 3},
}
STAGES = ("synth", "decode", "teacher", "guidance", "manifest", "train", "infer", "evaluate", "stereo", "holdout")


def _run(args, cwd, env):
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)


@pytest.mark.slow
def test_dvc_repro_then_nothing_to_do(tmp_path):
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copytree(ROOT / "refiner", tmp_path / "refiner", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = str(tmp_path)
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], tmp_path, env)
    _run([*dvc, "init", "-q"], tmp_path, env)
    first = _run([*dvc, "repro"], tmp_path, env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout
    for out in ("data/decoded/clip.zarr/zarr.json", "data/teacher/clip.zarr/zarr.json", "data/manifest.json"):
        assert (tmp_path / out).is_file()
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert set(metrics["methods"]) == {"teacher", "ema", "bilateral", "refiner"}
    assert metrics["methods"]["refiner"]["absrel"] > 0
    assert (tmp_path / "reports/stereo/stereo_sbs.mp4").stat().st_size > 0
    holdout = json.loads((tmp_path / "reports/holdout/metrics.json").read_text())
    assert holdout["clip"]["seed"] != yaml.safe_load((tmp_path / "params.yaml").read_text())["synth"]["seed"]
    assert holdout["methods"]["refiner"]["absrel"] > 0
    shown = _run([*dvc, "metrics", "show"], tmp_path, env)
    assert "reports/metrics.json" in shown.stdout and "reports/train/metrics.json" in shown.stdout
    second = _run([*dvc, "repro"], tmp_path, env)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout
    status = _run([*dvc, "status"], tmp_path, env)
    assert "up to date" in status.stdout

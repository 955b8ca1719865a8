"""Clip preparation on a real local Ray (2 CPUs): skip by digest, retry after a killed worker, atomic outputs.

Each run is the prepare stage's own script (``stages/prepare.py``) on one shard of three tiny rendered clips, in a
scratch folder holding its params.yaml and shard plan; clip ``c`` is taught by ``tests.ray_fixtures:SlowTeacher``
(the simulated teacher, watched), so a test can find the worker process running it and kill it.
"""

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

from refiner.core.config import ConfigError, load_params, params_from_dict
from refiner.data.shards import read_plan, shard_of, write_plans

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {
    "a": {"kind": "synthetic", "seed": 1, "camera_path": "dolly"},
    "b": {"kind": "synthetic", "seed": 2, "camera_path": "pan"},
    "c": {"kind": "synthetic", "seed": 3, "camera_path": "orbit", "teacher": "tests.ray_fixtures:SlowTeacher"},
}
ARGS = [
    "data/shards/0.json",
    "data/clips/0",
    "reports/teacher/0",
    "data/prepared/0.json",
    "reports/teacher/0.json",
    ".cache/prepare/0",
]
OUTPUTS = ("data/clips/0", "reports/teacher/0", "data/prepared/0.json", "reports/teacher/0.json")


def _params(clips: dict) -> dict:
    raw = load_params(ROOT / "params.yaml").model_dump(mode="json")
    names = list(clips)
    raw["corpus"].update(clips=clips, train=names[:1], val=names[1:2], test=names[2:])
    raw["corpus"]["synthetic"].update(width=40, height=32, frames=8, static_frames=5, fps=6)
    raw["decode"]["size"] = 32
    raw["train"]["crop"] = raw["adapt"]["crop"] = 16
    raw["adapt"]["clips"] = []  # the default adapts clips this corpus lacks
    raw["prepare"].update(shards=[0], local_cpus=2, max_retries=2)
    return raw


def _plan(folder: Path, clips: dict = CLIPS) -> None:
    """params.yaml and the shard plan (as the shards stage writes them) in ``folder``."""
    raw = _params(clips)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_plans(params_from_dict(raw), folder / "data/shards")


def _start(folder: Path, **env: str) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", **env}
    script = [sys.executable, str(ROOT / "stages/prepare.py"), *ARGS]
    return subprocess.Popen(script, cwd=folder, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _prepare(folder: Path, ok: bool = True, **env: str) -> tuple[str, str]:
    proc = _start(folder, **env)
    out, err = proc.communicate(timeout=600)
    assert (proc.returncode == 0) == ok, f"rc {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def _files(folder: Path) -> dict[str, bytes]:
    """Every output file of the shard by path, with its bytes."""
    out = {}
    for name in OUTPUTS:
        p = folder / name
        for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
            out[str(f.relative_to(folder))] = f.read_bytes()
    return out


def _stats(folder: Path, clip: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of one clip: equal before and after a run means the run never wrote it."""
    files = [*(folder / "data/clips/0" / clip).rglob("*"), *(folder / "reports/teacher/0" / clip).rglob("*")]
    return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files if f.is_file()}


def _last_run(folder: Path, started: float) -> dict[str, set[str]]:
    """Per clip, the steps the last run ran (from the run log: what ran where)."""
    ran: dict[str, set[str]] = {}
    for line in (folder / ".cache/prepare/0/runs.jsonl").read_text().splitlines():
        row = json.loads(line)
        if time.mktime(time.strptime(row["time"], "%Y-%m-%dT%H:%M:%S")) >= int(started):
            ran.setdefault(row["clip"], set()).update(row["steps"])
    return ran


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The shard prepared once, uninterrupted."""
    folder = tmp_path_factory.mktemp("reference")
    _plan(folder)
    out, _ = _prepare(folder)
    assert "3 clips: 3 prepared, 0 up to date" in out and "on a local Ray: 2 CPUs" in out
    return folder


@pytest.fixture
def copy(reference, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(reference, folder)
    return folder


def test_shards_are_stable_and_a_plan_changes_only_with_its_own_clips(tmp_path):
    names = [f"clip{i}" for i in range(60)]
    shards = [shard_of(n, 4) for n in names]
    assert set(shards) == {0, 1, 2, 3} and shards == [shard_of(n, 4) for n in names]  # no clip moves between runs
    clips = {n: {"kind": "synthetic", "seed": i} for i, n in enumerate(names)}
    raw = _params(clips)
    raw["prepare"]["shards"] = [0, 1, 2, 3]
    before = {i: (tmp_path / "p").joinpath(f"{i}.json") for i in range(4)}
    write_plans(params_from_dict(raw), tmp_path / "p")
    old = {i: p.read_bytes() for i, p in before.items()}
    raw["corpus"]["clips"]["clip7"]["seed"] = 99
    write_plans(params_from_dict(raw), tmp_path / "p")
    changed = [i for i, p in before.items() if p.read_bytes() != old[i]]
    assert changed == [shard_of("clip7", 4)]
    assert [c.name for c in read_plan(before[changed[0]])] == sorted(n for n in names if shard_of(n, 4) == changed[0])
    raw["prepare"]["shards"] = [0, 2]
    with pytest.raises(ConfigError, match=r"prepare\.shards = \[0, 2\] is invalid; allowed: the integers 0, 1"):
        params_from_dict(raw)


def test_a_second_run_skips_every_clip_by_digest_without_starting_ray(copy):
    before = {c: _stats(copy, c) for c in CLIPS}
    files = _files(copy)
    out, _ = _prepare(copy)
    assert "3 clips: 0 prepared, 3 up to date" in out and "Ray" not in out
    assert {c: _stats(copy, c) for c in CLIPS} == before and _files(copy) == files


def test_changing_one_clip_reruns_only_its_own_steps_and_a_removed_clip_goes(copy):
    untouched = {c: _stats(copy, c) for c in "ac"}
    clips = {**CLIPS, "b": {**CLIPS["b"], "teacher": "sim_wide"}}  # b's teacher only: its frames stay
    _plan(copy, clips)
    started = time.time()
    out, _ = _prepare(copy)
    assert "3 clips: 1 prepared, 2 up to date" in out
    assert _last_run(copy, started) == {"b": {"teacher", "guidance", "view"}}  # synth and decode skipped
    assert {c: _stats(copy, c) for c in "ac"} == untouched
    assert json.loads((copy / "reports/teacher/0.json").read_text())["b"]["teacher"] == "sim_wide"
    plan = json.loads((copy / "data/shards/0.json").read_text())
    del plan["clips"]["a"]  # as the shards stage writes it once a is out of the corpus
    (copy / "data/shards/0.json").write_text(json.dumps(plan))
    out, _ = _prepare(copy)
    assert "removed (no longer in this shard): a" in out and "2 clips: 0 prepared" in out
    assert not (copy / "data/clips/0/a").exists() and not (copy / "reports/teacher/0/a").exists()
    assert set(json.loads((copy / "data/prepared/0.json").read_text())) == {"b", "c"}


def test_a_damaged_output_is_redone_to_the_same_bytes(reference, copy):
    chunk = copy / "data/clips/0/a/guidance.zarr/G/c.3.0.0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    started = time.time()
    _prepare(copy)
    assert _last_run(copy, started) == {"a": {"guidance"}}
    assert _files(copy) == _files(reference)


def test_a_killed_worker_is_retried_and_the_outputs_match_an_uninterrupted_run(reference, tmp_path):
    folder, markers = tmp_path / "killed", tmp_path / "markers"
    folder.mkdir()
    markers.mkdir()
    _plan(folder)
    proc = _start(folder, REFINER_TEST_MARKERS=str(markers), REFINER_TEST_SLEEP="60")
    deadline = time.time() + 300
    while not list(markers.glob("c.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    [first] = list(markers.glob("c.*"))
    pid = int(first.suffix[1:])
    clip = folder / "data/clips/0/c"
    assert [p.name for p in clip.glob(".teacher.zarr.tmp*")] == [f".teacher.zarr.tmp{pid}"]  # being written
    os.kill(pid, signal.SIGKILL)  # the Ray worker process running clip c's teacher, mid-clip
    assert not (clip / "teacher.zarr").exists()  # what it half wrote was never under the store's name
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert len(list(markers.glob("c.*"))) == 2  # the clip ran again, in another worker process
    assert _files(folder) == _files(reference)  # byte for byte
    assert not [p for p in folder.rglob(".*") if re.search(r"\.(tmp|old)\d+", p.name)]  # the retry cleaned up


def test_a_failing_clip_is_one_error_and_leaves_its_previous_outputs(copy):
    (copy / "data/clips/0/c/digests/teacher.json").unlink()  # c's teacher must run again
    before, index = _files(copy), (copy / "data/prepared/0.json").read_bytes()
    out, err = _prepare(copy, ok=False, REFINER_TEST_FAIL="c")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert re.match(r"error: clip c: the slow teacher fails on clip c on purpose \(1 of 1 clips failed", lines[0])
    after = _files(copy)
    assert after == {k: v for k, v in before.items() if k != "data/clips/0/c/digests/teacher.json"}
    assert (copy / "data/prepared/0.json").read_bytes() == index  # the shard's index is written only on success
    assert not [p for p in copy.rglob(".*") if re.search(r"\.(tmp|old)\d+", p.name)]

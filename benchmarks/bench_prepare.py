"""Clip preparation on Ray (issue 31), the ``prepare`` and ``prepare_default`` groups of ``benchmarks/bench.py``.

prepare: a scratch repository of ``CLIPS`` tiny rendered clips (8 frames at 64x48; all but 4 in train) in
``SHARDS`` shards, on the local Ray the stage starts (2 CPUs here):

- overhead per clip: (wall of ``dvc repro pipelines/prepare/dvc.yaml`` − the workers' own compute / W) / clips,
  W the workers running at once (Ray's CPUs); compute is the time inside each step (``.cache/prepare/*/runs.jsonl``);
  beside it the same figure for the per-clip stages of commit ``BASE`` (one DVC stage per clip and step, W = 1,
  compute = the time inside each stage script's ``main``), on ``OLD_CLIPS`` clips (2000 stages would take hours);
- no-op ``dvc repro`` of the whole pipeline after it;
- one changed test clip: its shard's ``dvc repro``, whether any other clip's step ran, then the rest of the repro;
- a killed worker: one shard's outputs removed, ``dvc repro`` of that shard, one Ray worker process running a
  clip killed (SIGKILL) a fifth of the way through; the run must finish with the outputs byte-identical to the
  uninterrupted run's.

prepare_default: fresh preparation of ``BASE``'s default corpus (9 clips), its per-clip stages and this tree's Ray
shards built alternately (``ROUNDS`` each) in scratch repositories on this machine; the stages after preparation are
not timed (they changed for other reasons, and the corpus grew since).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from refiner.data.shards import shard_of

ROOT = Path(__file__).resolve().parents[1]
BASE = "bbb67da"  # the last commit with per-clip synth, decode, teacher and guidance stages
CLIPS, SHARDS, OLD_CLIPS, ROUNDS = 500, 4, 40, 2
PATHS = ("dolly", "pan", "forward", "orbit", "still")
TIMED = '''"""Run a stage script's main() and append the seconds it took (imports excluded) to $BENCH_TIMES."""
import importlib.util, json, os, sys, time
path = sys.argv[1]
sys.argv = sys.argv[1:]
spec = importlib.util.spec_from_file_location("stage", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
start = time.perf_counter()
module.main()
with open(os.environ["BENCH_TIMES"], "a") as f:
    f.write(json.dumps({"stage": path, "s": time.perf_counter() - start}) + "\\n")
'''


def _export(commit: str, dest: Path) -> Path:
    """The tree of ``commit`` (this repository's history) in ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def scratch_repo(tree: Path, work: Path) -> dict[str, str]:
    """A git + DVC repository in ``work`` holding the pipeline of ``tree``; returns the environment to run it."""
    work.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(tree / name, work / name)
    for name in ("stages", "refiner", "models", "pipelines"):
        shutil.copytree(tree / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "dvc.lock"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(work), "BENCH_TIMES": str(work / "times.jsonl")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], cwd=work, check=True)
    return env


def _tiny(work: Path, clips: int, shards: int = 1) -> list[str]:
    """params.yaml of ``work`` set to ``clips`` tiny rendered clips (the last two the test split); their names."""
    names = [f"c{i:04d}" for i in range(clips)]
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["corpus"]["synthetic"].update(width=64, height=48, frames=8, static_frames=4, fps=8)
    p["corpus"]["clips"] = {
        n: {"kind": "synthetic", "seed": 1000 + i, "camera_path": PATHS[i % 5]} for i, n in enumerate(names)
    }
    p["corpus"].update(train=names[:-4], val=names[-4:-2], test=names[-2:])
    p["decode"]["size"] = 48
    p["windows"].update(length=4, overlap=2, keyframes=[0, 2])
    p["train"].update(steps=2, eval_every=2, crop=16, warmup_steps=1, init=None)
    p["adapt"].update(crop=16, clips=[])  # the default adapts clips this corpus lacks
    p["model"].update(channels=4, ssm_hidden=4, d_state=2)
    p["evaluate"]["bilateral_radius"] = 1
    if "prepare" in p:
        p["prepare"].update(shards=list(range(shards)), local_cpus=2)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return names


def _dvc(work: Path, env: dict, *args: str) -> tuple[float, str]:
    """Seconds and stdout of one ``dvc`` command (which must succeed)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {work}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def _runs(work: Path, since: float = 0.0) -> list[dict]:
    """Rows of every shard's run log (what ran where, seconds per step) from ``since`` on."""
    rows = []
    for log in sorted((work / ".cache/prepare").glob("*/runs.jsonl")):
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if time.mktime(time.strptime(row["time"], "%Y-%m-%dT%H:%M:%S")) >= int(since):
                rows.append(row)
    return rows


def _old_overhead(tmp: Path) -> dict:
    """The per-clip stages of ``BASE`` on ``OLD_CLIPS`` tiny clips: wall, compute inside the scripts, overhead."""
    work = tmp / "old"
    env = scratch_repo(_export(BASE, tmp / "base"), work)
    _tiny(work, OLD_CLIPS)
    (work / "timed.py").write_text(TIMED)
    for stage in ("synth", "decode", "teacher", "guidance"):
        f = work / f"pipelines/{stage}/dvc.yaml"
        f.write_text(f.read_text().replace("python stages/", "python timed.py stages/"))
    wall, _ = _dvc(work, env, "repro", *(f"pipelines/{s}/dvc.yaml" for s in ("synth", "decode", "teacher", "guidance")))
    compute = sum(json.loads(line)["s"] for line in (work / "times.jsonl").read_text().splitlines())
    stages = 4 * OLD_CLIPS
    return {
        "old_clips": OLD_CLIPS,
        "old_stages": stages,
        "old_wall_s": wall,
        "old_compute_s": compute,
        "old_overhead_per_clip_s": (wall - compute) / OLD_CLIPS,
    }


def _fresh(work: Path, env: dict) -> dict:
    """A fresh build of the prepare stages, then of the rest; the overhead per clip and the no-op repro."""
    prep, _ = _dvc(work, env, "repro", "pipelines/prepare/dvc.yaml")
    runs = _runs(work)
    compute = sum(sum(r["steps"].values()) for r in runs)
    workers = 2  # the local Ray's CPUs (prepare.local_cpus, at most this machine's cores)
    rest, _ = _dvc(work, env, "repro")
    noop = min(_dvc(work, env, "repro")[0] for _ in range(2))
    files = sum(1 for _ in (work / "data/clips").rglob("*"))
    return {
        "clips": CLIPS,
        "shards": SHARDS,
        "files_in_data_clips": files,
        "prepare_wall_s": prep,
        "prepare_compute_s": compute,
        "workers": workers,
        "worker_processes": len({(r["node"], r["pid"]) for r in runs}),
        "overhead_per_clip_s": (prep - compute / workers) / CLIPS,
        "rest_of_fresh_repro_s": rest,
        "noop_repro_s": noop,
    }


def _one_change(work: Path, env: dict, clip: str) -> dict:
    """Change one test clip's seed: its shard's repro (and what ran in it), then the rest of the repro."""
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["corpus"]["clips"][clip]["seed"] += 7
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    since = time.time()
    prep, out = _dvc(work, env, "repro", "pipelines/prepare/dvc.yaml")
    ran = {(r["clip"], s) for r in _runs(work, since) for s in r["steps"]}
    rest, out_rest = _dvc(work, env, "repro")
    stages = re.findall(r"Running stage '(?:[^':]+:)?([^']+)'", out + out_rest)
    return {
        "changed_clip_prepare_repro_s": prep,
        "changed_clip_rest_of_repro_s": rest,
        "changed_clip_stages_run": stages,
        "changed_clip_other_clips_steps_run": sorted({c for c, _ in ran if c != clip}),
        "changed_clip_steps_run": sorted(s for c, s in ran if c == clip),
    }


def _outputs(work: Path, shard: int) -> dict[str, bytes]:
    paths = [
        f"data/clips/{shard}",
        f"reports/teacher/{shard}",
        f"data/prepared/{shard}.json",
        f"reports/teacher/{shard}.json",
    ]
    files = [f for p in paths for f in ([work / p] if (work / p).is_file() else sorted((work / p).rglob("*")))]
    return {str(f.relative_to(work)): f.read_bytes() for f in files if f.is_file()}


def _ray_worker_running_a_clip() -> int | None:
    """The pid of a Ray worker process executing a clip's steps (its title is ray::run_group while it does)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if line.split()[1:2] == ["ray::run_group"]]
    return pids[0] if pids else None


def _killed_worker(work: Path, env: dict, shard: int, clips: int) -> dict:
    """Rebuild one shard with one of its Ray workers killed mid-clip; compare with the uninterrupted outputs."""
    before = _outputs(work, shard)
    for p in (f"data/clips/{shard}", f"reports/teacher/{shard}"):
        shutil.rmtree(work / p)
    since = time.time()
    cmd = [sys.executable, "-m", "dvc", "repro", "-s", f"pipelines/prepare/dvc.yaml:prepare@{shard}"]
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    while proc.poll() is None and killed is None:
        done = len(list((work / f"data/clips/{shard}").glob("*/digests/view.json")))
        pid = _ray_worker_running_a_clip() if done >= clips // 5 else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed = {"killed_pid": pid, "killed_after_clips": done}
        time.sleep(0.05)
    out, _ = proc.communicate()
    pids = {r["pid"] for r in _runs(work, since)}
    return {
        **(killed or {"killed_pid": None}),
        "killed_run_rc": proc.returncode,
        "killed_run_worker_processes": len(pids),
        "killed_run_identical": _outputs(work, shard) == before,
        "killed_run_files_compared": len(before),
        "killed_run_tail": out.strip().splitlines()[-4:],
    }


def bench_prepare(tmp: Path) -> dict:
    """Ray clip preparation at ``CLIPS`` tiny clips, beside the per-clip stages of ``BASE`` (see the module doc)."""
    load = os.getloadavg()[0]
    work = tmp / "new"
    env = scratch_repo(ROOT, work)
    names = _tiny(work, CLIPS, SHARDS)
    out = _fresh(work, env)
    out |= _one_change(work, env, names[-1])
    shard = shard_of(names[0], SHARDS)
    out |= _killed_worker(work, env, shard, sum(shard_of(n, SHARDS) == shard for n in names))
    out |= _old_overhead(tmp)
    return {**out, "load_start": load, "load_end": os.getloadavg()[0]}


def _same_corpus(work: Path, base: Path) -> None:
    """params.yaml of ``work`` given the corpus of ``base`` (the default corpus of the old layout)."""
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["corpus"] = yaml.safe_load((base / "params.yaml").read_text())["corpus"]
    p["adapt"]["clips"] = [c for c in p["adapt"]["clips"] if c in p["corpus"]["clips"]]
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def bench_prepare_default(tmp: Path) -> dict:
    """Fresh preparation (synth → decode → teacher → guidance) of ``BASE``'s default corpus: its per-clip stages and
    this tree's Ray shards alternately, ``ROUNDS`` each, in scratch repositories on this machine."""
    base = _export(BASE, tmp / "base")
    old_targets = [f"pipelines/{s}/dvc.yaml" for s in ("synth", "decode", "teacher", "guidance")]
    times: dict[str, list[float]] = {"old": [], "new": []}
    load = os.getloadavg()[0]
    for i in range(ROUNDS):
        for which, tree in (("old", base), ("new", ROOT)):
            work = tmp / f"{which}{i}"
            env = scratch_repo(tree, work)
            if which == "new":
                _same_corpus(work, base)
            targets = old_targets if which == "old" else ["pipelines/prepare/dvc.yaml"]
            times[which].append(_dvc(work, env, "repro", *targets)[0])
            shutil.rmtree(work)
    ratios = [n / o for n, o in zip(times["new"], times["old"], strict=True)]
    return {
        "clips": len(yaml.safe_load((base / "params.yaml").read_text())["corpus"]["clips"]),
        "old_s": times["old"],
        "new_s": times["new"],
        "new_over_old": ratios,
        "load_start": load,
        "load_end": os.getloadavg()[0],
    }

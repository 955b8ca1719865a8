"""Clip preparation as steps: synth → decode → teacher → guidance, and the teacher's view, each skipped when
unchanged.

Every step of a clip leaves a record, ``<clip>/digests/<step>.json``: the digest of its inputs (the plan entry's
settings it reads, the code it runs — :func:`refiner.core.code_digest.code_digest` of its modules and, for the
teacher, the plug-in's — and the output digests of the steps it reads) and the digest of what it wrote (SHA-256
over file names and bytes). A step is skipped when its record holds the same input digest and its outputs still
hash to the recorded output digest; else it runs, writes its output atomically (temp then rename), then its
record. A step killed half-way therefore leaves either its previous output and record or none, and is redone;
a step whose inputs changed but whose upstream wrote the same bytes is skipped (early cutoff, as DVC does).

Checking outputs re-reads only files whose size, mtime or inode changed since they were last hashed (``known``:
the stat cache the prepare stage keeps in ``.cache/prepare/<shard>``), so a no-op check costs stats, not reads.
This module knows nothing of Ray: :mod:`refiner.data.prepare_ray` runs :func:`run_steps` in Ray's workers.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from refiner.core.code_digest import code_digest, plugin_digest
from refiner.core.plugins import registered
from refiner.core.store import StoreError, atomic_path, read_json, write_json
from refiner.data.shards import ClipPlan

Stats = dict[str, list]  # file path → [size, mtime_ns, inode, sha256]


@dataclass(frozen=True)
class ClipPaths:
    """Where one clip's outputs go: its folder ``<clips>/<name>`` and its teacher view ``<views>/<name>/``."""

    clip_dir: Path
    view_dir: Path

    def output(self, step: str) -> Path:
        names = {"synth": "synth", "decode": "decoded.zarr", "teacher": "teacher.zarr", "guidance": "guidance.zarr"}
        return self.view_dir / "view.png" if step == "view" else self.clip_dir / names[step]

    def record(self, step: str) -> Path:
        return self.clip_dir / "digests" / f"{step}.json"


def _synth(plan: ClipPlan, paths: ClipPaths, out: Path) -> dict:
    """Render a synthetic clip into ``out``, or record where a real clip's source lives (decode reads it there)."""
    from refiner.data.synth.clips import render_to

    spec = plan.spec
    if plan.synthetic is None:
        write_json(out / "source.json", {"kind": spec.kind, "source": spec.source, "synthetic": False})
        return {}
    render_to(out, plan.synthetic, spec.seed)
    write_json(out / "source.json", {"kind": "synthetic", "seed": spec.seed, "synthetic": True})
    return {}


def _decode(plan: ClipPlan, paths: ClipPaths, out: Path) -> dict:
    """The clip's video or data set → canonical frames, intrinsics and GT in Zarr (``refiner.data.adapters.ingest``)."""
    from refiner.data.adapters import ingest

    spec, synth = plan.spec, paths.output("synth")
    if spec.kind == "synthetic":
        source, kind = f"{synth}/clip.mp4", "video"
        options: dict[str, Any] = {"intrinsics": f"{synth}/camera.json", "gt": f"{synth}/gt.zarr"}
        options |= {"dataset_name": "synthetic", "scene_id": plan.name}
    elif spec.kind == "video":
        source, kind = spec.source, "video"
        options = {"intrinsics": spec.intrinsics, "gt": spec.gt, "scene_id": plan.name}
    else:
        source, kind, options = spec.source, spec.kind, {"intrinsics": spec.camera}
    grid = {"multiple": plan.multiple, "crop": plan.crop}
    ingest(kind, source, out, plan.size, stride=spec.stride, progress=False, **grid, **options)
    return {}


def _teacher(plan: ClipPlan, paths: ClipPaths, out: Path) -> dict:
    """The frozen teacher over every frame, in batches of its own size; returns its metrics."""
    from refiner.teachers.cache import write_teacher_store

    return write_teacher_store(paths.output("decode"), out, plan.teacher, plan.name, False, plan.teacher_choice)


def _guidance(plan: ClipPlan, paths: ClipPaths, out: Path) -> dict:
    from refiner.data.guidance import write_guidance

    write_guidance(paths.output("decode"), paths.output("teacher"), out, progress=False)
    return {}


def _view(plan: ClipPlan, paths: ClipPaths, out: Path) -> dict:
    """A PNG of the first, middle and last frame: RGB, teacher depth, uncertainty (and GT)."""
    from refiner.core.store import open_group
    from refiner.visual.viewer import view_grid

    frames = open_group(paths.output("decode"), ("rgb",), "decoded clip store")["rgb"].shape[0]
    view_grid(paths.output("decode"), paths.output("teacher"), [0, frames // 2, frames - 1], out)
    return {}


@dataclass(frozen=True)
class Step:
    """One step of a clip's preparation: the steps whose outputs it reads, the refiner modules it runs (its code
    is their import closure and the source of ``run``), what it does."""

    name: str
    after: tuple[str, ...]
    modules: tuple[str, ...]
    run: Callable[[ClipPlan, ClipPaths, Path], dict]
    settings: tuple[str, ...] = field(default=())  # the plan entry's keys it reads


STEPS = {
    s.name: s
    for s in (
        Step("synth", (), ("refiner.data.synth.clips", "refiner.core.store"), _synth, ("clip", "synthetic")),
        Step("decode", ("synth",), ("refiner.data.adapters",), _decode, ("clip", "decode")),
        Step("teacher", ("decode",), ("refiner.teachers.cache",), _teacher, ("teacher",)),
        Step("guidance", ("decode", "teacher"), ("refiner.data.guidance",), _guidance),
        Step("view", ("decode", "teacher"), ("refiner.visual.viewer", "refiner.core.store"), _view),
    )
}
ORDER = tuple(STEPS)


@cache
def step_code(step: str) -> str:
    """Digest of the code a step runs: its modules' import closure and the source of its ``run``."""
    s = STEPS[step]
    return code_digest(*s.modules) + hashlib.sha256(inspect.getsource(s.run).encode()).hexdigest()


def code_of(step: str, plan: ClipPlan) -> str:
    """Digest of the code ``step`` runs for ``plan``'s clip (:func:`step_code`, and the teacher plug-in's)."""
    if step != "teacher":
        return step_code(step)
    name = plan.teacher.name
    return step_code(step) + plugin_digest(registered().get(name, name))


def input_digest(step: str, plan: ClipPlan, upstream: dict[str, str]) -> str:
    """The digest of everything ``step`` of ``plan``'s clip reads: settings, code and upstream outputs."""
    s = STEPS[step]
    data = {
        "step": step,
        "settings": {k: plan.raw[k] for k in s.settings},
        "code": code_of(step, plan),
        "inputs": {u: upstream[u] for u in s.after},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def tree_digest(path: Path, known: Stats | None = None) -> tuple[str | None, Stats]:
    """(SHA-256 over the relative names and content hashes of every file at or under ``path``, None when there is
    none; each file's [size, mtime_ns, inode, sha256]). A file whose size, mtime and inode match ``known`` is not
    read again."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        return None, {}
    h, stats = hashlib.sha256(), {}
    for f in files:
        st = f.stat()
        old = (known or {}).get(str(f))
        same = old is not None and old[:3] == [st.st_size, st.st_mtime_ns, st.st_ino]
        sha = old[3] if same else hashlib.sha256(f.read_bytes()).hexdigest()
        stats[str(f)] = [st.st_size, st.st_mtime_ns, st.st_ino, sha]
        h.update(f.relative_to(path.parent).as_posix().encode() + b"\0" + sha.encode())
    return h.hexdigest(), stats


@dataclass
class Outcome:
    """What one step of one clip came to: its output digest, whether it ran (else it was up to date), its
    metrics (the teacher's), the stats of the files it wrote, and its own compute time."""

    step: str
    output: str
    ran: bool
    metrics: dict
    stats: Stats
    seconds: float = 0.0


def check(step: str, plan: ClipPlan, paths: ClipPaths, upstream: dict[str, str], known: Stats | None) -> Outcome | None:
    """The step's outcome when it is up to date (its record's input digest is today's and its outputs still hash
    to the recorded output digest), else None."""
    record = paths.record(step)
    if not record.is_file():
        return None
    try:
        rec = read_json(record, "step record")
    except StoreError:  # a record cut short by hand: the step runs again
        return None
    if not isinstance(rec, dict) or rec.get("input") != input_digest(step, plan, upstream):
        return None
    output, stats = tree_digest(paths.output(step), known)
    if output is None or output != rec.get("output"):
        return None
    return Outcome(step, output, False, rec.get("metrics", {}), stats)


def ensure(
    step: str, plan: ClipPlan, paths: ClipPaths, upstream: dict[str, str], known: Stats | None = None
) -> Outcome:
    """Skip ``step`` when :func:`check` passes, else run it: output atomically in place, then the record."""
    done = check(step, plan, paths, upstream, known)
    if done is not None:
        return done
    start = time.perf_counter()
    out = paths.output(step)
    with atomic_path(out) as tmp:
        metrics = STEPS[step].run(plan, paths, tmp)
    seconds = time.perf_counter() - start
    output, stats = tree_digest(out)
    if output is None:
        raise RuntimeError(f"{out}: step {step} of clip {plan.name} wrote nothing")
    record = {"step": step, "input": input_digest(step, plan, upstream), "output": output, "metrics": metrics}
    write_json(paths.record(step), record)
    return Outcome(step, output, True, metrics, stats, seconds)


def run_steps(steps: tuple[str, ...], plan: ClipPlan, paths: ClipPaths, upstream: dict[str, str]) -> list[Outcome]:
    """:func:`ensure` each of ``steps`` in order, each reading the output digests of the steps before it."""
    digests, outcomes = dict(upstream), []
    for step in steps:
        outcome = ensure(step, plan, paths, digests)
        digests[step] = outcome.output
        outcomes.append(outcome)
    return outcomes


def first_stale(plan: ClipPlan, paths: ClipPaths, known: Stats) -> tuple[str | None, list[Outcome]]:
    """(the first step of the clip that must run, None when every step is up to date; the outcomes of the steps
    before it), checked with the stat cache ``known``."""
    digests: dict[str, str] = {}
    outcomes = []
    for step in ORDER:
        done = check(step, plan, paths, digests, known)
        if done is None:
            return step, outcomes
        digests[step] = done.output
        outcomes.append(done)
    return None, outcomes

"""A shard of the test split (the test stage): each test clip of the shard through :func:`run_heldout` (infer, adapt,
evaluate, stereo), clips side by side in ``test.workers`` processes, a clip whose inputs are unchanged skipped.

Each clip leaves a record, ``<data>/.records/<clip>.json``: the digest of what it reads (its manifest entry, which
carries its stores' content digest and its calibration table; the model's bytes; the params sections its steps
read; the code: :mod:`refiner.inference.heldout`'s import closure and the teacher plug-in's) and of what it wrote (its
two folders), as clip preparation does (:mod:`refiner.data.prepare`). Both folders of a clip go in place together
(temporaries, then renames), then its record: a killed run leaves a clip's previous outputs or none, never a mix.

Each worker process runs torch with ``cores // workers`` threads: several clips at once keep the cores busier than
one clip's many small tensor operations do. Figures can differ at float rounding with the thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from refiner.core.code_digest import code_digest, plugin_digest
from refiner.core.config import Params
from refiner.core.errors import raise_failures
from refiner.core.plugins import registered
from refiner.core.store import StoreError, atomic_paths, read_json, remove_stale_folders, write_json
from refiner.data.manifest import clip_entry_path
from refiner.data.prepare import tree_digest
from refiner.inference.heldout import run_heldout

SECTIONS = ("windows", "infer", "adapt", "loss", "train", "evaluate", "stereo", "teacher")  # what the steps read


@dataclass(frozen=True)
class ShardFolders:
    """A test shard's folders: ``data/<clip>/`` (stores, videos), ``reports/<clip>/`` (reports), and the records."""

    data: Path
    reports: Path

    def outputs(self, name: str) -> tuple[Path, Path]:
        return self.data / name, self.reports / name

    def record(self, name: str) -> Path:
        return self.data / ".records" / f"{name}.json"

    def remove_stale(self, names: set[str]) -> list[str]:
        """Remove the folders and records of clips no longer in the shard's part of the test split."""
        for record in sorted((self.data / ".records").glob("*.json")):
            if record.stem not in names:
                record.unlink()
        return remove_stale_folders((self.data, self.reports), names)


def _file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def input_digest(name: str, manifest: str, model_path: str, params: Params) -> str:
    """The digest of everything test clip ``name``'s steps read: entry, model, settings and code."""
    teacher = params.teacher.resolve(params.teacher_of(name)).name  # the plug-in (a profile names one)
    lpips = params.evaluate.lpips_weights
    data = {
        "clip": name,
        "entry": _file_digest(clip_entry_path(manifest, name)),
        "model": _file_digest(model_path),
        "params": {s: getattr(params, s).model_dump(mode="json") for s in SECTIONS},
        "code": code_digest("refiner.inference.heldout") + plugin_digest(registered().get(teacher, teacher)),
        "lpips": _file_digest(lpips) if lpips and Path(lpips).is_file() else None,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def output_digest(folders: ShardFolders, name: str) -> str | None:
    """SHA-256 over both folders of clip ``name``; None when either is missing or empty."""
    parts = [tree_digest(p)[0] if p.is_dir() else None for p in folders.outputs(name)]
    return None if None in parts else hashlib.sha256("".join(parts).encode()).hexdigest()


def recorded(folders: ShardFolders, name: str, digest: str) -> dict | None:
    """Clip ``name``'s recorded figures when it is up to date (same input digest, outputs as written), else None."""
    try:
        rec = read_json(folders.record(name), "test clip record")
    except StoreError:  # missing, or cut short by hand: the clip runs again
        return None
    if not isinstance(rec, dict) or rec.get("input") != digest or rec.get("output") != output_digest(folders, name):
        return None
    return rec.get("figures")


def run_clip(name: str, manifest: str, model_path: str, params: Params, folders: ShardFolders, digest: str) -> dict:
    """Every step of clip ``name`` into temporaries put in place together, then its record; returns the record."""
    start = time.perf_counter()
    with atomic_paths(*folders.outputs(name)) as (data, reports):
        data.mkdir()
        reports.mkdir()
        figures = run_heldout(name, manifest, model_path, params, data, reports)
    record = {"input": digest, "output": output_digest(folders, name), "figures": figures}
    write_json(folders.record(name), record)
    return {**record, "seconds": time.perf_counter() - start, "pid": os.getpid()}


def _threads(count: int) -> None:
    """A worker's torch threads (its share of the cores)."""
    import torch

    torch.set_num_threads(count)


class _InProcess:
    """``submit`` running the call at once in this process (with ``threads`` torch threads), as a done Future."""

    def __init__(self, threads: int) -> None:
        _threads(threads)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001 (handed to the caller through the future, as a pool does)
            future.set_exception(e)
        return future


@dataclass
class ShardRun:
    """What a test stage did: per clip its figures, the clips it ran (seconds, worker) and those it skipped."""

    figures: dict[str, dict] = field(default_factory=dict)
    ran: dict[str, dict] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    workers: int = 0
    wall_s: float = 0.0

    def summary(self) -> str:
        lines = [f"{len(self.figures)} test clips: {len(self.ran)} run, {len(self.figures) - len(self.ran)} up to date"]
        if self.removed:
            lines.append(f"removed (no longer in this shard's test clips): {', '.join(self.removed)}")
        if self.ran:
            work = sum(r["seconds"] for r in self.ran.values())
            lines.append(f"{self.workers} worker(s); {work:.1f} s of work in {self.wall_s:.1f} s")
        for name, figures in sorted(self.figures.items()):
            flicker = {m: round(v.get("flicker_std_rel", float("nan")), 4) for m, v in figures["methods"].items()}
            took = f"{self.ran[name]['seconds']:.1f} s" if name in self.ran else "up to date"
            lines.append(f"  {name} ({took}): flicker {flicker}")
        return "\n".join(lines)


def _dispatch(todo: list[str], job: tuple, workers: int, run: ShardRun) -> list[str]:
    """Run the clips of ``todo`` (``job``: manifest, model, params, folders, digests) in ``workers`` processes (one:
    in this process); returns one line per failed clip."""
    manifest, model_path, params, folders, digests = job
    failures: list[str] = []
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        pool = contextlib.nullcontext()
        submit = _InProcess(threads).submit
    else:
        pool = ProcessPoolExecutor(
            workers, multiprocessing.get_context("spawn"), initializer=_threads, initargs=(threads,)
        )
        submit = pool.submit
    with pool, tqdm(total=len(todo), desc="test clips", unit="clip", disable=not sys.stderr.isatty()) as bar:
        futures = {submit(run_clip, n, manifest, model_path, params, folders, digests[n]): n for n in todo}
        for future in as_completed(futures):
            name = futures[future]
            try:
                run.ran[name] = future.result()
            except Exception as e:  # noqa: BLE001 (every other clip finishes; the first failure is raised after)
                failures.append(f"test clip {name}: {' '.join(str(e).split()) or type(e).__name__}")
            bar.update(1)
    return failures


def run_shard(names: list[str], manifest: str, model_path: str, params: Params, folders: ShardFolders) -> ShardRun:
    """Bring every test clip of a shard up to date (skipping what is); clips listed in ``adapt.clips`` go first
    (they take longest). Raises one line naming a clip that failed, after all others have finished."""
    start = time.perf_counter()
    run = ShardRun(removed=folders.remove_stale(set(names)))
    for folder in (folders.data, folders.reports):  # outputs even for a shard without test clips
        folder.mkdir(parents=True, exist_ok=True)
    digests = {n: input_digest(n, manifest, model_path, params) for n in names}
    done = {n: recorded(folders, n, digests[n]) for n in names}
    todo = sorted((n for n in names if done[n] is None), key=lambda n: (n not in params.adapt.clips, n))
    failures: list[str] = []
    if todo:
        run.workers = min(params.test.workers, len(todo))
        failures = _dispatch(todo, (manifest, model_path, params, folders, digests), run.workers, run)
    raise_failures(failures, len(todo))
    run.figures = {n: done[n] if done[n] is not None else run.ran[n]["figures"] for n in names}
    run.wall_s = time.perf_counter() - start
    return run

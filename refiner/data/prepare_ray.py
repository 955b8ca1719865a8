"""One shard's clips prepared on Ray: CPU tasks for synth + decode and guidance + view, the teacher in GPU actors.

The driver (the ``prepare@<shard>`` stage) checks every clip's step records first
(:func:`refiner.data.prepare.first_stale`,
stats only) and starts Ray only when some clip has work. Each clip then runs as a chain of three calls, each
submitted as soon as the one before it returned, so a clip's frames stay together in one task:

1. synth, decode: a CPU task (``num_cpus=1``);
2. teacher: on a cluster with GPUs, one actor per GPU (``num_gpus=1``, the least busy one; it keeps its process,
   CUDA context and imports across clips, and the teacher batches frames by its own ``batch_size``); without
   GPUs (or with ``teacher.device: cpu``) a CPU task;
3. guidance, view: a CPU task.

Fault tolerance: a task whose worker process dies (killed, out of memory, a lost node) is run again by Ray up to
``prepare.max_retries`` times (an actor is restarted and its call retried); an error raised by the work itself is
not retried. Every step writes through :func:`refiner.core.store.atomic_path`, so a killed attempt leaves only a
temporary (removed by the next attempt) and never a half-written output or record. A clip that still fails is
reported in one line after every other clip has finished (their records stand, so the next run skips them).

Local by default: ``ray.init(address="local")`` with ``prepare.local_cpus`` CPUs (at most this machine's). With
``prepare.ray_address`` or ``$RAY_ADDRESS`` the same calls go to that cluster, whose nodes must hold this
checkout at the same path (a shared filesystem): a worker whose refiner code differs from the driver's refuses.
What ran where (node, process, GPU, seconds per step) is printed and appended to ``<cache>/runs.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from refiner.core.code_digest import ROOT
from refiner.core.config import PrepareParams
from refiner.core.errors import raise_failures
from refiner.core.store import atomic_path, read_json, remove_stale_folders
from refiner.data.prepare import ORDER, ClipPaths, Outcome, Stats, code_of, first_stale, run_steps
from refiner.data.shards import ClipPlan

GROUPS = (("synth", "decode"), ("teacher",), ("guidance", "view"))  # one Ray call each, in this order
OBJECT_STORE_BYTES = 128 << 20  # only paths and digests travel through Ray; the stores go to the shared disk


@dataclass
class ClipRun:
    """One clip on its way through the groups of steps it still has to run."""

    plan: ClipPlan
    paths: ClipPaths
    groups: list[tuple[str, ...]]
    outcomes: list[Outcome]
    where: list[dict] = field(default_factory=list)

    @property
    def digests(self) -> dict[str, str]:
        return {o.step: o.output for o in self.outcomes}


def remaining_groups(start: str) -> list[tuple[str, ...]]:
    """The groups of steps from ``start`` on, the first cut to begin at it."""
    first = ORDER.index(start)
    cut = [tuple(s for s in g if ORDER.index(s) >= first) for g in GROUPS]
    return [g for g in cut if g]


def run_group(steps: tuple[str, ...], plan: ClipPlan, paths: ClipPaths, upstream: dict, driver: dict) -> dict:
    """In a Ray worker: the steps of one clip (:func:`refiner.data.prepare.run_steps`) and where they ran. ``driver``:
    the driver's working directory ``cwd`` (paths are relative to it, so the stores hold the same bytes wherever
    they are written) and its digest of each step's ``code``, which this worker's must equal."""
    import ray

    node = ray.util.get_node_ip_address()
    if not Path(driver["cwd"]).is_dir():
        raise RuntimeError(f"node {node} has no folder {driver['cwd']}: every node needs the repository at that path")
    os.chdir(driver["cwd"])
    for step in steps:
        if code_of(step, plan) != driver["code"][step]:
            raise RuntimeError(
                f"node {node} runs other refiner code than the driver (step {step}); install the same checkout "
                f"at {ROOT} on every node of the cluster"
            )
    outcomes = run_steps(steps, plan, paths, upstream)
    return {"outcomes": outcomes, "where": {"node": node, "pid": os.getpid(), "gpus": ray.get_gpu_ids()}}


class TeacherWorker:
    """A Ray actor holding one GPU (``num_gpus=1``): runs the teacher step of one clip per call."""

    def run(self, steps: tuple[str, ...], plan: ClipPlan, paths: ClipPaths, upstream: dict, driver: dict) -> dict:
        return run_group(steps, plan, paths, upstream, driver)


class Workers:
    """Where each group goes: a CPU task, or the teacher actor with the fewest calls in flight."""

    def __init__(self, max_retries: int) -> None:
        import ray

        self.task = ray.remote(run_group).options(num_cpus=1, max_retries=max_retries)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actor = ray.remote(TeacherWorker).options(num_gpus=1, max_restarts=max_retries, max_task_retries=max_retries)
        self.actors = [actor.remote() for _ in range(gpus)]
        self.busy = [0] * gpus
        self.on_actor: dict[Any, int] = {}

    def submit(self, steps: tuple[str, ...], run: ClipRun, driver: dict) -> Any:
        args = (steps, run.plan, run.paths, run.digests, driver)
        if steps != ("teacher",) or not self.actors or run.plan.teacher.device == "cpu":
            return self.task.remote(*args)
        i = self.busy.index(min(self.busy))
        ref = self.actors[i].run.remote(*args)
        self.busy[i] += 1
        self.on_actor[ref] = i
        return ref

    def returned(self, ref: Any) -> None:
        if ref in self.on_actor:
            self.busy[self.on_actor.pop(ref)] -= 1


def connect(p: PrepareParams) -> str:
    """Join the cluster at ``prepare.ray_address`` or ``$RAY_ADDRESS``, else start a local Ray; says which."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    address = p.ray_address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.WARNING, "configure_logging": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        # the workers inherit this environment: they import this checkout's refiner, as the driver does
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        cpus = min(p.local_cpus, os.cpu_count() or 1)
        store = OBJECT_STORE_BYTES
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=store, **quiet)
    res = ray.cluster_resources()
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    return f"{where}: {int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs, {len(ray.nodes())} node(s)"


def _failure(name: str, error: Exception) -> str:
    """One line for a clip whose call failed: the work's own error, or a worker that died past its retries."""
    cause = getattr(error, "cause", None) or error
    text = " ".join(str(cause).split()) or type(cause).__name__
    if cause is error and not getattr(error, "cause", None):
        text = f"its worker died on every try ({type(error).__name__}); see the Ray logs ({text[:200]})"
    return f"clip {name}: {text}"


def dispatch(runs: list[ClipRun], workers: Workers, driver: dict[str, dict]) -> list[str]:
    """Run every clip's remaining groups, each as soon as the one before it returned (``driver``: per clip, what
    :func:`run_group` checks); returns the failures."""
    import ray

    pending: dict[Any, ClipRun] = {}
    for run in runs:
        pending[workers.submit(run.groups.pop(0), run, driver[run.plan.name])] = run
    failures = []
    with tqdm(total=len(runs), desc="prepare", unit="clip", file=sys.stderr) as bar:
        while pending:
            refs = list(pending)
            ready, rest = ray.wait(refs, num_returns=1)
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []  # all done by now
            for ref in ready:
                run = pending.pop(ref)
                workers.returned(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    failures.append(_failure(run.plan.name, e))
                    bar.update(1)
                    continue
                run.outcomes += result["outcomes"]
                ran = {o.step: round(o.seconds, 4) for o in result["outcomes"] if o.ran}  # early cutoff: not all
                run.where.append({**result["where"], "steps": ran})
                if run.groups:
                    pending[workers.submit(run.groups.pop(0), run, driver[run.plan.name])] = run
                else:
                    bar.update(1)
    return failures


@dataclass(frozen=True)
class Layout:
    """A shard's folders: ``clips/<clip>/`` (stores and step records) and ``views/<clip>/view.png``."""

    clips: Path
    views: Path

    def paths(self, name: str) -> ClipPaths:
        return ClipPaths(self.clips / name, self.views / name)

    def remove_stale(self, names: set[str]) -> list[str]:
        """Remove the folders of clips no longer in the shard (taken out of the corpus or moved to another)."""
        return remove_stale_folders((self.clips, self.views), names)


@dataclass
class ShardReport:
    """What a prepare stage did: per clip its stores and digests (``index``) and teacher metrics, the steps it ran,
    on what, and its own compute time."""

    runs: list[ClipRun]
    engine: str | None
    removed: list[str]
    wall_s: float

    @property
    def index(self) -> dict[str, dict]:
        """Per clip: its stores and step output digests; ``digest`` covers decoded + teacher + guidance (what the
        manifest entry carries, so a test clip is redone when they change)."""
        out = {}
        for r in self.runs:
            d, stores = r.digests, {s: str(r.paths.output(s)) for s in ORDER}
            both = "".join(d[s] for s in ("decode", "teacher", "guidance"))
            out[r.plan.name] = {
                **{{"decode": "decoded"}.get(s, s): path for s, path in stores.items()},
                "digests": d,
                "digest": hashlib.sha256(both.encode()).hexdigest(),
            }
        return out

    @property
    def metrics(self) -> dict[str, dict]:
        """Per clip, the teacher's metrics (drawn error model, uncertainty-error correlation, AbsRel vs GT)."""
        return {r.plan.name: next(o.metrics for o in r.outcomes if o.step == "teacher") for r in self.runs}

    @property
    def compute_s(self) -> float:
        """Seconds the workers spent inside the steps they ran (the work itself, without Ray or start-up)."""
        return sum(o.seconds for r in self.runs for o in r.outcomes if o.ran)

    def summary(self) -> str:
        """Lines for the log: counts, the engine, and which worker ran how many steps."""
        ran = [r for r in self.runs if any(o.ran for o in r.outcomes)]
        steps = {s: sum(o.ran and o.step == s for r in ran for o in r.outcomes) for s in ORDER}
        lines = [f"{len(self.runs)} clips: {len(ran)} prepared, {len(self.runs) - len(ran)} up to date"]
        if self.removed:
            lines.append(f"removed (no longer in this shard): {', '.join(self.removed)}")
        if ran:
            lines.append("steps run: " + ", ".join(f"{s} {n}" for s, n in steps.items() if n))
            lines.append(f"on {self.engine}; {self.compute_s:.1f} s of work in {self.wall_s:.1f} s")
        per: dict[tuple, int] = {}
        for w in (w for r in ran for w in r.where):
            key = (w["node"], w["pid"], tuple(w["gpus"]))
            per[key] = per.get(key, 0) + len(w["steps"])
        for (node, pid, gpus), n in sorted(per.items()):
            lines.append(f"  {node} pid {pid}{f' GPU {list(gpus)}' if gpus else ''}: {n} steps")
        return "\n".join(lines)


def _load_stats(path: Path) -> Stats:
    """The stat cache (file → size, mtime, inode, sha256), empty when missing or unreadable (then files are read)."""
    try:
        data = read_json(path, "stat cache")
    except Exception:  # noqa: BLE001 (a cache: anything wrong with it only costs reading the files again)
        return {}
    return data if isinstance(data, dict) else {}


def _log_runs(cache: Path, runs: list[ClipRun]) -> None:
    """Append where each clip's steps ran (node, pid, GPUs, seconds per step) to ``cache/runs.jsonl``."""
    cache.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with (cache / "runs.jsonl").open("a") as f:
        for r in runs:
            for w in r.where:
                f.write(json.dumps({"time": stamp, "clip": r.plan.name, **w}, sort_keys=True) + "\n")


def prepare_shard(plans: list[ClipPlan], layout: Layout, p: PrepareParams, cache: Path) -> ShardReport:
    """Bring every clip of a shard up to date (skipping what is), on Ray when any has work; ``cache`` holds the
    stat cache and the run log. Raises one line naming a clip that failed, after all others have finished."""
    start = time.perf_counter()
    removed = layout.remove_stale({pl.name for pl in plans})
    known = _load_stats(cache / "stat.json")
    runs = []
    for plan in plans:
        paths = layout.paths(plan.name)
        first, done = first_stale(plan, paths, known)
        runs.append(ClipRun(plan, paths, remaining_groups(first) if first else [], done))
    todo, engine, failures = [r for r in runs if r.groups], None, []
    if todo:
        import ray

        engine = connect(p)
        try:
            driver = {r.plan.name: {"cwd": os.getcwd(), "code": {s: code_of(s, r.plan) for s in ORDER}} for r in todo}
            failures = dispatch(todo, Workers(p.max_retries), driver)
        finally:
            ray.shutdown()
        _log_runs(cache, todo)
    with atomic_path(cache / "stat.json") as tmp:
        tmp.write_text(json.dumps({f: s for r in runs for o in r.outcomes for f, s in o.stats.items()}))
    raise_failures(failures, len(todo))
    return ShardReport(runs, engine, removed, time.perf_counter() - start)

"""The corpus cut into shards: which clip each ``prepare@<shard>`` stage prepares, with every setting it needs.

A clip's shard is ``sha256(name) mod N`` (N = len(prepare.shards)), so adding or removing a clip moves no other
clip. The ``shards`` stage writes one plan per shard (``data/shards/<i>.json``): per clip, its ``corpus.clips``
entry, the synthetic settings it renders with, the decode grid and its teacher's resolved section. A prepare
stage depends on its own plan file only, so changing one clip's entry re-runs the one stage whose plan changed;
inside it, :mod:`refiner.data.prepare` redoes only that clip's steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refiner.core.config import ConfigError, Params, TeacherParams
from refiner.core.params_corpus import ClipSpec, SyntheticDefaults
from refiner.core.store import atomic_path, read_json, write_json

VERSION = 1


def shard_of(name: str, count: int) -> int:
    """The shard of clip ``name`` among ``count`` shards (stable across runs, machines and corpus edits)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) % count


def clip_settings(params: Params, name: str) -> dict[str, Any]:
    """Everything that decides what clip ``name``'s preparation writes, as JSON (the plan's entry)."""
    corpus, choice = params.corpus, params.teacher_of(name)
    spec = corpus.clip(name)
    return {
        "clip": spec.model_dump(mode="json", exclude_none=True, exclude={"teacher"}),  # the teacher: below
        "synthetic": corpus.synthetic_spec(name).model_dump(mode="json") if spec.kind == "synthetic" else None,
        "decode": {**params.decode.model_dump(mode="json"), "multiple": params.teacher.low_res_factor},
        "teacher": {"choice": choice, "params": params.teacher.resolve(choice).model_dump(mode="json")},
    }


def write_plans(params: Params, out_dir: str | Path) -> dict[int, list[str]]:
    """One plan per shard into ``out_dir`` (replaced whole: a shard no longer listed disappears); returns the
    clip names per shard."""
    count = len(params.prepare.shards)
    members: dict[int, list[str]] = {i: [] for i in params.prepare.shards}
    for name in sorted(params.corpus.clips):
        members[shard_of(name, count)].append(name)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for i, names in members.items():
            clips = {n: clip_settings(params, n) for n in names}
            write_json(tmp / f"{i}.json", {"version": VERSION, "shard": i, "shards": count, "clips": clips})
    return members


@dataclass(frozen=True)
class ClipPlan:
    """One clip of a shard's plan, validated again (the plan file is read, not trusted)."""

    name: str
    spec: ClipSpec
    synthetic: SyntheticDefaults | None
    size: int
    crop: bool
    multiple: int
    teacher_choice: str
    teacher: TeacherParams
    raw: dict[str, Any]  # the plan entry as written: what the steps' digests are computed from


def read_plan(path: str | Path) -> list[ClipPlan]:
    """The clips of the plan file ``path`` (sorted by name); a stale or edited file is one error naming it."""
    data = read_json(path, "shard plan (the shards stage)")
    fix = "re-run the shards stage: dvc repro shards"
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("clips"), dict):
        raise ConfigError(f"{path}: not a shard plan of version {VERSION}; {fix}")
    try:
        return [_clip_plan(name, entry) for name, entry in sorted(data["clips"].items())]
    except (ConfigError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: {' '.join(str(e).split())}; {fix}") from None


def _clip_plan(name: str, entry: dict[str, Any]) -> ClipPlan:
    synthetic = entry["synthetic"]
    decode = entry["decode"]
    return ClipPlan(
        name=name,
        spec=ClipSpec(**entry["clip"]),
        synthetic=None if synthetic is None else SyntheticDefaults(**synthetic),
        size=int(decode["size"]),
        crop=bool(decode["crop"]),
        multiple=int(decode["multiple"]),
        teacher_choice=str(entry["teacher"]["choice"]),
        teacher=TeacherParams(**entry["teacher"]["params"]),
        raw=entry,
    )


def read_prepared(folder: str | Path, names: list[str], shards: int) -> dict[str, dict]:
    """Each clip's stores and digest as its shard's prepare stage recorded them (``folder/<shard>.json``, of the
    ``shards`` shards there are now: an index left by a shard since removed is never read)."""
    index = {i: read_json(Path(folder) / f"{i}.json", "prepared clips (a prepare stage)") for i in range(shards)}
    missing = [n for n in names if n not in index[shard_of(n, shards)]]
    if missing:
        raise ConfigError(
            f"{folder}/{shard_of(missing[0], shards)}.json: no prepared clip {missing[0]!r} ({len(missing)} missing); "
            "run the prepare stages first: dvc repro"
        )
    return {n: index[shard_of(n, shards)][n] for n in names}


def plan_of(params: Params, name: str) -> ClipPlan:
    """Clip ``name``'s plan entry as a prepare stage reads it from its shard's plan file."""
    return _clip_plan(name, clip_settings(params, name))

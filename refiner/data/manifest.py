"""The corpus manifest (``data/manifest/``): one JSON per split listing its clips, and the calibration.

``<split>.json`` (schema version 3): {"version": 3, "split": "train", "clips": [clip, ...]}, each clip
holding ``name``, ``scene_id``, ``dataset_name``, ``teacher_name`` (the corpus's name for its teacher),
``teacher_id`` (:func:`refiner.teachers.registry.teacher_id`), ``frames``, ``height``, ``width``,
``low_res_factor``, ``has_gt``, the stores ``decoded``, ``teacher``, ``guidance``, ``depth_gt_path``
(null without ground truth), ``calibration`` (the uncertainty-rank → confidence table the clip uses, with its
``source`` and the clips it was ``fitted_on``) and ``digest``, a content hash of its stores: the train stage
depends on ``train.json`` and ``val.json`` only, so a change to a test clip never re-runs training.
``calibration.json``: per teacher id, the table fitted on the TRAIN clips with GT taught by that same teacher
(:mod:`refiner.teachers.calibration`). A clip whose teacher has no such table gets the fallback of
``teacher.calibration_fallback`` (:func:`calibration_for`), never another teacher's table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from refiner.core.store import StoreError, atomic_path, open_group, read_json, write_json
from refiner.teachers.calibration import CalibrationAccumulator, identity_calibration

VERSION = 3
SPLITS = ("train", "val", "test")
CLIP_KEYS = {
    "name": str,
    "scene_id": str,
    "dataset_name": str,
    "teacher_name": str,
    "teacher_id": str,
    "frames": int,
    "height": int,
    "width": int,
    "low_res_factor": int,
    "has_gt": bool,
    "decoded": str,
    "teacher": str,
    "guidance": str,
    "depth_gt_path": (str, type(None)),
    "calibration": dict,
    "digest": str,
}


def store_digest(*paths: str | Path) -> str:
    """SHA-256 over the relative names and bytes of every file under the given stores (sorted)."""
    h = hashlib.sha256()
    for root in map(Path, paths):
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def clip_entry(name: str, decoded: str, teacher: str, guidance: str, digest: str | None = None) -> dict[str, Any]:
    """One clip's manifest entry, read from its stores (which must exist and agree in frame count); ``digest``: their
    content digest as the prepare stage recorded it (else :func:`store_digest` reads every file)."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    tea = open_group(teacher, ("depth", "uncertainty", "rank", "low_mapping"), "teacher store")
    open_group(guidance, (), "guidance store")
    frames, height, width = dec["rgb"].shape[:3]
    if tea["depth"].shape[0] != frames:
        raise StoreError(f"{teacher}: {tea['depth'].shape[0]} frames but {decoded} has {frames}; re-run the teacher")
    has_gt = bool(dec.attrs.get("has_gt", False)) and "depth_gt" in dec
    return {
        "name": name,
        "scene_id": str(dec.attrs.get("scene_id", name)),
        "dataset_name": str(dec.attrs.get("dataset_name", "video")),
        "teacher_name": str(tea.attrs["teacher"]),
        "teacher_id": str(tea.attrs["teacher_id"]),
        "frames": int(frames),
        "height": int(height),
        "width": int(width),
        "low_res_factor": int(tea.attrs["low_res_factor"]),
        "has_gt": has_gt,
        "decoded": decoded,
        "teacher": teacher,
        "guidance": guidance,
        "depth_gt_path": f"{decoded}/depth_gt" if has_gt else None,
        "calibration": {},  # filled by calibrate()
        "digest": digest or store_digest(decoded, teacher, guidance),
    }


def fit_calibration(train_clips: list[dict], bins: int) -> dict[str, dict]:
    """Per teacher id, the table fitted on the GT error sums of the train clips that teacher taught."""
    by_teacher: dict[str, list[tuple[str, dict]]] = {}
    for clip in train_clips:
        sums = dict(open_group(clip["teacher"]).attrs["calibration_sums"])
        if sums.pop("source") != "none":
            by_teacher.setdefault(clip["teacher_id"], []).append((clip["name"], sums))
    tables = {}
    for tid, fitted in by_teacher.items():
        names = [n for n, _ in fitted]
        table = CalibrationAccumulator.merge([s for _, s in fitted], bins).fit(f"train split ({len(names)} clips)")
        tables[tid] = {**table, "teacher_id": tid, "fitted_on": names}
    return tables


def calibration_for(tables: dict[str, dict], teacher_store: str | Path, fallback: str) -> dict:
    """The table of the teacher that wrote ``teacher_store``: its own fitted table, else the fallback: ``self``
    (fitted on the store's own frame-to-frame disagreement, GT-free) or ``rank`` (c = 1 − rank). Never the
    table of another teacher id."""
    attrs = open_group(teacher_store, (), "teacher store").attrs
    tid = str(attrs["teacher_id"])
    if tid in tables:
        return tables[tid]
    if fallback == "self":
        sums = dict(attrs["self_calibration_sums"])
        source = "self: this clip's own frame-to-frame disagreement (GT-free; no train clip calibrated its teacher)"
        table, fitted = CalibrationAccumulator.merge([sums], sums["bins"]).fit(source), [str(attrs["clip"])]
    else:
        table, fitted = identity_calibration("rank: c = 1 - rank (no train clip calibrated this teacher)"), []
    return {**table, "teacher_id": tid, "fitted_on": fitted}


def calibrate(splits: dict[str, list[dict]], bins: int, fallback: str) -> tuple[dict[str, list[dict]], dict]:
    """(every clip entry with the table it uses under ``calibration``, the tables fitted on the train split)."""
    tables = fit_calibration(splits.get("train", []), bins)
    done = {
        s: [{**c, "calibration": calibration_for(tables, c["teacher"], fallback)} for c in cs]
        for s, cs in splits.items()
    }
    return done, tables


def validate_manifest(data: Any, where: str = "manifest") -> dict:
    """Check the schema; raises ValueError naming the clip and key at fault."""
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("clips"), list):
        raise ValueError(f"{where}: expected {{'version': {VERSION}, 'clips': [...]}}; re-run the manifest stage")
    for i, clip in enumerate(data["clips"]):
        for key, kind in CLIP_KEYS.items():
            if key not in clip:
                raise ValueError(f"{where}: clip {i} lacks key {key!r}; re-run the manifest stage")
            if not isinstance(clip[key], kind) or (kind is int and isinstance(clip[key], bool)):
                raise ValueError(f"{where}: clip {i} key {key!r} has the wrong type {type(clip[key]).__name__}")
    return data


def write_manifest(out_dir: str | Path, splits: dict[str, list[dict]], calibration: dict[str, dict]) -> None:
    """Write the output of :func:`calibrate`: ``<split>.json`` for every split, ``clips/<name>.json`` for every
    clip (what the test stage keys a clip's record on, so changing one clip redoes only that clip) and the fitted
    tables as ``calibration.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "clips") as tmp:  # replaced whole: a clip removed from the corpus disappears
        tmp.mkdir()
        for split, clips in splits.items():
            data = validate_manifest({"version": VERSION, "split": split, "clips": clips}, f"{out_dir}/{split}.json")
            write_json(out_dir / f"{split}.json", data)
            for clip in clips:
                write_json(tmp / f"{clip['name']}.json", {**clip, "split": split})
    write_json(out_dir / "calibration.json", calibration)


def load_split(manifest_dir: str | Path, split: str) -> list[dict]:
    """The clips of one split, validated."""
    path = Path(manifest_dir) / f"{split}.json"
    return validate_manifest(read_json(path, "manifest"), str(path))["clips"]


def load_calibration(manifest_dir: str | Path) -> dict[str, dict]:
    return read_json(Path(manifest_dir) / "calibration.json", "calibration (manifest stage)")


def clip_entry_path(manifest_dir: str | Path, name: str) -> Path:
    """The file of clip ``name``'s manifest entry (what a per-clip step depends on)."""
    return Path(manifest_dir) / "clips" / f"{name}.json"


def find_clip(manifest_dir: str | Path, name: str) -> tuple[dict, str]:
    """(the manifest entry of clip ``name``, its split)."""
    path = clip_entry_path(manifest_dir, name)
    if not path.is_file():
        raise ValueError(f"{path}: no clip named {name!r}; add it to corpus.clips and a split in params.yaml")
    entry = read_json(path, "manifest clip entry")
    return validate_manifest({"version": VERSION, "clips": [entry]}, str(path))["clips"][0], entry["split"]

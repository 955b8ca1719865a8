"""The clip manifest (``data/manifest.json``): where each clip's arrays live, for training and tools.

Schema (version 1): {"version": 1, "clips": [clip, ...]} with each clip holding ``scene_id``,
``dataset_name``, ``frames``, ``size``, ``low_res_factor``, ``has_gt``, the stores ``decoded``,
``teacher``, ``guidance``, and array paths ``rgb``, ``intrinsics``, ``depth``, ``uncertainty``,
``confidence``, ``depth_gt_path`` (null without ground truth). Array paths are ``store/array``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refiner.store import StoreError, open_group, read_json, write_json

VERSION = 1
CLIP_KEYS = {
    "scene_id": str,
    "dataset_name": str,
    "frames": int,
    "size": int,
    "low_res_factor": int,
    "has_gt": bool,
    "decoded": str,
    "teacher": str,
    "guidance": str,
    "rgb": str,
    "intrinsics": str,
    "depth": str,
    "uncertainty": str,
    "confidence": str,
    "depth_gt_path": (str, type(None)),
}


def clip_entry(decoded: str, teacher: str, guidance: str) -> dict[str, Any]:
    """One clip's manifest entry, read from its stores (which must exist and agree in frame count)."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    tea = open_group(teacher, ("depth", "uncertainty", "confidence", "low_mapping"), "teacher store")
    open_group(guidance, (), "guidance store")
    frames, size = dec["rgb"].shape[:2]
    if tea["depth"].shape[0] != frames:
        raise StoreError(f"{teacher}: {tea['depth'].shape[0]} frames but {decoded} has {frames}; re-run the teacher")
    has_gt = bool(dec.attrs.get("has_gt", False)) and "depth_gt" in dec
    return {
        "scene_id": str(dec.attrs.get("scene_id", Path(decoded).stem)),
        "dataset_name": str(dec.attrs.get("dataset_name", "video")),
        "frames": int(frames),
        "size": int(size),
        "low_res_factor": int(tea.attrs["low_res_factor"]),
        "has_gt": has_gt,
        "decoded": decoded,
        "teacher": teacher,
        "guidance": guidance,
        "rgb": f"{decoded}/rgb",
        "intrinsics": f"{decoded}/K",
        "depth": f"{teacher}/depth",
        "uncertainty": f"{teacher}/uncertainty",
        "confidence": f"{teacher}/confidence",
        "depth_gt_path": f"{decoded}/depth_gt" if has_gt else None,
    }


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


def write_manifest(path: str | Path, clips: list[dict]) -> dict:
    data = validate_manifest({"version": VERSION, "clips": clips}, str(path))
    write_json(path, data)
    return data


def load_manifest(path: str | Path) -> dict:
    """Read and validate a manifest written by :func:`write_manifest`."""
    return validate_manifest(read_json(path, "manifest"), str(path))

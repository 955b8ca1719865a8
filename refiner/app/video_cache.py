"""refiner-video's cache of decoded and teacher stores, one folder per video and settings.

The folder is keyed by the video's SHA-256 and every setting that changes the two stores (camera, GT store,
stride, decode section, the resolved teacher section with its seed), never by the file name, so a second run of
the same video, under any name, goes straight to the refiner. The simulated teacher draws its error model from
(``teacher.seed`` or ``--seed``, a name), and the name it is given is ``video-<first 16 hex digits of the
SHA-256>``: renaming the file changes nothing. A folder is written whole under a temporary name and renamed when
both stores are complete, so a failed run leaves no entry behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from refiner.core.config import DecodeParams, TeacherParams
from refiner.core.store import atomic_path, write_json
from refiner.core.video import video_info
from refiner.data.adapters import ingest
from refiner.data.ingest import resolve_intrinsics
from refiner.teachers.cache import write_teacher_store


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_fingerprint(path: Path | None) -> list | None:
    """Names, sizes and modification times of a store's files: cheap, and changes when the store is rewritten."""
    if path is None:
        return None
    return sorted(
        [str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns] for f in path.rglob("*") if f.is_file()
    )


def cache_key(
    video: Path, intrinsics: dict | Path, gt: Path | None, stride: int, decode: DecodeParams, tp: TeacherParams
) -> dict:
    """Everything that changes the decoded and teacher stores of ``video``."""
    info = video_info(video)
    K = resolve_intrinsics(intrinsics, int(info["width"]), int(info["height"]), str(intrinsics))
    return {
        "video_sha256": file_digest(video),
        "K": K.tolist(),
        "gt": store_fingerprint(gt),
        "stride": stride,
        "decode": decode.model_dump(),
        "teacher": tp.model_dump(mode="json"),
    }


def cache_folder(root: Path | None, key: dict) -> Path:
    """``root`` (default ``$REFINER_CACHE`` or ``~/.cache/refiner``) / ``video-<hash>-<settings hash>``."""
    root = root or Path(os.environ.get("REFINER_CACHE", "~/.cache/refiner")).expanduser()
    settings = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return root / f"video-{key['video_sha256'][:12]}-{settings[:8]}"


def prepare_stores(
    args: argparse.Namespace, key: dict, intrinsics: dict | Path, decode: DecodeParams, tp: TeacherParams
) -> tuple[Path, Path, bool]:
    """(decoded store, teacher store, reused): decode and run the teacher unless the cache holds both under
    ``key`` (:func:`cache_key`)."""
    folder = cache_folder(args.cache, key)
    decoded, teacher = folder / "decoded.zarr", folder / "teacher.zarr"
    if (decoded / "zarr.json").is_file() and (teacher / "zarr.json").is_file():
        return decoded, teacher, True
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        grid = {"multiple": tp.low_res_factor, "crop": decode.crop, "progress": not args.quiet}
        options = {"stride": args.stride, "intrinsics": intrinsics, "gt": args.gt, "scene_id": args.name, **grid}
        ingest("video", args.video, tmp / "decoded.zarr", decode.size, **options)
        seed_name = f"video-{key['video_sha256'][:16]}"
        write_teacher_store(tmp / "decoded.zarr", tmp / "teacher.zarr", tp, seed_name, not args.quiet, args.teacher)
        write_json(tmp / "key.json", key)
    return decoded, teacher, False

"""Zarr v3 stores chunked per frame, JSON files, and atomic writes (temp then rename)."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from refiner.errors import repro_target

RERUN = f"dvc repro -f -s <stage>, or -s {repro_target('<stage>', '<clip>')} for a per-clip stage"  # in messages


class StoreError(RuntimeError):
    """A store is missing, truncated or lacks an expected array."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path``, on error it is removed.

    Works for files and directories (Zarr stores), so a failed stage never leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Temporary siblings of several outputs, put in place back to back only when the whole block succeeds:
    a stage's outputs change together or not at all (an error or a kill inside the block keeps every
    previous output)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_siblings(path: Path) -> list[Path]:
    """Remove the temporary siblings (``.name.tmpPID``, ``.name.oldPID``) that a killed writer of ``path`` left.

    A writer killed between its two renames leaves the previous output as ``.name.oldPID`` and no ``path``:
    that previous output is put back. Siblings of live processes are left alone. Returns what was removed.
    """
    removed = []
    prefix = f".{path.name}."
    for sib in sorted(path.parent.glob(f"{prefix}[to][ml][pd]*")):
        kind, pid = sib.name[len(prefix) :][:3], sib.name[len(prefix) + 3 :]
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not path.exists():
            os.replace(sib, path)
            continue
        _remove(sib)
        removed.append(sib)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically with stable formatting (DVC metrics and manifests)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts with the same keys) as CSV atomically (DVC plots)."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: {what} is not valid JSON ({e})") from e


def create_group(path: str | Path, attrs: dict[str, Any] | None = None) -> zarr.Group:
    """A new Zarr v3 group at ``path`` (overwriting)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    if attrs:
        group.attrs.update(attrs)
    return group


FLAT_KEYS = {"name": "default", "separator": "."}  # chunk files c.12.0.0 side by side, not nested folders


def frames_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: Any) -> zarr.Array:
    """An array whose first axis is time, one chunk per frame, Blosc zstd (level 1) compressed.

    Every chunk is written, even an all-zero one, so a missing chunk file means a truncated store. Chunk files
    lie flat in the array's folder (``c.12.0.0``): DVC hashes a store by walking it, and nested per-chunk
    folders made that walk most of a no-op ``dvc repro``.
    """
    return group.create_array(
        name,
        shape=shape,
        chunks=(1, *shape[1:]),
        chunk_key_encoding=FLAT_KEYS,
        dtype=dtype,
        compressors=BloscCodec(  # level 1: half the write time of level 5 for 3% larger chunks
            cname="zstd", clevel=1, shuffle="bitshuffle" if np.dtype(dtype).itemsize > 1 else "noshuffle"
        ),
        fill_value=0,
        config={"write_empty_chunks": True},
    )


def small_array(group: zarr.Group, name: str, data: np.ndarray) -> zarr.Array:
    """Store a small array (intrinsics, poses, mappings) in one chunk."""
    arr = group.create_array(
        name,
        shape=data.shape,
        chunks=data.shape,
        chunk_key_encoding=FLAT_KEYS,
        dtype=data.dtype,
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    arr[...] = data
    return arr


def open_group(path: str | Path, required: tuple[str, ...] = (), what: str = "store") -> zarr.Group:
    """Open an existing Zarr group read-only; ``required`` arrays must exist and every array must be complete."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: {what} not found or not a Zarr v3 store; run the stage that writes it (dvc repro)")
    fix = f"it is truncated or stale; re-run the stage that writes it ({RERUN})"
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        missing = [k for k in required if k not in group]
        arrays = [(name, node) for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)]
    except (ValueError, KeyError, TypeError) as e:  # unreadable zarr.json metadata
        raise StoreError(f"{path}: {what} has corrupt metadata ({e}); {fix}") from e
    if missing:
        raise StoreError(f"{path}: {what} lacks array(s) {missing}; {fix}")
    for name, arr in sorted(arrays, key=lambda item: item[0]):
        have = arr.nchunks_initialized
        if have != arr.nchunks:
            first = _first_missing_chunk(path / name, arr)
            raise StoreError(
                f"{path}/{name}: {what} has {have} of {arr.nchunks} chunks on disk; "
                f"{arr.nchunks - have} missing{first}; {fix}"
            )
    return group


def _first_missing_chunk(array_dir: Path, arr: zarr.Array) -> str:
    """', the first at chunk index (i, j, ...)' for a local store, '' when it cannot tell."""
    for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
        if not (array_dir / arr.metadata.encode_chunk_key(coords)).exists():
            return f", the first at chunk index {coords}"
    return ""


def check_finite(values: np.ndarray, where: str) -> None:
    """Raise StoreError naming ``where`` when ``values`` hold NaN or inf."""
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise StoreError(
            f"{where}: {bad} non-finite value(s) (NaN/inf) of {values.size}; the stage that wrote it produced "
            f"invalid numbers; re-run it ({RERUN}) and check its inputs"
        )

"""Zarr v3 stores chunked per frame, JSON files, and atomic writes (temp then rename)."""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from refiner.core.errors import repro_target, writer_target

RERUN = f"dvc repro -f -s <stage>, or -s {repro_target('<stage>', '<shard>')} for a per-shard stage"  # in messages


class StoreError(RuntimeError):
    """A store is missing, truncated or lacks an expected array."""


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk, the quota or the file size limit is full
_TEMP = re.compile(r"\.+(?P<name>.+?)(?P<tags>(?:\.(?:tmp|old)\d+)+)(?:\.mp4)?")  # .x.tmpPID, ..x.tmpPID.tmpPID


def _own_temp(path: Path) -> bool:
    """Whether ``path`` is the temporary sibling an enclosing :func:`atomic_path` of this process yielded."""
    return path.name.startswith(".") and path.name.endswith(f".tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path``, on error it is removed.

    Works for files and directories (Zarr stores), so a failed stage never leaves a half-written output. Entering
    removes every temporary a killed writer left in the folder (:func:`clean_stale_temps`). Given the temporary an
    enclosing ``atomic_path`` yielded, it writes into that one (temporaries never nest). A full disk (or quota, or
    file size limit) is one StoreError line naming ``path`` and the fix.
    """
    path = Path(path)
    if _own_temp(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno not in NO_ROOM:
                raise
            raise StoreError(
                f"{path}: cannot be written: {os.strerror(e.errno)} (errno {e.errno}); free space on that disk (or "
                "raise the quota or file size limit), or write the output to another disk (another folder, --out)"
            ) from e
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


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove every temporary that a killed writer left in ``folder``, whatever output it was for and however
    nested: ``.name.tmpPID``, ``.name.oldPID``, ``..name.tmpPID.tmpPID``, ``.name.tmpPID.mp4``.

    A writer killed between its two renames leaves the previous output as ``.name.oldPID`` and no ``name``:
    that previous output is put back. Temporaries of live processes are left alone. Returns what was removed.
    """
    removed = []
    for sib in sorted(folder.glob(".*")):
        m = _TEMP.fullmatch(sib.name)
        if m is None or any(_alive(int(pid)) for pid in re.findall(r"\d+", m["tags"])):
            continue
        target = folder / m["name"]
        if m["tags"].startswith(".old") and m["tags"].count(".") == 1 and not target.exists():
            os.replace(sib, target)
            continue
        _remove(sib)
        removed.append(sib)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        for _ in range(20):  # after a failed write, Zarr's other chunk writes may still land in it for a moment
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                return
            time.sleep(0.05)
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def remove_stale_folders(parents: tuple[Path, ...], names: set[str]) -> list[str]:
    """Remove the sub-folders of ``parents`` named for none of ``names`` (clips taken out of a stage's part of the
    corpus); folders whose name starts with a dot stay. Returns the removed names, sorted."""
    gone = set()
    for parent in parents:
        for d in sorted(parent.iterdir()) if parent.is_dir() else []:
            if d.is_dir() and not d.name.startswith(".") and d.name not in names:
                shutil.rmtree(d)
                gone.add(d.name)
    return sorted(gone)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically with stable formatting (DVC metrics and manifests)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts) as CSV atomically (DVC plots): a column for every key in order of first appearance, empty
    where a row lacks it (a clip without a figure)."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
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


def rerun_hint(path: Path) -> str:
    """How to rebuild the output ``path``: its stage's ``dvc repro`` target when a dvc.yaml lists it, else delete it
    and run again."""
    target = writer_target(path)
    if target is not None:
        return f"re-run the stage that writes it: dvc repro -f -s {target}"
    return f"delete {path} and re-run what wrote it (a stage: {RERUN}; refiner-video rebuilds its cache)"


class CheckedArray:
    """A Zarr array read through :func:`open_group`: a chunk that cannot be decoded (a truncated or corrupt chunk
    file) is one StoreError line naming the store, the array, the frame and the fix. All else is the array's."""

    def __init__(self, array: zarr.Array, store: Path, name: str) -> None:
        self._array, self._store, self._name = array, store, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._array, attr)

    def __len__(self) -> int:
        return len(self._array)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._array[key]
        except (RuntimeError, ValueError) as e:  # what the codecs raise on bytes they cannot decode
            t = self._undecodable_frame(key)
            if t is None:
                raise
            chunk = self._array.metadata.encode_chunk_key((t,) + (0,) * (self._array.ndim - 1))
            raise StoreError(
                f"{self._store}/{self._name}: frame {t} cannot be decoded ({e}): its chunk file {chunk} is "
                f"truncated or corrupt; {rerun_hint(self._store)}"
            ) from e

    def _undecodable_frame(self, key: Any) -> int | None:
        """The first frame (index along the first axis) of ``key`` whose chunk does not decode, else None."""
        first = key[0] if isinstance(key, tuple) and key else key
        frames = range(self._array.shape[0]) if self._array.ndim else range(0)
        if isinstance(first, (int, np.integer, slice)):
            frames = frames[first] if isinstance(first, slice) else [int(first) % max(len(frames), 1)]
        for t in frames:
            try:
                self._array[t]
            except (RuntimeError, ValueError):
                return t
        return None


class CheckedGroup:
    """A Zarr group opened by :func:`open_group`: its arrays come as :class:`CheckedArray`. All else is the group's."""

    def __init__(self, group: zarr.Group, path: Path, prefix: str = "") -> None:
        self._group, self._path, self._prefix = group, path, prefix

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._group, attr)

    def __contains__(self, name: str) -> bool:
        return name in self._group

    def __iter__(self) -> Iterator[str]:
        return iter(self._group)

    def __getitem__(self, name: str) -> Any:
        node = self._group[name]
        if isinstance(node, zarr.Group):
            return CheckedGroup(node, self._path, f"{self._prefix}{name}/")
        return CheckedArray(node, self._path, f"{self._prefix}{name}")


def open_group(path: str | Path, required: tuple[str, ...] = (), what: str = "store") -> CheckedGroup:
    """Open an existing Zarr group read-only; ``required`` arrays must exist and every array must be complete.
    Reads of its arrays name the store, array and frame of a chunk that cannot be decoded (:class:`CheckedArray`)."""
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
    return CheckedGroup(group, path)


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

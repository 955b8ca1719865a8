"""refiner-video's ``--out``: it holds exactly the last successful run's outputs, listed in its ``outputs.json``.

A run writes into a temporary sibling of the folder, and the whole folder is replaced only when the run succeeds
(:func:`refiner.core.store.atomic_path`): a failed or killed run leaves the previous outputs as they were, and no output
of an earlier run (an old stereo video, frames of an export no longer asked for) survives a new one. As the whole
folder is replaced, a folder that holds anything but a previous run's outputs is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from refiner.core.store import atomic_path

LISTING = "outputs.json"


def check_out(out: Path) -> None:
    """One line unless ``out`` is new, empty, or a previous run's output folder (it has ``outputs.json``)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: is a file; pass a folder (new, empty, or an earlier --out)")
    if out.is_dir() and any(out.iterdir()) and not (out / LISTING).is_file():
        raise FileExistsError(
            f"--out {out}: holds files that refiner-video did not write (no {LISTING}), and the whole folder is "
            "replaced by each run; pass a new or empty folder"
        )


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """A new empty temporary folder that replaces ``out`` when the block succeeds (removed when it fails)."""
    check_out(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        yield tmp


def listing(tmp: Path, out: Path) -> tuple[dict[str, str], dict[str, int]]:
    """(every top-level entry of the run's folder under its final path, its size in bytes)."""
    paths, sizes = {}, {}
    for p in sorted(tmp.iterdir()):
        paths[p.name] = str(out / p.name)
        sizes[p.name] = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return paths, sizes

"""The ground-truth store ``refiner-video --gt`` reads, and its check (one line naming the store and the fix).

A GT store is a Zarr v3 group (a folder with ``zarr.json``) describing the same frames as the video, at the
video's resolution, before any ``--stride``:

- ``depth`` (T, H, W) float32, z-depth in metres along the camera axis, 0 = no ground truth at that pixel;
- optional ``poses`` (T, 4, 4) float64 camera-to-world (OpenCV axes: x right, y down, z forward);
- optional ``moving_mask`` (T, H, W) uint8, 1 where something moves independently of the camera;
- optional ``depth_right``, ``rgb_right``: a rendered right eye (the synthetic clips have them).

``refiner.data.synth.write_clip`` writes such a store. Write one from NumPy with
``g = zarr.open_group("gt.zarr", mode="w", zarr_format=3); g.create_array("depth", data=depth)``.
"""

from __future__ import annotations

from pathlib import Path

import zarr

FORMAT = "a Zarr v3 group with depth (T, H, W) float32 metres (0 = none), optional poses (T, 4, 4), moving_mask"
OPTIONAL = {"poses": lambda s, t: s == (t, 4, 4), "moving_mask": lambda s, t: len(s) == 3 and s[0] == t}


def check_gt_store(path: Path) -> None:
    """Fail with one line naming ``--gt path``, what is wrong and the format, unless it is a readable GT store."""
    fix = f"--gt must be {FORMAT} (README, 'The GT store')"
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"--gt {path}: not a Zarr v3 store (no zarr.json there); {fix}")
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        arrays = {name: node for name, node in group.members() if isinstance(node, zarr.Array)}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--gt {path}: unreadable Zarr metadata ({e}); {fix}") from e
    depth = arrays.get("depth")
    if depth is None or depth.ndim != 3 or depth.dtype.kind != "f":
        found = "no array 'depth'" if depth is None else f"depth of shape {depth.shape} and type {depth.dtype}"
        raise ValueError(f"--gt {path}: {found}; {fix}")
    for name, ok in OPTIONAL.items():
        if name in arrays and not ok(arrays[name].shape, depth.shape[0]):
            raise ValueError(f"--gt {path}: {name} has shape {arrays[name].shape}; {fix}")
    for name, arr in sorted(arrays.items()):  # decode refuses a store with missing chunks
        missing = arr.nchunks - arr.nchunks_initialized
        if missing:
            raise ValueError(
                f"--gt {path}: {name} lacks {missing} of its {arr.nchunks} chunks; write the store again with every "
                "chunk, even all-zero ones (zarr: config={'write_empty_chunks': True})"
            )

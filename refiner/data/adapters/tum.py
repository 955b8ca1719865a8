"""TUM RGB-D sequences: associated RGB/depth pairs, Freiburg intrinsics and ground-truth poses.

Expected folder (as extracted from the data set's archive)::

    rgbd_dataset_freiburg1_xyz/
        rgb.txt  depth.txt       # "timestamp filename" per line, '#' comments
        rgb/*.png  depth/*.png   # depth: uint16 PNG, metres * 5000, 0 = no measurement
        groundtruth.txt          # optional: "timestamp tx ty tz qx qy qz qw", camera-to-world

The camera follows the sequence name (freiburg1/2/3); lens distortion is not modelled.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refiner.data.adapters.images import read_image, require_file
from refiner.data.ingest import Frame, resolve_intrinsics, write_clip_store

DEPTH_SCALE = 5000.0  # depth PNG units per metre
MAX_DT = 0.02  # seconds; largest timestamp gap accepted when pairing streams
FREIBURG_SIZE = (640, 480)
FREIBURG = {  # fx, fy, cx, cy of the colour camera, pixels of the 640 x 480 images
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}


def read_list(path: Path, n_fields: int) -> tuple[np.ndarray, list[list[str]]]:
    """Timestamps and the ``n_fields`` fields after them, per line of a TUM list (rgb.txt, groundtruth.txt), in time
    order: a list out of order is sorted (with one warning), a repeated timestamp is an error naming both lines."""
    stamps, rows, lines = _list_lines(path, n_fields)
    order = np.argsort(stamps, kind="stable")
    repeated = np.flatnonzero(np.diff(stamps[order]) == 0)
    if len(repeated):
        first, second = sorted((lines[order[repeated[0]]], lines[order[repeated[0] + 1]]))
        raise ValueError(
            f"{path}:{second}: timestamp {stamps[order[repeated[0]]]:.6f} repeats line {first}; every frame needs its "
            "own timestamp: remove the duplicate line or correct its timestamp"
        )
    if (order != np.arange(len(order))).any():
        warnings.warn(f"{path}: lines are not in time order; they are read sorted by timestamp", stacklevel=2)
    return stamps[order], [rows[i] for i in order]


def _list_lines(path: Path, n_fields: int) -> tuple[np.ndarray, list[list[str]], list[int]]:
    """Timestamps, fields and line numbers of a TUM list's entries, in file order."""
    require_file(path, "TUM list file")
    stamps, rows, numbers = [], [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            stamps.append(float(fields[0]))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: expected 'timestamp ...', got {line!r}") from e
        if len(fields) != n_fields + 1:
            raise ValueError(f"{path}:{n}: expected a timestamp and {n_fields} field(s), got {line!r}")
        rows.append(fields[1:])
        numbers.append(n)
    return np.asarray(stamps, dtype=np.float64), rows, numbers


def associate(t_query: np.ndarray, t_ref: np.ndarray, max_dt: float = MAX_DT) -> np.ndarray:
    """Index of the nearest ``t_ref`` stamp for each ``t_query`` stamp, or -1 where none is within ``max_dt``."""
    if len(t_ref) == 0:
        return np.full(len(t_query), -1)
    order = np.argsort(t_ref)
    ref = t_ref[order]
    right = np.clip(np.searchsorted(ref, t_query), 1, len(ref) - 1) if len(ref) > 1 else np.zeros(len(t_query), int)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(ref[left] - t_query) <= np.abs(ref[right] - t_query), left, right)
    idx = order[pick]
    return np.where(np.abs(t_ref[idx] - t_query) <= max_dt, idx, -1)


def pose_from_tum(fields: list[str], where: str) -> np.ndarray:
    """Camera-to-world 4x4 from 'tx ty tz qx qy qz qw' (Hamilton unit quaternion, scalar last)."""
    try:
        tx, ty, tz, qx, qy, qz, qw = map(float, fields)
    except ValueError as e:
        raise ValueError(f"{where}: a pose needs 7 numbers 'tx ty tz qx qy qz qw', got {fields}") from e
    q = np.array([qw, qx, qy, qz])
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-8:
        raise ValueError(f"{where}: quaternion ({qx}, {qy}, {qz}, {qw}) has zero or non-finite norm")
    w, x, y, z = q / norm
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = [tx, ty, tz]
    return T


def freiburg_intrinsics(name: str) -> np.ndarray:
    """K of the Freiburg camera named in a sequence name (e.g. rgbd_dataset_freiburg2_desk)."""
    hits = [k for k in FREIBURG if k in name.lower()]
    if len(hits) != 1:
        raise ValueError(
            f"{name}: cannot tell the camera (freiburg1/2/3) from the folder name; "
            "rename the folder or pass the intrinsics override (corpus.clips.<name>.camera: {fx, fy, cx, cy})"
        )
    fx, fy, cx, cy = FREIBURG[hits[0]]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


@dataclass
class Pairing:
    """The RGB frames kept (every ``stride``-th with a partner) and each one's depth and pose rows."""

    kept: np.ndarray  # indices into rgb.txt
    dropped: int  # RGB frames without a depth (or pose) partner
    t_rgb: np.ndarray
    rgb_rows: list[list[str]]
    depth_rows: list[list[str]]
    d_idx: np.ndarray  # per RGB frame: its depth row
    g_idx: np.ndarray | None  # per RGB frame: its groundtruth row (None without groundtruth.txt)
    t_gt: np.ndarray | None
    gt_rows: list[list[str]] | None


def pair_frames(src: Path, max_dt: float, stride: int) -> Pairing:
    """Pair each RGB frame with the nearest depth (and pose, when groundtruth.txt exists) within ``max_dt`` s."""
    t_rgb, rgb_rows = read_list(src / "rgb.txt", 1)
    t_depth, depth_rows = read_list(src / "depth.txt", 1)
    d_idx = associate(t_rgb, t_depth, max_dt)
    keep = d_idx >= 0
    g_idx = t_gt = gt_rows = None
    if (src / "groundtruth.txt").is_file():
        t_gt, gt_rows = read_list(src / "groundtruth.txt", 7)
        g_idx = associate(t_rgb, t_gt, max_dt)
        keep &= g_idx >= 0
    kept = np.flatnonzero(keep)[::stride]
    if len(kept) == 0:
        raise ValueError(
            f"{src}: no RGB frame has a depth (and pose) within {max_dt} s; "
            "check rgb.txt, depth.txt and groundtruth.txt list the sequence's files"
        )
    return Pairing(kept, int((~keep).sum()), t_rgb, rgb_rows, depth_rows, d_idx, g_idx, t_gt, gt_rows)


def tum_intrinsics(src: Path, width: int, height: int, intrinsics: str | Path | dict | None) -> np.ndarray:
    """The override when given, else the Freiburg camera's (which fit only its 640x480 images)."""
    if intrinsics is not None:
        return resolve_intrinsics(intrinsics, width, height, str(src))
    if (width, height) != FREIBURG_SIZE:
        raise ValueError(
            f"{src}: images are {width}x{height} but the Freiburg intrinsics are for "
            f"{FREIBURG_SIZE[0]}x{FREIBURG_SIZE[1]}; for resized images give the clip's camera "
            "(corpus.clips.<name>.camera: {fx, fy, cx, cy})"
        )
    return freiburg_intrinsics(src.name)


def tum_frames(src: Path, pairs: Pairing, K: np.ndarray) -> Iterator[Frame]:
    """The kept frames: RGB, K, depth in metres (PNG / 5000) and the camera-to-world pose (or None)."""
    for i in pairs.kept:
        rgb_file, depth_file = src / pairs.rgb_rows[i][0], src / pairs.depth_rows[pairs.d_idx[i]][0]
        raw = read_image(depth_file, "TUM depth PNG")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise ValueError(f"{depth_file}: TUM depth must be a 16-bit single-channel PNG, got {raw.dtype}")
        pose = None
        if pairs.g_idx is not None:
            g = pairs.g_idx[i]
            pose = pose_from_tum(pairs.gt_rows[g], f"{src / 'groundtruth.txt'}:{pairs.t_gt[g]}")
        rgb = read_image(rgb_file, "TUM RGB image")
        yield Frame(rgb, K, raw.astype(np.float32) / DEPTH_SCALE, pose, where=f"{rgb_file} + {depth_file}")


def tum_rgb(attrs: Mapping[str, Any]) -> Iterator[np.ndarray]:
    """A decoded TUM clip's RGB frames at their own resolution, read again from its folder (attributes ``source``,
    ``stride``, ``max_dt``: the same pairing as decode's)."""
    src = Path(attrs["source"])
    pairs = pair_frames(src, float(attrs.get("max_dt", MAX_DT)), int(attrs.get("stride", 1)))
    for i in pairs.kept:
        yield read_image(src / pairs.rgb_rows[i][0], "TUM RGB image")


def ingest_tum(
    source: str | Path,
    out: str | Path,
    size: int,
    stride: int = 1,
    intrinsics: str | Path | dict | None = None,
    max_dt: float = MAX_DT,
    progress: bool = True,
    multiple: int = 1,
    crop: bool = False,
) -> int:
    """A TUM RGB-D sequence folder -> canonical clip store ``out`` (atomic); returns the frame count.

    Each RGB frame is paired with the nearest depth (and pose, when groundtruth.txt exists) within ``max_dt``
    seconds; frames without a partner are dropped (their count is stored as attr ``dropped_frames``).
    """
    src = Path(source)
    if not src.is_dir():
        raise FileNotFoundError(
            f"{src}: TUM sequence folder not found; point corpus.clips.<name>.source at the extracted folder"
        )
    pairs = pair_frames(src, max_dt, stride)
    h, w = read_image(src / pairs.rgb_rows[pairs.kept[0]][0], "TUM RGB image").shape[:2]
    K = tum_intrinsics(src, w, h, intrinsics)
    dt = np.median(np.diff(pairs.t_rgb[pairs.kept])) if len(pairs.kept) > 1 else 0.0
    attrs = {
        "dataset_name": "tum",
        "scene_id": src.name,
        "source": str(src),
        "stride": stride,
        "max_dt": max_dt,
        "fps": float(1.0 / dt) if dt > 0 else 0.0,
        "dropped_frames": pairs.dropped,
        "depth_units": "z-depth, metres (PNG / 5000)",
    }
    frames = tum_frames(src, pairs, K)
    return write_clip_store(out, frames, size, attrs, progress, f"tum {src.name}", None, multiple, crop)

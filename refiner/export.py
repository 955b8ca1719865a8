"""Exports of refined depth: per-frame .npy, 16-bit PNG and a side-by-side colour video.

16-bit PNG scale: pixel value = round(depth_m · 1000), i.e. millimetres, so the range is 0–65.535 m
with 1 mm steps; 0 means invalid (no depth) and deeper pixels saturate at 65535. Read back with
``depth_m = png.astype(float32) / 1000``.

The video colours log depth with one colour range shared by all panels and all frames (chosen from
the first frame of the first panel), so flicker shows as colour changes and panels compare directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from refiner.store import atomic_path
from refiner.video import encode_mp4

PNG_DEPTH_SCALE = 1000.0  # PNG value per metre (millimetres)


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """Metric depth (H, W) → uint16 millimetres; invalid (≤ 0 or non-finite) → 0, beyond 65.535 m saturates."""
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    return np.clip(np.round(d * PNG_DEPTH_SCALE), 0, 65535).astype(np.uint16)


def read_png16(path: str | Path) -> np.ndarray:
    """Read a depth PNG written by :func:`write_png16` back to metres (float32)."""
    return np.asarray(Image.open(path), dtype=np.float32) / PNG_DEPTH_SCALE


def export_frames(depth: Sequence[np.ndarray], out_dir: str | Path, npy: bool, png: bool) -> int:
    """Write ``depth_00000.npy`` / ``depth_00000.png`` per frame into ``out_dir`` (replaced atomically, with a
    README.txt stating units and scale); returns the number of frames written."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "README.txt").write_text(
            "Refined z-depth per frame. depth_*.npy: float32 metres, 0 = invalid. "
            f"depth_*.png: uint16, metres = value / {PNG_DEPTH_SCALE:g} (millimetres), 0 = invalid.\n"
            f"Written here: npy={npy}, png={png} (params.yaml infer.export_npy / infer.export_png16).\n"
        )
        for t in range(_length(depth)):
            frame = np.asarray(depth[t], dtype=np.float32)
            if npy:
                np.save(tmp / f"depth_{t:05d}.npy", frame)
            if png:
                Image.fromarray(depth_to_png16(frame)).save(tmp / f"depth_{t:05d}.png", format="PNG")
    return _length(depth) if npy or png else 0


def log_depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(lo, hi) of log depth over valid pixels (2nd–98th percentile), for a shared colour scale."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(np.log(valid), [2, 98])
    return float(lo), float(max(hi, lo + 1e-3))


def colorize(depth: np.ndarray, lo: float, hi: float, cmap: str = "turbo_r") -> np.ndarray:
    """Depth (H, W) → RGB uint8 by log depth in [lo, hi]; near is red, far is blue; invalid pixels black."""
    valid = np.isfinite(depth) & (depth > 0)
    x = np.clip((np.log(np.where(valid, depth, 1.0)) - lo) / (hi - lo), 0, 1)
    rgb = (colormaps[cmap](x)[..., :3] * 255).round().astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def _length(frames: Sequence[np.ndarray]) -> int:
    return int(frames.shape[0]) if hasattr(frames, "shape") else len(frames)  # arrays (Zarr too) or lists


def side_by_side_video(panels: Sequence[Sequence[np.ndarray]], path: str | Path, fps: int) -> int:
    """Encode panels (each a sequence of (H, W) depth frames: teacher, refined, GT...) side by side."""
    if not panels or any(_length(p) != _length(panels[0]) or _length(p) == 0 for p in panels):
        raise ValueError("side_by_side_video needs panels of equal, non-zero frame counts")
    lo, hi = log_depth_range(np.asarray(panels[0][0]))

    def frames() -> Iterator[np.ndarray]:
        for t in range(_length(panels[0])):
            row = np.concatenate([colorize(np.asarray(p[t]), lo, hi) for p in panels], axis=1)
            yield row[: row.shape[0] // 2 * 2, : row.shape[1] // 2 * 2]

    return encode_mp4(frames(), path, fps)

"""Exports of refined depth: per-frame .npy and 16-bit PNG, and the log-depth colour map of every depth video.

16-bit PNG (:func:`depth_to_png16`): a LOG encoding over [min_m, max_m] (default 0.05–100 m, the refiner's
``infer.min_depth_m``/``max_depth_m``), stored in the PNG's text chunks ``depth_encoding``, ``depth_min_m`` and
``depth_max_m`` so a file decodes on its own:

    value 0 = invalid (no depth); value v in 1..65535: depth_m = min_m · (max_m / min_m) ** ((v − 1) / 65534)

Every step is the same relative size, ln(max_m / min_m) / 65534 (1.16e-4 for 0.05–100 m), so the rounding error
is at most half a step: |Δd| / d ≤ 5.8e-5 (0.006 %: 6 µm at 0.1 m, 0.6 mm at 10 m, 5.8 mm at 100 m). Depth outside
[min_m, max_m] is clipped to it with a warning, never silently. :func:`read_png16` decodes it back to metres
(and reads the older uint16 millimetre PNGs, which have no ``depth_encoding`` chunk).

:func:`colorize` colours log depth on a given range; the videos (:mod:`refiner.visual.videos`) share one range over
all panels and frames, so flicker shows as colour changes and panels compare directly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from refiner.core.store import atomic_path

PNG_MIN_M, PNG_MAX_M = 0.05, 100.0  # default range of the 16-bit PNG's log encoding, metres
PNG_STEPS = 65534  # values 1..65535 cover [min_m, max_m]; 0 = invalid
PNG_ENCODING = "log-uint16: depth_m = min_m * (max_m / min_m) ** ((v - 1) / 65534), v = 0 invalid"
LEGACY_PNG_SCALE = 1000.0  # PNGs without a depth_encoding chunk: uint16 millimetres
PNG_LEVEL = 1  # zlib level: 13 ms a 640x360 frame and 10% larger than level 6 (58 ms), which made writes the bottleneck


def png16_precision(min_m: float = PNG_MIN_M, max_m: float = PNG_MAX_M) -> float:
    """Largest relative rounding error |Δd| / d of the PNG encoding over [min_m, max_m] (half a step)."""
    return float(np.expm1(0.5 * np.log(max_m / min_m) / PNG_STEPS))


def depth_to_png16(depth: np.ndarray, min_m: float = PNG_MIN_M, max_m: float = PNG_MAX_M) -> np.ndarray:
    """Metric depth (H, W) → uint16 by the log encoding (module docstring); invalid (≤ 0, non-finite) → 0.

    Valid depth outside [min_m, max_m] is clipped to it and a warning says how many pixels were."""
    if not 0 < min_m < max_m:
        raise ValueError(f"PNG depth range [{min_m}, {max_m}] m is invalid; need 0 < min_m < max_m")
    valid = np.isfinite(depth) & (depth > 0)
    d = np.where(valid, depth, min_m).astype(np.float64)
    outside = int((valid & ((d < min_m) | (d > max_m))).sum())
    if outside:
        warnings.warn(f"{outside} pixel(s) outside the PNG depth range [{min_m}, {max_m}] m were clipped", stacklevel=2)
    x = np.log(np.clip(d, min_m, max_m) / min_m) / np.log(max_m / min_m)
    return np.where(valid, 1 + np.round(x * PNG_STEPS), 0).astype(np.uint16)


def png16_to_depth(value: np.ndarray, min_m: float = PNG_MIN_M, max_m: float = PNG_MAX_M) -> np.ndarray:
    """The inverse of :func:`depth_to_png16`: uint16 → float32 metres, 0 stays 0."""
    v = value.astype(np.float64)
    return np.where(v > 0, min_m * (max_m / min_m) ** ((v - 1) / PNG_STEPS), 0.0).astype(np.float32)


def write_png16(path: str | Path, depth: np.ndarray, min_m: float = PNG_MIN_M, max_m: float = PNG_MAX_M) -> None:
    """One depth frame as a 16-bit PNG carrying its encoding in text chunks."""
    info = PngInfo()
    info.add_text("depth_encoding", PNG_ENCODING)
    info.add_text("depth_min_m", repr(float(min_m)))
    info.add_text("depth_max_m", repr(float(max_m)))
    Image.fromarray(depth_to_png16(depth, min_m, max_m)).save(
        path, format="PNG", pnginfo=info, compress_level=PNG_LEVEL
    )


def read_png16(path: str | Path) -> np.ndarray:
    """A depth PNG written by :func:`write_png16` (or an old millimetre PNG) back to metres (float32)."""
    with Image.open(path) as im:
        text, value = dict(getattr(im, "text", {})), np.asarray(im)
    if "depth_encoding" not in text:
        return value.astype(np.float32) / LEGACY_PNG_SCALE
    return png16_to_depth(value, float(text["depth_min_m"]), float(text["depth_max_m"]))


def export_frames(
    depth: Sequence[np.ndarray],
    out_dir: str | Path,
    npy: bool,
    png: bool,
    png_range: tuple[float, float] = (PNG_MIN_M, PNG_MAX_M),
) -> int:
    """Write ``depth_00000.npy`` / ``depth_00000.png`` per frame into ``out_dir`` (replaced atomically, with a
    README.txt stating units and encoding); returns the number of frames written."""
    with atomic_path(out_dir) as tmp:
        frames = ((t, depth[t]) for t in range(_length(depth)))
        n = write_frame_files(frames, tmp, npy, png, png_range)
    return n if npy or png else 0


def write_frame_files(
    frames: Iterable[tuple[int, np.ndarray]],
    folder: Path,
    npy: bool,
    png: bool,
    png_range: tuple[float, float] = (PNG_MIN_M, PNG_MAX_M),
) -> int:
    """Create ``folder`` with its README.txt and write each (t, depth) as it comes (streaming: one frame in memory);
    returns the number of frames."""
    lo, hi = png_range
    folder.mkdir()
    (folder / "README.txt").write_text(
        "Refined z-depth per frame at the source video's resolution. depth_*.npy: float32 metres, 0 = invalid.\n"
        f"depth_*.png: uint16, log encoding over [{lo:g}, {hi:g}] m (also in each PNG's text chunks): "
        f"0 = invalid, else depth_m = {lo:g} * ({hi:g} / {lo:g}) ** ((v - 1) / 65534); relative precision "
        f"{png16_precision(lo, hi):.1e}. Read with refiner.visual.export.read_png16.\n"
        f"Written here: npy={npy}, png={png} (params.yaml infer.export_npy / infer.export_png16).\n"
    )
    count = 0
    for t, depth in frames:
        frame = np.asarray(depth, dtype=np.float32)
        if npy:
            np.save(folder / f"depth_{t:05d}.npy", frame)
        if png:
            write_png16(folder / f"depth_{t:05d}.png", frame, lo, hi)
        count += 1
    return count


def log_depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(lo, hi) of log depth over valid pixels (2nd–98th percentile), for a shared colour scale."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(np.log(valid), [2, 98])
    return float(lo), float(max(hi, lo + 1e-3))


@functools.cache
def _colour_table(cmap: str) -> np.ndarray:
    """The colour map's N entries as RGB uint8 (N, 3): what ``colormaps[cmap](x)`` returns, on the 0–255 scale."""
    from matplotlib import colormaps  # here: only the review video and figures need it (it takes 0.2 s to import)

    table = colormaps[cmap]
    return (table(np.arange(table.N))[:, :3] * 255).round().astype(np.uint8)


def colorize(depth: np.ndarray, lo: float, hi: float, cmap: str = "turbo_r") -> np.ndarray:
    """Depth (H, W) → RGB uint8 by log depth in [lo, hi]; near is red, far is blue; invalid pixels black.

    Looks the colours up in a uint8 table indexed as matplotlib indexes its own (x·N truncated, x = 1 → N − 1):
    the same pixels as calling the colour map, without its float RGBA array."""
    valid = np.isfinite(depth) & (depth > 0)
    x = np.clip((np.log(np.where(valid, depth, 1.0)) - lo) / (hi - lo), 0, 1)
    table = _colour_table(cmap)
    index = x * len(table)
    index[index == len(table)] = len(table) - 1
    rgb = table[index.astype(np.intp)]
    rgb[~valid] = 0
    return rgb


def _length(frames: Sequence[np.ndarray]) -> int:
    return int(frames.shape[0]) if hasattr(frames, "shape") else len(frames)  # arrays (Zarr too) or lists

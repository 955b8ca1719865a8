"""Every video the project writes for people to watch, named ``write_<what>_video``; each encodes through
:func:`refiner.core.video.encode_mp4` (atomic, H.264) and returns what it wrote.

- :func:`write_panels_video`: frames of panels side by side, RGB as it is and depth coloured by log depth on one
  range for every panel and frame (:func:`refiner.visual.export.colorize`), so flicker shows as colour changes:
  the review video (teacher | refined | GT) and :func:`write_teacher_video` (RGB | teacher | GT).
- :func:`write_stereo_video`: stereo for VR players, the right eye synthesised from each left frame and its metric
  depth (:mod:`refiner.geometry.vr_stereo`), packed in the player's layout; the test stage's stereo check video and
  ``refiner-video --stereo``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from refiner.core.store import open_group
from refiner.core.video import encode_mp4
from refiner.geometry.convergence import AutoConvergence
from refiner.geometry.vr_stereo import StereoSettings, pack, right_eye
from refiner.visual.export import colorize, log_depth_range


def panel_row(panels: Sequence[np.ndarray], lo: float, hi: float) -> np.ndarray:
    """Panels side by side: an RGB image (H, W, 3) uint8 as it is, a depth (H, W) coloured on the log range
    [lo, hi]; cut to even sizes for H.264."""
    row = np.concatenate([p if p.ndim == 3 else colorize(np.asarray(p), lo, hi) for p in panels], axis=1)
    return row[: row.shape[0] // 2 * 2, : row.shape[1] // 2 * 2]


def write_panels_video(
    rows: Iterable[Sequence[np.ndarray]], path: str | Path, fps: float, depth_range: tuple[float, float]
) -> int:
    """An mp4 of ``rows`` (each the panels of one frame, :func:`panel_row`), depth coloured on the log range
    ``depth_range`` (e.g. :func:`refiner.visual.export.log_depth_range` of the first depth frame); returns the count."""
    lo, hi = depth_range
    return encode_mp4((panel_row([np.asarray(p) for p in row], lo, hi) for row in rows), path, fps)


def write_teacher_video(decoded: str | Path, teacher: str | Path, out: str | Path, fps: float = 12) -> int:
    """RGB | teacher depth (| GT) of every frame of a decoded clip store and its teacher store (the viewer's mp4)."""
    dec, tea = open_group(decoded, ("rgb",)), open_group(teacher, ("depth",))
    gt = [dec["depth_gt"]] if "depth_gt" in dec else []
    rows = ([dec["rgb"][t], tea["depth"][t], *(g[t] for g in gt)] for t in range(dec["rgb"].shape[0]))
    return write_panels_video(rows, out, fps, log_depth_range(np.asarray(tea["depth"][0])))


def write_stereo_video(
    path: str | Path,
    left: Iterable[np.ndarray],
    depth: Iterable[tuple[int, np.ndarray]],
    fx: np.ndarray,
    s: StereoSettings,
    fps: float,
    cuts: Iterable[int] = (),
) -> dict:
    """The stereo mp4 of the left frames and their ``(t, depth)`` (the same size), fx[t] in those frames' pixels.
    ``s.convergence_m`` None follows :class:`refiner.geometry.convergence.AutoConvergence`, restarted at ``cuts``.
    Returns the frame count and the convergence distances used (min, median, max)."""
    auto, used, starts = AutoConvergence(fps), [], set(cuts)

    def frames() -> Iterable[np.ndarray]:
        for (t, d), image in zip(depth, left, strict=False):
            if image.shape[:2] != d.shape:
                raise ValueError(f"source frame {t} is {image.shape[:2]}, its depth {d.shape}")
            c = auto.update(d, t in starts) if s.convergence_m is None else s.convergence_m
            used.append(c)
            yield pack(image, right_eye(image, d, float(fx[t]), s, c), s.format)

    count = encode_mp4(frames(), path, fps)
    return {"frames": count, "convergence_m": [float(np.min(used)), float(np.median(used)), float(np.max(used))]}

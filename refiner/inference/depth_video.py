"""A 16-bit lossless depth video: FFV1, pixel format gray16le, in Matroska (``.mkv``), one file for the whole clip.

Each frame holds the same log encoding as the 16-bit PNGs (:mod:`refiner.visual.export`): value 0 = invalid, else
depth_m = min_m · (max_m / min_m) ** ((v − 1) / 65534), so the rounding error is at most
:func:`refiner.visual.export.png16_precision` of the depth (5.8e-5 over 0.05–100 m). FFV1 is lossless, so the values
read back are the values written. The encoding and its range are in the file's tags ``DEPTH_ENCODING``,
``DEPTH_MIN_M``, ``DEPTH_MAX_M`` (:func:`read_depth_video` decodes with them). Larger values are farther: tools
that expect near = white (normalised inverse depth) must invert it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from refiner.core.video import VideoError, encode_video, video_rate
from refiner.visual.export import PNG_ENCODING, PNG_MAX_M, PNG_MIN_M, depth_to_png16, png16_to_depth


def encode_depth_video(
    frames: Iterable[np.ndarray], path: str | Path, fps: float, min_m: float = PNG_MIN_M, max_m: float = PNG_MAX_M
) -> int:
    """Depth frames (H, W) in metres → FFV1 gray16 Matroska at ``path`` (atomic); returns the frame count."""

    def ffv1(container: av.container.OutputContainer, first: np.ndarray) -> av.video.stream.VideoStream:
        stream = container.add_stream("ffv1", rate=video_rate(fps))
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], "gray16le"
        return stream

    values = (depth_to_png16(np.asarray(d, dtype=np.float32), min_m, max_m) for d in frames)
    tags = {"DEPTH_ENCODING": PNG_ENCODING, "DEPTH_MIN_M": repr(float(min_m)), "DEPTH_MAX_M": repr(float(max_m))}
    return encode_video(values, path, "matroska", "gray16le", ffv1, tags)


def read_depth_video(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a depth video written by :func:`encode_depth_video`, in metres (float32, 0 = invalid)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: depth video not found")
    with av.open(str(path)) as container:
        tags = {k.upper(): v for k, v in container.metadata.items()}
        if "DEPTH_ENCODING" not in tags:
            raise VideoError(f"{path}: no DEPTH_ENCODING tag; not a depth video written by refiner-video")
        lo, hi = float(tags["DEPTH_MIN_M"]), float(tags["DEPTH_MAX_M"])
        for frame in container.decode(video=0):
            yield png16_to_depth(frame.to_ndarray(), lo, hi)

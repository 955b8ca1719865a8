"""mp4 encode/decode with PyAV (libx264), with clear errors for missing or corrupt files."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from refiner.core.store import atomic_path


class VideoError(RuntimeError):
    """A video file is missing, unreadable or holds no frames."""


def video_rate(fps: float) -> Fraction:
    """A frame rate as the container's rational: the nearest fraction with a denominator up to 1001 (so 14.99992,
    a 15 Hz rate measured from timestamps, is 15, and 29.97 stays 29.97), never truncated to an integer."""
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"frame rate {fps!r} is invalid; it must be a positive number of frames per second")
    return Fraction(fps).limit_denominator(1001)


def encode_video(
    frames: Iterable[np.ndarray],
    path: str | Path,
    container_format: str,
    pix_fmt: str,
    add_stream: Callable[[av.container.OutputContainer, np.ndarray], av.video.stream.VideoStream],
    metadata: dict[str, str] | None = None,
) -> int:
    """Encode frames (arrays of ``pix_fmt``) into one video stream of a new file at ``path``, atomically; the stream
    is ``add_stream(container, first_frame)``, ``metadata`` the container's tags; returns the frame count."""
    path, count = Path(path), 0
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=container_format) as container:
        container.metadata.update(metadata or {})
        stream = None
        for frame in frames:
            stream = stream or add_stream(container, frame)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format=pix_fmt)))
            count += 1
        if stream is None:
            raise VideoError(f"{path}: no frames to encode")
        container.mux(stream.encode())
    return count


def encode_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 12) -> int:
    """Encode RGB uint8 frames (H, W, 3) to an H.264 mp4 atomically at ``fps`` (:func:`video_rate`); returns the
    frame count."""

    def checked() -> Iterator[np.ndarray]:
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise VideoError(f"{path}: frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            yield frame

    def h264(container: av.container.OutputContainer, first: np.ndarray) -> av.video.stream.VideoStream:
        h, w = first.shape[:2]
        if h % 2 or w % 2:
            raise VideoError(f"{path}: H.264 needs even frame sizes, got {w}x{h}")
        stream = container.add_stream("libx264", rate=video_rate(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # mbtree off: its AVX-512 code gives different bytes for the same frames from run to run
        # (seen on an AVX-512 CPU), which would break DVC's content hashes of every downstream stage
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        return stream

    return encode_video(checked(), path, "mp4", "rgb24", h264)


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: video not found; check corpus.clips.<name>.source in params.yaml")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e}); re-encode it, e.g. to H.264 mp4") from e
    if not container.streams.video:
        container.close()
        raise VideoError(
            f"{path}: holds no video stream (no frames); point corpus.clips.<name>.source at a file with video"
        )
    return container


def video_info(path: str | Path) -> dict[str, float | int]:
    """Width, height and frame rate of the first video stream."""
    with _open(Path(path)) as container:
        s = container.streams.video[0]
        rate = float(s.average_rate) if s.average_rate else 0.0
        return {"width": s.codec_context.width, "height": s.codec_context.height, "fps": rate}


def decode_frames(path: str | Path, stride: int = 1) -> Iterator[np.ndarray]:
    """Yield every ``stride``-th frame as RGB uint8 (H, W, 3); raises VideoError on corrupt data or no frames."""
    path = Path(path)
    count = 0
    with _open(path) as container:
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if i % stride == 0:
                    count += 1
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: corrupt video after {count} frames ({e}); re-encode or replace the file") from e
    if count == 0:
        raise VideoError(f"{path}: no decodable frames; the file is empty or corrupt")

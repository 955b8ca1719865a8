"""The writers of refined frames, each a consumer for :func:`refiner.core.streaming.fan_out` (a function of an
iterable).

Items of the canonical stream are ``(t, refined, teacher)`` on the canonical grid; :func:`at_source` maps each
refined frame once to the source resolution (:func:`refiner.geometry.camera.depth_to_source`, edge-aware) and hands
``(t, depth)`` to the source-resolution writers: per-frame files, the teacher | refined (| GT) review video and the
whole-clip Zarr store; refiner-video adds the 16-bit depth video
(:func:`refiner.inference.depth_video.encode_depth_video`) and the stereo video
(:func:`refiner.visual.videos.write_stereo_video`). Each keeps one frame in memory. The files go into folders that
are themselves replaced atomically (the test stage's temporaries, refiner-video's ``--out``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refiner.core.store import create_group, frames_array, small_array
from refiner.core.streaming import Streams, fan_out
from refiner.data.clip import Clip
from refiner.geometry.camera import depth_to_source
from refiner.geometry.canonical import CanonicalMap
from refiner.inference.source_res import EDGE_REL, SourceFrames
from refiner.visual.export import log_depth_range
from refiner.visual.videos import write_panels_video

Consumer = Callable[[Iterable], Any]


def canonical_store(out: Path, frames: int, height: int, width: int) -> Consumer:
    """Writes ``(t, refined, teacher)`` into the Zarr group ``out``: ``depth`` (refined) and ``delta`` (refined −
    teacher), (T, H, W) float32 metres; returns the frame count."""

    def write(items: Iterable) -> int:
        group = create_group(out, {"description": "refined z-depth in metres (teacher + blended residual)"})
        arrays = {n: frames_array(group, n, (frames, height, width), np.float32) for n in ("depth", "delta")}
        count = 0
        for t, refined, base in items:
            arrays["depth"][t], arrays["delta"][t] = refined, refined - base
            count += 1
        return count

    return write


def at_source(m: CanonicalMap, consumers: dict[str, Consumer], streams: Streams | None = None) -> Consumer:
    """Maps each refined frame of the canonical stream to the source resolution and fans ``(t, depth)`` out to
    ``consumers``; returns their results by name."""

    def run(items: Iterable) -> dict[str, Any]:
        mapped = ((t, depth_to_source(torch.from_numpy(refined), m, EDGE_REL).numpy()) for t, refined, _ in items)
        return fan_out(mapped, consumers, streams=streams)

    return run


def review_video(path: Path, clip: Clip, m: CanonicalMap) -> Consumer:
    """The teacher | refined (| GT) depth video at the source resolution, coloured on the first teacher frame's
    log range (:func:`refiner.visual.videos.write_panels_video`); returns the frame count."""
    teacher = SourceFrames(clip.tea["depth"], m)
    gt = SourceFrames(clip.dec["depth_gt"], m) if clip.has_gt else None

    def write(items: Iterable) -> int:
        rows = ([teacher[t], d, *([gt[t]] if gt else [])] for t, d in items)
        return write_panels_video(rows, path, clip.fps, log_depth_range(np.asarray(teacher[0])))

    return write


def source_store(out: Path, shape: tuple[int, int, int], K: np.ndarray, attrs: dict) -> Consumer:
    """The whole clip at source resolution as a Zarr group ``out``: ``depth`` (T, H, W) float32 metres (0 =
    invalid), one chunk per frame, and ``K`` (T, 3, 3) the source camera; returns the frame count."""

    def write(items: Iterable) -> int:
        group = create_group(out, {"units": "z-depth in metres, 0 = invalid", **attrs})
        depth = frames_array(group, "depth", shape, np.float32)
        count = 0
        for t, d in items:
            depth[t] = d
            count += 1
        small_array(group, "K", np.asarray(K, dtype=np.float64))
        return count

    return write

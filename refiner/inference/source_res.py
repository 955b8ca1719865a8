"""Outputs at the source video's resolution, through the inverse of the canonical map a clip store keeps.

Depth goes back with :func:`refiner.geometry.camera.depth_to_source` (edge-aware: bilinear only inside flat 2x2
neighbourhoods, nearest across depth edges, so metric values are never blended across an edge; invalid stays
0; pixels cropped away by a ``crop`` grid are 0) and intrinsics with
:func:`refiner.geometry.canonical.source_intrinsics`,
so every output is in the source camera's pixels: the exported K is the source camera's and stereo disparity
is d = fx_source·b/z in display pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from refiner.core.store import write_json
from refiner.core.video import decode_frames
from refiner.geometry.camera import depth_to_source, image_to_source
from refiner.geometry.canonical import CanonicalMap, identity_map, source_intrinsics
from refiner.geometry.vr_stereo import StereoSettings
from refiner.visual.videos import write_stereo_video

EDGE_REL = 0.05  # neighbours within 5% of each other count as one surface (bilinear); else nearest


def store_map(group: zarr.Group) -> CanonicalMap:
    """The canonical map of a decoded clip store (its ``canonical_map`` attribute); identity for stores without."""
    attrs = dict(group.attrs)
    if "canonical_map" in attrs:
        return CanonicalMap.from_dict(attrs["canonical_map"])
    return identity_map(*group["rgb"].shape[1:3])


class SourceFrames:
    """A lazy (T, src_height, src_width) float32 view of canonical depth frames mapped back to the source grid;
    each read maps one frame, so memory stays at one frame whatever the clip length."""

    def __init__(self, frames: Any, m: CanonicalMap, edge_rel: float | None = EDGE_REL) -> None:
        if tuple(frames.shape[1:3]) != (m.height, m.width):
            raise ValueError(f"frames {tuple(frames.shape)} are not on the {m.height}x{m.width} canonical grid")
        self.frames, self.m, self.edge_rel = frames, m, edge_rel

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.frames.shape[0]), self.m.src_height, self.m.src_width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        frame = torch.from_numpy(np.asarray(self.frames[t], dtype=np.float32))
        return depth_to_source(frame, self.m, self.edge_rel).numpy()


def source_K(group: zarr.Group) -> np.ndarray:
    """(T, 3, 3) float64 intrinsics of the source frames (the inverse map applied to the store's canonical K)."""
    return source_intrinsics(group["K"][...], store_map(group))


def write_intrinsics(path: str | Path, K: np.ndarray, width: int, height: int) -> dict:
    """The output camera as JSON (the same keys decode reads: fx, fy, cx, cy, width, height; pixels)."""
    cam = {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])}
    cam |= {"width": int(width), "height": int(height)}
    write_json(path, cam)
    return cam


def source_rgb(group: zarr.Group) -> Iterator[np.ndarray]:
    """The clip's frames at the source resolution: the source video's (at the store's stride) or a data set's images
    (:func:`refiner.data.adapters.source_images`) where still readable, else the canonical frames mapped back onto the
    source grid (:func:`refiner.geometry.camera.image_to_source`: bilinear, what a crop cut away is black)."""
    from refiner.data.adapters import source_images  # here: h5py and PIL only for a clip without its video

    attrs = dict(group.attrs)
    video = attrs.get("source_video")
    if video and Path(video).is_file():
        return decode_frames(video, int(attrs.get("stride", 1)))
    images = source_images(attrs)
    return images if images is not None else _canonical_at_source(group)


def _canonical_at_source(group: zarr.Group) -> Iterator[np.ndarray]:
    m = store_map(group)
    for t in range(group["rgb"].shape[0]):
        frame = image_to_source(torch.from_numpy(np.asarray(group["rgb"][t])).permute(2, 0, 1), m)
        yield frame.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def write_source_stereo_video(
    group: zarr.Group, depth: np.ndarray, out: str | Path, baseline_m: float, fps: float, max_frames: int | None = None
) -> int:
    """Left | right side-by-side mp4 of a clip store's frames at the source resolution, with the canonical ``depth``
    (T, H, W) mapped back: parallel eyes ``baseline_m`` apart (d = fx_source·b/z display pixels), no comfort limit
    (:func:`refiner.visual.videos.write_stereo_video`); at most ``max_frames`` frames; returns the frame count."""
    src = SourceFrames(depth, store_map(group))
    n = len(src) if max_frames is None else min(len(src), max_frames)
    eyes = StereoSettings("full-sbs", baseline_m, math.inf, None)
    frames = ((t, src[t]) for t in range(n))
    return write_stereo_video(out, source_rgb(group), frames, source_K(group)[:, 0, 0], eyes, fps)["frames"]

"""Tiny decoded + teacher stores in the pipeline's layout, for tests of the stages after decode."""

from pathlib import Path

import numpy as np
import torch

from refiner.ingest import ingest_video
from refiner.lowres import downsample, low_mapping
from refiner.store import create_group, frames_array, small_array
from refiner.synth import render_clip, write_clip


def make_stores(root: Path, frames: int = 10, size: int = 32, factor: int = 4, static_frames: int = 5, seed: int = 0):
    """(decoded store, teacher store) paths: a rendered clip and a teacher = GT with per-frame scale flicker."""
    clip = render_clip(frames, size, size, 70.0, 0.063, static_frames, seed)
    write_clip(clip, root / "synth", fps=10, crf=0, baseline_m=0.063)
    decoded = root / "decoded.zarr"
    ingest_video(
        root / "synth/clip.mp4", root / "synth/camera.json", decoded, size, gt=root / "synth/gt.zarr", progress=False
    )
    rng = np.random.default_rng(seed)
    scale = (1 + 0.04 * rng.standard_normal(frames)).astype(np.float32)
    depth = clip.depth * scale[:, None, None]
    conf = rng.uniform(0.2, 1.0, depth.shape).astype(np.float32)
    teacher = root / "teacher.zarr"
    g = create_group(teacher, {"teacher": "test-flicker", "low_res_factor": factor, "synthetic_stand_in": True})
    for name, data in (("depth", depth), ("uncertainty", 1 - conf), ("confidence", conf)):
        frames_array(g, name, data.shape, np.float32)[...] = data
        low = downsample(torch.from_numpy(data), factor).numpy()
        frames_array(g, f"{name}_low", low.shape, np.float32)[...] = low
    small_array(g, "low_mapping", low_mapping(factor))
    return decoded, teacher

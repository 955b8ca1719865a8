"""Bring a video (+ intrinsics, + optional ground truth) into a canonical clip store.

The clip store is a Zarr v3 group holding ``rgb`` (T, S, S, 3) uint8 chunked per frame,
``K`` (T, 3, 3) canonical intrinsics, ``mapping`` [scale_x, scale_y, offset_x, offset_y]
and, when ground truth is given, ``depth_gt``, ``depth_gt_right``, ``rgb_right``,
``moving_mask``, ``poses`` and ``poses_right`` transformed the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from refiner.camera import (
    CanonicalMap,
    canonical_map,
    intrinsics_from_fov,
    resize_depth,
    resize_image,
    transform_intrinsics,
)
from refiner.store import StoreError, atomic_path, create_group, frames_array, open_group, small_array
from refiner.video import decode_frames, video_info

GT_FRAME_ARRAYS = ("depth", "depth_right", "rgb_right", "moving_mask")


def load_intrinsics(path: str | Path, width: int, height: int) -> np.ndarray:
    """K (3, 3) from a JSON/YAML file with fx, fy, cx, cy (pixels of the video) or hfov_deg."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: intrinsics file not found; write {{'fx','fy','cx','cy'}} or {{'hfov_deg'}}")
    data = yaml.safe_load(path.read_text()) or {}  # YAML is a superset of JSON
    if not isinstance(data, dict):
        raise ValueError(f"{path}: intrinsics must be a mapping with fx, fy, cx, cy or hfov_deg")
    if {"fx", "fy", "cx", "cy"} <= data.keys():
        K = np.array([[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]], dtype=np.float64)
        if "width" in data and "height" in data and (data["width"], data["height"]) != (width, height):
            sx, sy = width / data["width"], height / data["height"]
            raise ValueError(
                f"{path}: intrinsics are for {data['width']}x{data['height']} but the video is {width}x{height}; "
                f"scale fx, cx by {sx:g} and fy, cy by {sy:g} and update width/height"
            )
    elif "hfov_deg" in data:
        K = intrinsics_from_fov(width, height, float(data["hfov_deg"]))
    else:
        raise ValueError(f"{path}: intrinsics need keys fx, fy, cx, cy (pixels) or hfov_deg; found {sorted(data)}")
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"{path}: focal lengths must be finite and positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


def _check_depth(depth: np.ndarray, where: str) -> None:
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise ValueError(f"{where}: depth holds NaN, inf or negative values; mark invalid pixels with 0 instead")


def ingest_video(
    video: str | Path,
    intrinsics: str | Path,
    out: str | Path,
    size: int,
    stride: int = 1,
    gt: str | Path | None = None,
    progress: bool = True,
) -> int:
    """Decode ``video`` into the canonical clip store ``out`` (written atomically); returns the frame count."""
    info = video_info(video)
    w, h = int(info["width"]), int(info["height"])
    m = canonical_map(h, w, size)
    K = transform_intrinsics(torch.from_numpy(load_intrinsics(intrinsics, w, h)), m).numpy()
    gt_group = open_group(gt, ("depth", "poses"), "ground-truth store") if gt else None
    with atomic_path(out) as tmp:
        group = create_group(
            tmp,
            {
                "source_video": str(video),
                "stride": stride,
                "fps": info["fps"] / stride,
                "canonical_map": m.to_dict(),
                "has_gt": gt_group is not None,
            },
        )
        frames: list[np.ndarray] = []
        chunk = 16
        rgb = None
        n = 0
        for frame in tqdm(decode_frames(video, stride), desc=f"decode {Path(video).name}", disable=not progress):
            frames.append(frame)
            if len(frames) == chunk:
                rgb = _append_rgb(group, rgb, frames, m, n)
                n += len(frames)
                frames = []
        if frames:
            rgb = _append_rgb(group, rgb, frames, m, n)
            n += len(frames)
        small_array(group, "K", np.repeat(K[None], n, axis=0))
        small_array(group, "mapping", m.as_array())
        if gt_group is not None:
            _ingest_gt(gt_group, group, m, stride, n, str(gt))
    return n


def _append_rgb(group, rgb, frames: list[np.ndarray], m: CanonicalMap, start: int):
    """Resize a batch of frames and append them to the growing ``rgb`` array."""
    batch = resize_image(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), m).permute(0, 2, 3, 1).numpy()
    if rgb is None:
        rgb = frames_array(group, "rgb", (0, m.size, m.size, 3), np.uint8)
    rgb.resize((start + len(frames), m.size, m.size, 3))
    rgb[start : start + len(frames)] = batch
    return rgb


def _ingest_gt(src, dst, m: CanonicalMap, stride: int, n: int, where: str) -> None:
    """Subsample and transform the ground truth to match the decoded frames."""
    total = src["depth"].shape[0]
    idx = np.arange(0, total, stride)
    if len(idx) != n:
        raise StoreError(
            f"{where}: ground truth has {total} frames (={len(idx)} at stride {stride}) but the video decoded to {n}; "
            "they must describe the same clip"
        )
    if src["depth"].shape[1:] != (m.src_height, m.src_width):
        raise StoreError(
            f"{where}: GT depth is {src['depth'].shape[1:]} but video frames are {(m.src_height, m.src_width)}"
        )
    dst.attrs.update({k: v for k, v in src.attrs.items() if k not in ("description", "fps")})
    dst.attrs["gt_description"] = src.attrs.get("description", "")
    for name in GT_FRAME_ARRAYS:
        if name not in src:
            continue
        arr = src[name]
        out_name = {"depth": "depth_gt", "depth_right": "depth_gt_right"}.get(name, name)
        shape = (n, m.size, m.size, *arr.shape[3:])
        out = frames_array(dst, out_name, shape, arr.dtype)
        for j, i in enumerate(idx):
            x = torch.from_numpy(np.asarray(arr[i]))
            if name.startswith("depth"):
                _check_depth(x.numpy(), f"{where}/{name}[{i}]")
            y = resize_image(x.permute(2, 0, 1), m).permute(1, 2, 0) if x.ndim == 3 else resize_depth(x, m)
            out[j] = y.numpy()
    for name in ("poses", "poses_right"):
        if name in src:
            small_array(dst, name, np.asarray(src[name][...])[idx])

"""Bring frames (a video, or a data set through refiner.data.adapters) into a canonical clip store.

The clip store is a Zarr v3 group holding ``rgb`` (T, H, W, 3) uint8 chunked per frame on the canonical grid
(:func:`refiner.geometry.canonical.canonical_map`: short side S, aspect ratio kept, or S x S with ``crop``),
``K`` (T, 3, 3) canonical intrinsics, ``mapping`` [scale_x, scale_y, offset_x, offset_y] (with the attribute
``canonical_map`` it inverts: :meth:`refiner.geometry.canonical.CanonicalMap.from_dict`)
and, when ground truth is given, ``depth_gt``, ``depth_gt_right``, ``rgb_right``,
``moving_mask``, ``poses`` and ``poses_right`` transformed the same way. :func:`write_clip_store`
is the one writer: it takes an iterator of :class:`Frame` and is shared by every adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr
from tqdm import tqdm

from refiner.core.config import _UniqueKeyLoader
from refiner.core.store import StoreError, atomic_path, create_group, frames_array, open_group, small_array
from refiner.core.video import decode_frames, video_info
from refiner.geometry.canonical import CanonicalMap, canonical_map, transform_intrinsics
from refiner.geometry.intrinsics import intrinsics_from_fov

GT_FRAME_ARRAYS = ("depth", "depth_right", "rgb_right", "moving_mask")


PINHOLE_KEYS = ("fx", "fy", "cx", "cy")
INTRINSICS_KEYS = (*PINHOLE_KEYS, "width", "height", "hfov_deg")


def _real(data: dict, key: str, where: str) -> float:
    """``data[key]`` as a finite float; numeric strings count (YAML 1.1 reads ``5e2`` as text)."""
    try:
        v = float(data[key]) if isinstance(data[key], str) else data[key]
    except ValueError:
        v = None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        unit = "degrees" if key == "hfov_deg" else "pixels"
        raise ValueError(f"{where}: {key} = {data[key]!r} is not a finite number; write it in {unit}, e.g. {key}: 60")
    return float(v)


def _check_image_size(data: dict, where: str, width: int, height: int) -> None:
    """Optional ``width``/``height`` (given together) must be the size of the images, in pixels."""
    given = [k for k in ("width", "height") if k in data]
    if len(given) == 1:
        other = "height" if given[0] == "width" else "width"
        raise ValueError(f"{where}: {given[0]} is given without {other}; give both (the image size) or neither")
    if not given:
        return
    w, h = data["width"], data["height"]
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (w, h)):
        raise ValueError(f"{where}: width = {w!r}, height = {h!r} is invalid; allowed: positive integers (pixels)")
    if (w, h) != (width, height):
        raise ValueError(
            f"{where}: intrinsics are for {w}x{h} but the images are {width}x{height}; "
            f"scale fx, cx by {width / w:g} and fy, cy by {height / h:g} and update width/height"
        )


def _check_pinhole(fx: float, fy: float, cx: float, cy: float, where: str, width: int, height: int) -> None:
    for key, v in (("fx", fx), ("fy", fy)):
        if v <= 0:
            raise ValueError(f"{where}: focal lengths must be finite and positive (pixels), got {key} = {v:g}")
    if not 1 / 20 <= fx / fy <= 20:
        raise ValueError(
            f"{where}: fx / fy = {fx / fy:g} is invalid; allowed: [0.05, 20] (check fx and fy are both in pixels)"
        )
    for key, v, side in (("cx", cx, width), ("cy", cy, height)):
        if not 0 <= v <= side:
            raise ValueError(
                f"{where}: {key} = {v:g} is invalid; allowed: [0, {side}] (the principal point lies inside the "
                f"{width}x{height} image; are the intrinsics for another resolution?)"
            )


def intrinsics_from_mapping(data: Any, where: str, width: int, height: int) -> np.ndarray:
    """K (3, 3) from fx, fy, cx, cy (pixels of the width x height images; optional width, height) or hfov_deg.

    Strict: no unknown keys (and a file no repeated ones), values must be finite numbers, fx, fy > 0 with fx/fy in
    [1/20, 20], the principal point inside the image, hfov_deg in (1, 170). Every error names ``where`` (the file)
    and the key.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: intrinsics must be a mapping with fx, fy, cx, cy (pixels) or hfov_deg")
    unknown = [k for k in data if k not in INTRINSICS_KEYS]
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} in the intrinsics; allowed: {', '.join(INTRINSICS_KEYS)} (a pinhole "
            "camera: skew and lens distortion are not modelled, so remove the key or undistort the images first)"
        )
    _check_image_size(data, where, width, height)
    pinhole = [k for k in PINHOLE_KEYS if k in data]
    if "hfov_deg" in data and pinhole:
        raise ValueError(f"{where}: give either fx, fy, cx, cy or hfov_deg, not both (found {sorted(data)})")
    if "hfov_deg" in data:
        hfov = _real(data, "hfov_deg", where)
        if not 1 < hfov < 170:
            raise ValueError(f"{where}: hfov_deg = {hfov:g} is invalid; allowed: degrees in (1, 170)")
        return intrinsics_from_fov(width, height, hfov)
    if len(pinhole) < 4:
        missing = [k for k in PINHOLE_KEYS if k not in data]
        raise ValueError(
            f"{where}: intrinsics lack {', '.join(missing)}; give fx, fy, cx, cy (pixels) or hfov_deg, "
            f"found {sorted(data)}"
        )
    fx, fy, cx, cy = (_real(data, k, where) for k in PINHOLE_KEYS)
    _check_pinhole(fx, fy, cx, cy, where, width, height)
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def load_intrinsics(path: str | Path, width: int, height: int) -> np.ndarray:
    """K (3, 3) from a JSON/YAML file with fx, fy, cx, cy (pixels of the video) or hfov_deg."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: intrinsics file not found; write {{'fx','fy','cx','cy'}} or {{'hfov_deg'}}")
    try:
        with path.open() as f:  # YAML is a superset of JSON; a repeated key is an error, as in params.yaml
            data = yaml.load(f, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: intrinsics file is not valid JSON/YAML ({e})") from e
    return intrinsics_from_mapping(data, str(path), width, height)


def resolve_intrinsics(value: str | Path | dict | Any, width: int, height: int, where: str) -> np.ndarray:
    """K from an override: a mapping (fx, fy, cx, cy or hfov_deg), a model with ``model_dump()`` (a
    ``corpus.clips.<name>.camera``) or a JSON/YAML file holding one."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return intrinsics_from_mapping(value, where, width, height)
    return load_intrinsics(value, width, height)


def check_depth(depth: np.ndarray, where: str) -> None:
    """Raise unless depth is finite and >= 0 (0 marks invalid pixels)."""
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise ValueError(f"{where}: depth holds NaN, inf or negative values; mark invalid pixels with 0 instead")


@dataclass
class Frame:
    """One source frame: RGB (H, W, 3) uint8, its K (3, 3) in pixels, optional z-depth (H, W) and pose (4, 4)."""

    rgb: np.ndarray
    K: np.ndarray
    depth: np.ndarray | None = None  # metres, 0 = invalid
    pose: np.ndarray | None = None  # camera-to-world, OpenCV axes
    where: str = ""  # the source file(s), for error messages


def to_grid(frames: np.ndarray, m: CanonicalMap) -> np.ndarray:
    """Images (T, H, W, C) or depth/label maps (T, H, W) onto the canonical grid
    (:func:`refiner.geometry.camera.resize_image`:
    antialiased bilinear; :func:`refiner.geometry.camera.resize_depth`: nearest), or as they are when the grid is the
    source
    grid. torch is imported here, only to resample: importing it is most of a decode stage's start-up otherwise."""
    if m.is_identity:
        return frames
    import torch

    from refiner.geometry.camera import resize_depth, resize_image

    x = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.ndim == 4:
        return resize_image(x.permute(0, 3, 1, 2), m).permute(0, 2, 3, 1).numpy()
    return resize_depth(x, m).numpy()


class ClipWriter:
    """Resize frames onto the canonical grid and append them to a clip store group, in batches."""

    def __init__(self, group: zarr.Group, m: CanonicalMap, where: str, batch: int = 16) -> None:
        self.group, self.m, self.where, self.batch = group, m, where, batch
        self.pending: list[Frame] = []
        self.K: list[np.ndarray] = []
        self.poses: list[np.ndarray] = []
        self.n = 0
        self.has_depth: bool | None = None  # fixed by the first frame
        self.has_pose: bool | None = None

    def add(self, f: Frame) -> None:
        where = f.where or f"{self.where} frame {self.n + len(self.pending)}"
        src = (self.m.src_height, self.m.src_width)
        if f.rgb.dtype != np.uint8 or f.rgb.shape != (*src, 3):
            raise ValueError(f"{where}: RGB is {f.rgb.dtype} {f.rgb.shape}, expected uint8 {(*src, 3)} like frame 0")
        if self.has_depth is None:
            self.has_depth = f.depth is not None
            self.has_pose = f.pose is not None
        if (f.depth is not None) != self.has_depth or (f.pose is not None) != self.has_pose:
            raise ValueError(f"{where}: depth/pose present on some frames only; give them for every frame or none")
        if f.depth is not None:
            if f.depth.shape != src:
                raise ValueError(
                    f"{where}: depth is {f.depth.shape} (H, W) but RGB is {src}; "
                    "depth must be registered to the RGB image at the same size"
                )
            check_depth(f.depth, where)
        if f.pose is not None and (f.pose.shape != (4, 4) or not np.isfinite(f.pose).all()):
            raise ValueError(f"{where}: pose must be a finite 4x4 camera-to-world matrix, got {f.pose.shape}")
        self.pending.append(f)
        if len(self.pending) == self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        m, start, k = self.m, self.n, len(self.pending)
        _append(self.group, "rgb", to_grid(np.stack([f.rgb for f in self.pending]), m), start)
        if self.has_depth:
            depth = np.stack([f.depth for f in self.pending]).astype(np.float32)
            _append(self.group, "depth_gt", to_grid(depth, m), start)
        self.K.extend(transform_intrinsics(np.stack([f.K for f in self.pending]), m))
        self.poses.extend(f.pose for f in self.pending if f.pose is not None)
        self.n += k
        self.pending = []

    def finish(self) -> int:
        """Write the remaining frames, K, mapping and poses; returns the frame count."""
        self._flush()
        if self.n == 0:
            raise ValueError(f"{self.where}: no frames; check the source holds images listed in its index")
        small_array(self.group, "K", np.stack(self.K))
        small_array(self.group, "mapping", self.m.as_array())
        if self.poses:
            small_array(self.group, "poses", np.stack(self.poses).astype(np.float64))
        return self.n


def _append(group: zarr.Group, name: str, batch: np.ndarray, start: int) -> None:
    """Append a batch of canonical frames to the growing per-frame array ``name``."""
    if name not in group:
        frames_array(group, name, (0, *batch.shape[1:]), batch.dtype)
    arr = group[name]
    arr.resize((start + len(batch), *batch.shape[1:]))
    arr[start : start + len(batch)] = batch


def write_clip_store(
    out: str | Path,
    frames: Iterable[Frame],
    size: int,
    attrs: dict[str, Any],
    progress: bool = True,
    desc: str = "ingest",
    extra: Callable[[zarr.Group, CanonicalMap, int], None] | None = None,
    multiple: int = 1,
    crop: bool = False,
) -> int:
    """Write frames (all the same size) into the canonical clip store ``out`` atomically; returns the count.

    The grid is ``canonical_map(h, w, size, multiple, crop)``: pass the low-res factor as ``multiple``.
    ``attrs`` must hold fps, dataset_name and scene_id; has_gt, canonical_map, static_frames (0 = unknown)
    and baseline_m (None = unknown) are filled in. ``extra(group, map, n)`` may add arrays before the rename.
    """
    out = Path(out)
    it = iter(tqdm(frames, desc=desc, disable=not progress))
    first = next(it, None)
    if first is None:
        raise ValueError(f"{attrs.get('scene_id', out)}: the source has no frames; nothing to write to {out}")
    h, w = first.rgb.shape[:2]
    m = canonical_map(h, w, size, multiple, crop)
    with atomic_path(out) as tmp:
        group = create_group(tmp, {"static_frames": 0, "baseline_m": None, **attrs, "canonical_map": m.to_dict()})
        writer = ClipWriter(group, m, where=str(attrs.get("scene_id", out)))
        writer.add(first)
        for f in it:
            writer.add(f)
        n = writer.finish()
        group.attrs["has_gt"] = bool(writer.has_depth)
        if extra is not None:
            extra(group, m, n)
    return n


def ingest_video(
    video: str | Path,
    intrinsics: str | Path | dict,
    out: str | Path,
    size: int,
    stride: int = 1,
    gt: str | Path | None = None,
    progress: bool = True,
    dataset_name: str = "video",
    scene_id: str | None = None,
    multiple: int = 1,
    crop: bool = False,
) -> int:
    """Decode ``video`` into the canonical clip store ``out`` (written atomically); returns the frame count.

    ``intrinsics``: a JSON/YAML file or a mapping (fx, fy, cx, cy or hfov_deg); ``multiple``, ``crop``: the grid
    (:func:`write_clip_store`)."""
    info = video_info(video)
    w, h = int(info["width"]), int(info["height"])
    K = resolve_intrinsics(intrinsics, w, h, str(intrinsics))
    gt_group = open_group(gt, ("depth",), "ground-truth store") if gt else None  # poses, moving_mask optional
    attrs = {
        "source_video": str(video),
        "stride": stride,
        "fps": info["fps"] / stride,
        "dataset_name": dataset_name,
        "scene_id": scene_id or Path(video).stem,
    }

    def add_gt(group: zarr.Group, m: CanonicalMap, n: int) -> None:
        if gt_group is not None:
            _ingest_gt(gt_group, group, m, stride, n, str(gt), progress)
            group.attrs["has_gt"] = True

    frames = (Frame(rgb, K) for rgb in decode_frames(video, stride))
    return write_clip_store(out, frames, size, attrs, progress, f"decode {Path(video).name}", add_gt, multiple, crop)


def _ingest_gt(src, dst, m: CanonicalMap, stride: int, n: int, where: str, progress: bool = False) -> None:
    """Subsample and transform the ground truth to match the decoded frames (a progress bar per array)."""
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
        shape = (n, m.height, m.width, *arr.shape[3:])
        out = frames_array(dst, out_name, shape, arr.dtype)
        for j, i in enumerate(tqdm(idx, desc=f"ground truth {name}", disable=not progress)):
            x = np.asarray(arr[i])
            if name.startswith("depth"):
                check_depth(x, f"{where}/{name}[{i}]")
            out[j] = to_grid(x[None], m)[0]
    for name in ("poses", "poses_right"):
        if name in src:
            small_array(dst, name, np.asarray(src[name][...])[idx])

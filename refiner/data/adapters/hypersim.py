"""Hypersim scenes: one camera trajectory, distance-to-centre depth converted to z-depth, optional poses.

Expected folder (one scene as extracted from the data set's archives; ``cam_00`` is any camera)::

    ai_001_001/
        images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5   # distance to the camera centre, m
        images/scene_cam_00_final_preview/frame.0000.tonemap.jpg         # RGB (preferred)
        images/scene_cam_00_final_hdf5/frame.0000.color.hdf5             # linear HDR RGB (used without JPGs)
        _detail/metadata_scene.csv                                        # optional: meters_per_asset_unit
        _detail/cam_00/camera_keyframe_positions.hdf5                     # optional: (N, 3) asset units
        _detail/cam_00/camera_keyframe_orientations.hdf5                  # optional: (N, 3, 3) camera-to-world
        camera.json                                                       # optional: fx, fy, cx, cy (pixels)

Without ``camera.json`` (or an override) the standard Hypersim camera is used: a centred pinhole with a
60 degree horizontal field of view (1024 x 768 images). Missing depth (NaN in the files: sky, windows)
becomes 0 = invalid. HDR colour is tone mapped by :func:`tonemap`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from refiner.data.adapters.images import read_hdf5, read_image, require_file
from refiner.data.ingest import Frame, resolve_intrinsics, write_clip_store
from refiner.geometry.intrinsics import intrinsics_from_fov, pixel_rays

HFOV_DEG = 60.0  # the standard Hypersim camera
GAMMA = 1 / 2.2
PERCENTILE, TARGET = 90.0, 0.8  # tonemap: this luminance percentile of the first frame maps to this value
_FRAME = re.compile(r"frame\.(\d+)\.depth_meters\.hdf5$")
# OpenGL-style camera axes (y up, z backward) -> OpenCV (y down, z forward)
GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def distance_to_depth(distance: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Per-pixel distance to the camera centre (H, W) -> z-depth: z = d / |K^-1 (u, v, 1)|."""
    h, w = distance.shape
    return (distance / np.linalg.norm(pixel_rays(K, h, w), axis=0).reshape(h, w)).astype(np.float32)


def tonemap(hdr: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Linear HDR RGB (H, W, 3) -> uint8 sRGB-like image, and the exposure scale used.

    ``scale`` (from the first frame when None) brings the 90th percentile luminance to 0.8 after a
    1/2.2 gamma; reusing one scale for the whole clip keeps exposure steady from frame to frame.
    """
    hdr = np.nan_to_num(np.asarray(hdr, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    if scale is None:
        lum = hdr @ np.array([0.2126, 0.7152, 0.0722])
        p = np.percentile(lum, PERCENTILE)
        scale = float(TARGET ** (1 / GAMMA) / p) if p > 0 else 1.0
    out = np.clip((hdr * scale) ** GAMMA, 0, 1)
    return np.round(out * 255).astype(np.uint8), scale


def _cameras(images: Path) -> list[str]:
    return sorted(p.name[len("scene_") : -len("_geometry_hdf5")] for p in images.glob("scene_cam_*_geometry_hdf5"))


def _meters_per_unit(path: Path) -> float:
    require_file(path, "Hypersim scene metadata (needed with camera poses)")
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0].strip() == "meters_per_asset_unit":
                return float(row[1])
    raise ValueError(f"{path}: no 'meters_per_asset_unit' row; re-extract the scene's _detail folder")


def _poses(scene: Path, cam: str, frames: list[int]) -> list[np.ndarray] | None:
    """Camera-to-world OpenCV poses in metres of the listed frames, or None without trajectory files."""
    detail = scene / "_detail" / cam
    pos_file, rot_file = detail / "camera_keyframe_positions.hdf5", detail / "camera_keyframe_orientations.hdf5"
    if not (pos_file.is_file() or rot_file.is_file()):
        return None
    pos = read_hdf5(pos_file, "Hypersim camera positions")
    rot = read_hdf5(rot_file, "Hypersim camera orientations")
    if pos.ndim != 2 or pos.shape[1] != 3 or rot.shape != (len(pos), 3, 3) or max(frames) >= len(pos):
        raise ValueError(
            f"{detail}: trajectory has positions {pos.shape} and orientations {rot.shape} but frames up to "
            f"{max(frames)} are listed; re-extract the camera's _detail folder"
        )
    unit = _meters_per_unit(scene / "_detail" / "metadata_scene.csv")
    out = []
    for i in frames:
        T = np.eye(4)
        T[:3, :3] = rot[i] @ GL_TO_CV
        T[:3, 3] = pos[i] * unit
        out.append(T)
    return out


def trajectory(scene: Path, cam: str | None, stride: int) -> tuple[str, Path, list[int]]:
    """The camera (default: the first with depth), its geometry folder and every ``stride``-th frame id."""
    images = scene / "images"
    if not images.is_dir():
        raise FileNotFoundError(
            f"{images}: not found; point corpus.clips.<name>.source at a Hypersim scene folder (ai_XXX_XXX)"
        )
    cams = _cameras(images)
    cam = cam or (cams[0] if cams else "cam_00")
    geometry = images / f"scene_{cam}_geometry_hdf5"
    if not geometry.is_dir():
        raise FileNotFoundError(f"{geometry}: not found; cameras with depth in this scene: {cams or 'none'}")
    ids = sorted(int(m.group(1)) for p in geometry.iterdir() if (m := _FRAME.match(p.name)))[::stride]
    if not ids:
        raise ValueError(f"{geometry}: no frame.XXXX.depth_meters.hdf5 files; extract the scene's geometry archive")
    return cam, geometry, ids


class ColourReader:
    """A camera's RGB frames: the tonemapped JPEG previews when extracted, else the HDR colour tonemapped with
    the first frame's scale (one exposure for the whole clip)."""

    def __init__(self, images: Path, cam: str) -> None:
        self.preview, self.final = images / f"scene_{cam}_final_preview", images / f"scene_{cam}_final_hdf5"
        self.use_jpg = self.preview.is_dir()
        self.scale: float | None = None

    def __call__(self, i: int) -> np.ndarray:
        if self.use_jpg:
            return read_image(self.preview / f"frame.{i:04d}.tonemap.jpg", "Hypersim tonemapped RGB")
        rgb, scale = tonemap(read_hdf5(self.final / f"frame.{i:04d}.color.hdf5", "Hypersim HDR colour"), self.scale)
        self.scale = self.scale if self.scale is not None else scale
        return rgb


def hypersim_frames(
    geometry: Path, ids: list[int], colour: ColourReader, K: np.ndarray, poses: list | None, size: tuple[int, int]
) -> Iterator[Frame]:
    """The frames: RGB, K, z-depth in metres (from Hypersim's distance to the camera centre) and pose."""
    for j, i in enumerate(ids):
        depth_file = geometry / f"frame.{i:04d}.depth_meters.hdf5"
        dist = read_hdf5(depth_file, "Hypersim depth").astype(np.float64)
        if np.isinf(dist).any() or (dist < 0).any():
            raise ValueError(f"{depth_file}: distances hold inf or negative values; re-extract the file")
        depth = distance_to_depth(np.nan_to_num(dist, nan=0.0), K) if dist.shape == size else dist
        yield Frame(colour(i), K, depth, poses[j] if poses else None, where=str(depth_file))


def hypersim_rgb(attrs: Mapping[str, Any]) -> Iterator[np.ndarray]:
    """A decoded Hypersim clip's RGB frames at their own resolution, read again from its scene folder (attributes
    ``source``, ``scene_id`` = scene/camera, ``stride``)."""
    scene = Path(attrs["source"])
    cam, _, ids = trajectory(scene, str(attrs["scene_id"]).rsplit("/", 1)[-1], int(attrs.get("stride", 1)))
    colour = ColourReader(scene / "images", cam)
    return (colour(i) for i in ids)


def ingest_hypersim(
    source: str | Path,
    out: str | Path,
    size: int,
    cam: str | None = None,
    stride: int = 1,
    intrinsics: str | Path | dict | None = None,
    fps: float = 10.0,
    progress: bool = True,
    multiple: int = 1,
    crop: bool = False,
) -> int:
    """One Hypersim camera trajectory -> canonical clip store ``out`` (atomic); returns the frame count.

    ``cam`` is e.g. "cam_00" (default: the first camera found). Hypersim has no frame rate; ``fps`` is
    stored as given.
    """
    scene = Path(source)
    cam, geometry, ids = trajectory(scene, cam, stride)
    colour = ColourReader(scene / "images", cam)
    h, w = colour(ids[0]).shape[:2]  # also fixes the HDR tonemap scale on the first frame
    if intrinsics is None and (scene / "camera.json").is_file():
        intrinsics = scene / "camera.json"
    K = intrinsics_from_fov(w, h, HFOV_DEG) if intrinsics is None else resolve_intrinsics(intrinsics, w, h, str(scene))
    attrs = {
        "dataset_name": "hypersim",
        "scene_id": f"{scene.name}/{cam}",
        "source": str(scene),
        "stride": stride,
        "fps": float(fps),
        "rgb_source": "tonemap.jpg" if colour.use_jpg else "color.hdf5 (refiner.data.adapters.hypersim.tonemap)",
        "depth_units": "z-depth, metres (from distance to the camera centre)",
    }
    frames = hypersim_frames(geometry, ids, colour, K, _poses(scene, cam, ids), (h, w))
    return write_clip_store(out, frames, size, attrs, progress, f"hypersim {scene.name}/{cam}", None, multiple, crop)

"""Pinhole camera geometry and the canonical resize/pad, as pure batched functions.

Conventions: OpenCV camera axes (x right, y down, z forward); pixel (u, v) has its
centre at integer coordinates; depth is z-depth in metres; poses are camera-to-world
4x4 matrices. Every image transform has a matching intrinsics transform so that a
3D point projects to the same content after resize/pad/crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CanonicalMap:
    """Maps source pixels to the canonical S x S grid: u' = scale_x * (u + 0.5) - 0.5 + offset_x.

    ``offset`` is negative where the resized image is cropped and positive where it is padded.
    """

    src_height: int
    src_width: int
    size: int
    scaled_height: int
    scaled_width: int
    offset_x: int
    offset_y: int

    @property
    def scale_x(self) -> float:
        return self.scaled_width / self.src_width

    @property
    def scale_y(self) -> float:
        return self.scaled_height / self.src_height

    def as_array(self) -> np.ndarray:
        """[scale_x, scale_y, offset_x, offset_y] as float64, the form stored next to frames."""
        return np.array([self.scale_x, self.scale_y, self.offset_x, self.offset_y], dtype=np.float64)

    def to_dict(self) -> dict[str, int | float]:
        return {
            "src_height": self.src_height,
            "src_width": self.src_width,
            "size": self.size,
            "scaled_height": self.scaled_height,
            "scaled_width": self.scaled_width,
            "offset_x": self.offset_x,
            "offset_y": self.offset_y,
            "scale_x": self.scale_x,
            "scale_y": self.scale_y,
        }


def canonical_map(height: int, width: int, size: int) -> CanonicalMap:
    """Short side -> ``size``, then centre crop/pad the long side to ``size``."""
    if height <= 0 or width <= 0 or size <= 0:
        raise ValueError(f"canonical_map needs positive sizes, got height={height}, width={width}, size={size}")
    s = size / min(height, width)
    sh, sw = max(1, round(height * s)), max(1, round(width * s))
    return CanonicalMap(height, width, size, sh, sw, (size - sw) // 2, (size - sh) // 2)


def transform_intrinsics(K: torch.Tensor, m: CanonicalMap) -> torch.Tensor:
    """Intrinsics (..., 3, 3) of the source image -> intrinsics of the canonical image."""
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * m.scale_x
    out[..., 0, 1] = K[..., 0, 1] * m.scale_x
    out[..., 1, 1] = K[..., 1, 1] * m.scale_y
    out[..., 0, 2] = m.scale_x * (K[..., 0, 2] + 0.5) - 0.5 + m.offset_x
    out[..., 1, 2] = m.scale_y * (K[..., 1, 2] + 0.5) - 0.5 + m.offset_y
    return out


def _place(scaled: torch.Tensor, m: CanonicalMap, fill: float) -> torch.Tensor:
    """Crop/pad a (..., scaled_h, scaled_w) tensor onto the (..., S, S) canonical grid."""
    out = scaled.new_full((*scaled.shape[:-2], m.size, m.size), fill)
    # destination and source ranges along each axis
    dy0, sy0 = max(m.offset_y, 0), max(-m.offset_y, 0)
    dx0, sx0 = max(m.offset_x, 0), max(-m.offset_x, 0)
    h = min(m.size - dy0, m.scaled_height - sy0)
    w = min(m.size - dx0, m.scaled_width - sx0)
    out[..., dy0 : dy0 + h, dx0 : dx0 + w] = scaled[..., sy0 : sy0 + h, sx0 : sx0 + w]
    return out


def resize_image(image: torch.Tensor, m: CanonicalMap) -> torch.Tensor:
    """Colour image(s) (..., C, H, W), any dtype -> canonical (..., C, S, S); antialiased bilinear, pad 0."""
    lead = image.shape[:-3]
    x = image.reshape(-1, *image.shape[-3:]).float()
    x = F.interpolate(x, size=(m.scaled_height, m.scaled_width), mode="bilinear", antialias=True, align_corners=False)
    if image.dtype == torch.uint8:
        x = x.round().clamp(0, 255)
    x = _place(x.to(image.dtype), m, 0)
    return x.reshape(*lead, *x.shape[-3:])


def resize_depth(depth: torch.Tensor, m: CanonicalMap) -> torch.Tensor:
    """Depth or label map(s) (..., H, W) -> canonical (..., S, S) by nearest sampling.

    Values are copied, never blended, so metric depth is unchanged and edges do not smear.
    Padded pixels are 0 (invalid depth).
    """
    lead = depth.shape[:-2]
    x = depth.reshape(-1, 1, *depth.shape[-2:]).float()
    x = F.interpolate(x, size=(m.scaled_height, m.scaled_width), mode="nearest-exact")
    x = _place(x, m, 0).to(depth.dtype)
    return x.reshape(*lead, m.size, m.size)


def pixel_grid(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Homogeneous pixel centres (3, H, W): rows u, v, 1."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)])


def unproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """z-depth (B, H, W) and K (B, 3, 3) -> camera-frame points (B, 3, H, W)."""
    b, h, w = depth.shape
    rays = torch.linalg.inv(K.float()) @ pixel_grid(h, w, depth.device).reshape(3, -1)
    return rays.reshape(b, 3, h, w) * depth[:, None]


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame points (B, 3, ...) -> pixel coordinates (B, 2, ...) and z (B, ...)."""
    b = points.shape[0]
    flat = points.reshape(b, 3, -1)
    p = K.float() @ flat
    z = p[:, 2]
    uv = p[:, :2] / z.clamp_min(eps)[:, None]
    return uv.reshape(b, 2, *points.shape[2:]), z.reshape(b, *points.shape[2:])


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply rigid transforms T (B, 4, 4) to points (B, 3, ...)."""
    b = points.shape[0]
    flat = points.reshape(b, 3, -1)
    out = T[:, :3, :3].float() @ flat + T[:, :3, 3:].float()
    return out.reshape(points.shape)


def relative_pose(pose_from: torch.Tensor, pose_to: torch.Tensor) -> torch.Tensor:
    """Camera-to-world poses (B, 4, 4) -> transform taking points in camera 'from' to camera 'to'."""
    return torch.linalg.inv(pose_to.double()) @ pose_from.double()


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Square-pixel pinhole K for a horizontal field of view, principal point at the image centre."""
    fx = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[fx, 0, (width - 1) / 2], [0, fx, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)

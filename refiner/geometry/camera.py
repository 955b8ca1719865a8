"""Pinhole camera geometry and the resize/pad onto the canonical grid, as pure batched torch functions.

Conventions: OpenCV camera axes (x right, y down, z forward); pixel (u, v) has its
centre at integer coordinates; depth is z-depth in metres; poses are camera-to-world
4x4 matrices. Every image transform has a matching intrinsics transform in :mod:`refiner.geometry.canonical`
(:func:`~refiner.geometry.canonical.transform_intrinsics`, :func:`~refiner.geometry.canonical.source_intrinsics`) so
that a
3D point projects to the same content after resize/pad/crop, and back (:func:`depth_to_source`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refiner.geometry.canonical import CanonicalMap


def _place(scaled: torch.Tensor, m: CanonicalMap, fill: float) -> torch.Tensor:
    """Crop/pad a (..., scaled_h, scaled_w) tensor onto the (..., height, width) canonical grid."""
    out = scaled.new_full((*scaled.shape[:-2], m.height, m.width), fill)
    # destination and source ranges along each axis
    dy0, sy0 = max(m.offset_y, 0), max(-m.offset_y, 0)
    dx0, sx0 = max(m.offset_x, 0), max(-m.offset_x, 0)
    h = min(m.height - dy0, m.scaled_height - sy0)
    w = min(m.width - dx0, m.scaled_width - sx0)
    out[..., dy0 : dy0 + h, dx0 : dx0 + w] = scaled[..., sy0 : sy0 + h, sx0 : sx0 + w]
    return out


def resize_image(image: torch.Tensor, m: CanonicalMap) -> torch.Tensor:
    """Colour image(s) (..., C, H, W), any dtype -> canonical (..., C, height, width); antialiased bilinear, pad 0."""
    lead = image.shape[:-3]
    x = image.reshape(-1, *image.shape[-3:]).float()
    x = F.interpolate(x, size=(m.scaled_height, m.scaled_width), mode="bilinear", antialias=True, align_corners=False)
    if image.dtype == torch.uint8:
        x = x.round().clamp(0, 255)
    x = _place(x.to(image.dtype), m, 0)
    return x.reshape(*lead, *x.shape[-3:])


def resize_depth(depth: torch.Tensor, m: CanonicalMap) -> torch.Tensor:
    """Depth or label map(s) (..., H, W) -> canonical (..., height, width) by nearest sampling.

    Values are copied, never blended, so metric depth is unchanged and edges do not smear.
    Padded pixels are 0 (invalid depth).
    """
    lead = depth.shape[:-2]
    x = depth.reshape(-1, 1, *depth.shape[-2:]).float()
    x = F.interpolate(x, size=(m.scaled_height, m.scaled_width), mode="nearest-exact")
    x = _place(x, m, 0).to(depth.dtype)
    return x.reshape(*lead, m.height, m.width)


def _source_axis(n_src: int, scale: float, offset: int, n: int) -> tuple[torch.Tensor, ...]:
    """Along one axis, for every source pixel: its canonical coordinate's nearest index, the two bilinear
    neighbours and weight, and whether it falls on the canonical grid (False where it was cropped away)."""
    c = scale * (torch.arange(n_src, dtype=torch.float64) + 0.5) - 0.5 + offset
    inside = (c > -0.5) & (c < n - 0.5)
    nearest = c.round().clamp(0, n - 1).long()
    lo = c.floor().clamp(0, n - 1)
    frac = (c - lo).clamp(0, 1)
    return nearest, lo.long(), (lo.long() + 1).clamp(max=n - 1), frac, inside


def depth_to_source(depth: torch.Tensor, m: CanonicalMap, edge_rel: float | None = 0.05) -> torch.Tensor:
    """Canonical depth (..., height, width) -> source resolution (..., src_height, src_width) through the inverse map.

    Edge-aware: a source pixel takes the bilinear value of its 2x2 canonical neighbours where all four are valid
    and within ``edge_rel`` of each other (max/min - 1, a flat surface), else its nearest neighbour's value, so
    metric depth is never blended across a depth edge or with invalid pixels. ``edge_rel=None``: nearest only.
    Source pixels outside the canonical grid (cropped away) and invalid ones are 0.
    """
    if m.is_identity:  # what the gathers below give on an identity map (zero-weight neighbours), without them
        return torch.where(depth > 0, depth.float(), 0.0).to(depth.dtype)
    ny, y0, y1, fy, in_y = _source_axis(m.src_height, m.scale_y, m.offset_y, m.height)
    nx, x0, x1, fx, in_x = _source_axis(m.src_width, m.scale_x, m.offset_x, m.width)
    d = depth.float()
    out = d.index_select(-2, ny).index_select(-1, nx)  # separable gathers: rows, then columns
    if edge_rel is not None:
        rows = [d.index_select(-2, y) for y in (y0, y1)]
        c00, c01, c10, c11 = (r.index_select(-1, x) for r in rows for x in (x0, x1))
        lo = torch.minimum(torch.minimum(c00, c01), torch.minimum(c10, c11))
        hi = torch.maximum(torch.maximum(c00, c01), torch.maximum(c10, c11))
        wy, wx = fy[:, None].float(), fx[None, :].float()
        bilinear = (c00 + (c01 - c00) * wx) * (1 - wy) + (c10 + (c11 - c10) * wx) * wy
        out = torch.where((lo > 0) & (hi <= lo * (1 + edge_rel)), bilinear, out)
    return torch.where((in_y[:, None] & in_x[None, :]) & (out > 0), out, 0.0).to(depth.dtype)


def image_to_source(image: torch.Tensor, m: CanonicalMap) -> torch.Tensor:
    """Canonical colour image(s) (..., C, height, width) -> float (..., C, src_height, src_width): bilinear through
    the inverse map; source pixels outside the canonical grid (cropped away) are 0."""
    if m.is_identity:
        return image.float()
    _, y0, y1, fy, in_y = _source_axis(m.src_height, m.scale_y, m.offset_y, m.height)
    _, x0, x1, fx, in_x = _source_axis(m.src_width, m.scale_x, m.offset_x, m.width)
    rows = [image.float().index_select(-2, y) for y in (y0, y1)]
    c00, c01, c10, c11 = (r.index_select(-1, x) for r in rows for x in (x0, x1))
    wy, wx = fy[:, None].float(), fx[None, :].float()
    out = (c00 + (c01 - c00) * wx) * (1 - wy) + (c10 + (c11 - c10) * wx) * wy
    return torch.where(in_y[:, None] & in_x[None, :], out, 0.0)


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


def reproject_and_sample(
    depth_src: torch.Tensor, depth_dst: torch.Tensor, K_src: torch.Tensor, K_dst: torch.Tensor, T: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each source pixel (P, H, W z-depth) moved into the target camera by T (P, 4, 4; source camera → target
    camera): (its z there, the target depth bilinearly sampled where it lands, whether it lands inside the
    target image in front of the camera), each (P, H, W). Differentiable in both depths (a backward warp)."""
    h, w = depth_dst.shape[-2:]
    uv, z = project(transform_points(T, unproject(depth_src, K_src)), K_dst)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1) & (z > 0)
    return z, sample_at(depth_dst[:, None], uv)[:, 0], inside


def sample_at(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """``image`` (P, C, H, W) sampled bilinearly at the pixel coordinates ``uv`` (P, 2, H', W': x then y, pixel
    centres at integers) → (P, C, H', W') in ``uv``'s dtype; 0 outside the image and where ``uv`` is not finite."""
    h, w = image.shape[-2:]
    grid = torch.stack([2 * uv[:, 0] / max(w - 1, 1) - 1, 2 * uv[:, 1] / max(h - 1, 1) - 1], -1)
    grid = torch.nan_to_num(grid, nan=-3.0, posinf=-3.0, neginf=-3.0)  # far outside → zero padding
    return F.grid_sample(image.to(uv.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)

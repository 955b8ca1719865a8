"""Metric stereo for VR: the right eye rendered from the left image and metric depth, and its checks.

The right camera sits ``baseline`` metres along the left camera's +x axis with the same intrinsics, so a
left pixel at column u with z-depth z appears in the right image at u − d, d = fx·baseline/z pixels.
Forward warping splats every left pixel to the nearest right pixel; where several land on one pixel the
nearest (smallest z) wins, and right pixels nobody lands on are holes (disocclusions). Backward
warping samples the left image at u + d_right(u), bilinearly. Tensors: images (C, H, W), maps (H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refiner.geometry.scatter import scatter_kept

_EPS = 1e-6


def disparity_from_depth(depth: torch.Tensor, fx: float, baseline: float) -> torch.Tensor:
    """fx·baseline/z in pixels; 0 where depth is invalid (≤ 0)."""
    return torch.where(depth > 0, fx * baseline / depth.clamp_min(_EPS), torch.zeros_like(depth))


def depth_from_disparity(disparity: torch.Tensor, fx: float, baseline: float) -> torch.Tensor:
    """fx·baseline/d in metres; 0 where disparity ≤ 0."""
    return torch.where(disparity > 0, fx * baseline / disparity.clamp_min(_EPS), torch.zeros_like(disparity))


def forward_warp(
    image: torch.Tensor, disparity: torch.Tensor, depth: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left image (C, H, W) → right view by splatting to u − d with a z-buffer; returns (image, hole mask)."""
    c, h, w = image.shape
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ur = torch.round(u - disparity).long()
    ok = (depth > 0) & (ur >= 0) & (ur < w)
    target = torch.where(ok, v * w + ur, 0)
    z = depth.double()
    zbuf = scatter_kept(z, target, ok, h * w, "amin", float("inf"))
    winner = ok & (z <= zbuf[target])  # the nearest surface at each target pixel
    out = image.new_zeros(c, h * w + 1)  # the last slot takes every point that is not a winner
    out[:, torch.where(winner, target, h * w).flatten()] = image.reshape(c, -1)
    holes = ~torch.isfinite(zbuf)
    return out[:, :-1].reshape(c, h, w), holes.reshape(h, w)


def backward_warp(image: torch.Tensor, disparity: torch.Tensor, sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` (C, H, W) at u + sign·d (bilinear); returns (warped, valid). With the right view's
    disparity and sign +1 it renders the right eye from the left image; with the left view's and −1, the
    left eye from the right image."""
    c, h, w = image.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    x = u + sign * disparity.float()
    grid = torch.stack([(x + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1], -1)[None]
    out = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return out.to(image.dtype), (x >= 0) & (x <= w - 1) & (disparity > 0)


def round_trip_error(left: torch.Tensor, disparity: torch.Tensor, depth: torch.Tensor) -> float:
    """Left → right (forward splat) → left (backward, with the left disparity): mean |ΔI| on pixels that
    survive both warps; 0 for a depth map consistent with itself (up to rounding and occlusions)."""
    right, holes = forward_warp(left, disparity, depth)
    back, valid = backward_warp(right, disparity, sign=-1.0)
    v, u = torch.meshgrid(torch.arange(left.shape[1]), torch.arange(left.shape[2]), indexing="ij")
    ur = torch.round(u - disparity).long().clamp(0, left.shape[2] - 1)
    ok = valid & ~holes[v, ur]
    return float((back - left).abs().mean(0)[ok].mean()) if ok.any() else float("nan")


def fill_holes(image: torch.Tensor, holes: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Fill hole pixels of a warped view (C, H, W) from the nearest non-hole pixel in the same row, on the
    side whose depth is farther: disocclusions reveal background, so the background colour is extended."""
    c, h, w = image.shape
    idx = torch.arange(w).expand(h, w)
    left = torch.where(~holes, idx, torch.full_like(idx, -1)).cummax(1).values  # nearest filled to the left
    rev = torch.where(~holes, w - 1 - idx, torch.full_like(idx, -1)).flip(1).cummax(1).values.flip(1)
    right = torch.where(rev >= 0, w - 1 - rev, torch.full_like(rev, -1))  # nearest filled to the right
    z = torch.where(holes, torch.full_like(depth, -1.0), depth)
    z_left = torch.where(left >= 0, z.gather(1, left.clamp_min(0)), torch.full_like(depth, -1.0))
    z_right = torch.where(right >= 0, z.gather(1, right.clamp_min(0)), torch.full_like(depth, -1.0))
    source = torch.where(z_left >= z_right, left, right).clamp_min(0)
    filled = image.gather(2, source.expand(c, h, w))
    return torch.where(holes[None] & ((left >= 0) | (right >= 0))[None], filled, image)


def temporal_pops(jitter_px: torch.Tensor, threshold_px: float) -> int:
    """Number of frame pairs whose static-region disparity change exceeds ``threshold_px``."""
    return int((jitter_px > threshold_px).sum())


# --- Left-right geometry between the two eyes' own depths (batched: maps (..., H, W)) -----------------------
# Rectified stereo: the right camera is the left one moved by +baseline along its x axis, d = fx·b/z, a left
# pixel at column u appears in the right image at u − d; a right pixel at column u appears in the left at u + d.
# fx is a float or a tensor over the leading dimensions (one focal length per map). Right-to-left checks
# mirror both images (column u → W − 1 − u), which turns the right eye into a "left" eye.


def _fx_b(fx: float | torch.Tensor, baseline: float, depth: torch.Tensor) -> torch.Tensor:
    """fx·baseline as float64, shaped to broadcast over depth (..., H, W)."""
    f = torch.as_tensor(fx, dtype=torch.float64)
    return (f * baseline).reshape(*f.shape, 1, 1) if f.ndim else f * baseline


def _disparity(depth: torch.Tensor, fx: float | torch.Tensor, baseline: float) -> torch.Tensor:
    """Disparity in pixels (float64), 0 where depth ≤ 0."""
    d = depth.double()
    return torch.where(d > 0, _fx_b(fx, baseline, d) / d.clamp_min(_EPS), 0.0)


def _splat_to_right(
    depth_left: torch.Tensor, fx: float | torch.Tensor, baseline: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z-buffered forward splat of left depth (..., H, W) to round(u − d). Returns (zbuf (..., H, W) float64
    with inf where nothing lands, flat target index (..., H, W) with −1 where out of view or invalid, the
    flat zbuf (N·H·W,) for gathering)."""
    h, w = depth_left.shape[-2:]
    z = depth_left.double()
    ur = (torch.arange(w, dtype=torch.float64) - _disparity(z, fx, baseline)).round().long()
    ok = (z > 0) & (ur >= 0) & (ur < w)
    rows = torch.arange(z[..., 0].numel()).reshape(z.shape[:-1])[..., None]  # flat row index over (..., H)
    target = torch.where(ok, rows * w + ur, -1)
    zbuf = scatter_kept(z, target, ok, z.numel(), "amin", float("inf"))
    return zbuf.reshape(z.shape), target, zbuf


def occlusion_mask_lr(
    depth_left: torch.Tensor, fx: float | torch.Tensor, baseline: float, tol_rel: float = 0.01
) -> torch.Tensor:
    """Left pixels (..., H, W) NOT visible in the right view: out of view (u − d outside the image), hidden
    behind a nearer surface (a z-buffered forward splat: the pixel's depth exceeds the nearest depth landing
    on its right-eye pixel by more than ``tol_rel``), or invalid depth (≤ 0). True = exclude."""
    _, target, zbuf = _splat_to_right(depth_left, fx, baseline)
    nearest = zbuf[target.clamp_min(0)].reshape(target.shape)
    return (target < 0) | (depth_left.double() > nearest * (1 + tol_rel))


def occlusion_mask_rl(
    depth_right: torch.Tensor, fx: float | torch.Tensor, baseline: float, tol_rel: float = 0.01
) -> torch.Tensor:
    """Right pixels (..., H, W) NOT visible in the left view (the mirror image of :func:`occlusion_mask_lr`)."""
    return occlusion_mask_lr(depth_right.flip(-1), fx, baseline, tol_rel).flip(-1)


def warp_disparity_lr(
    depth_left: torch.Tensor, fx: float | torch.Tensor, baseline: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The left view's disparity forward-warped into the right eye with a z-buffer (the nearest surface wins):
    (disparity (..., H, W) float64 in right-eye pixels, hit mask); holes (disocclusions) are 0 / False."""
    zbuf, _, _ = _splat_to_right(depth_left, fx, baseline)
    hit = torch.isfinite(zbuf)
    return torch.where(hit, _fx_b(fx, baseline, zbuf) / zbuf.clamp_min(_EPS), 0.0), hit


def reprojection_error_l2r(
    depth_left: torch.Tensor, depth_right: torch.Tensor, fx: float | torch.Tensor, baseline: float
) -> torch.Tensor:
    """Geometric consistency of two eyes' own depths, L→R, in disparity pixels: the left disparity splatted
    into the right eye (:func:`warp_disparity_lr`; only the nearest, visible surface lands, out-of-view points
    drop) against the right view's own disparity, on right pixels that got a hit and have valid right depth.
    Returns a float64 tensor of the leading shape (...,): mean |Δd| per map, NaN where none count."""
    warped, hit = warp_disparity_lr(depth_left, fx, baseline)
    ok = hit & (depth_right > 0)
    err = torch.where(ok, (warped - _disparity(depth_right, fx, baseline)).abs(), 0.0)
    return err.sum((-2, -1)) / ok.sum((-2, -1)).double()  # 0 / 0 = NaN where nothing counts


def reprojection_error_r2l(
    depth_left: torch.Tensor, depth_right: torch.Tensor, fx: float | torch.Tensor, baseline: float
) -> torch.Tensor:
    """The same check R→L: :func:`reprojection_error_l2r` with the eyes swapped (both images mirrored)."""
    return reprojection_error_l2r(depth_right.flip(-1), depth_left.flip(-1), fx, baseline)


def lr_inverse_consistency(
    depth_left: torch.Tensor,
    depth_right: torch.Tensor,
    fx: float | torch.Tensor,
    baseline: float,
    tol_rel: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The left-right check between two eyes' depths: for each left pixel x visible in the right view, go to
    the right at round(x − d_L(x)), read d_R there and compare: |d_L(x) − d_R(round(x − d_L(x)))| pixels.

    Returns (error map (..., H, W) float64, valid mask): valid = not occluded or out of view
    (:func:`occlusion_mask_lr`) and valid right depth at the looked-up pixel; the error is 0 elsewhere.
    """
    w = depth_left.shape[-1]
    d_left, d_right = _disparity(depth_left, fx, baseline), _disparity(depth_right, fx, baseline)
    ur = (torch.arange(w, dtype=torch.float64) - d_left).round().long().clamp(0, w - 1)
    looked_up = d_right.expand_as(d_left).gather(-1, ur)
    valid = ~occlusion_mask_lr(depth_left, fx, baseline, tol_rel) & (looked_up > 0)
    return torch.where(valid, (d_left - looked_up).abs(), 0.0), valid

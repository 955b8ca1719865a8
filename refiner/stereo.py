"""Metric stereo for VR: the right eye rendered from the left image and metric depth, and its checks.

The right camera sits ``baseline`` metres along the left camera's +x axis with the same intrinsics, so a
left pixel at column u with z-depth z appears in the right image at u − d, d = fx·baseline/z pixels.
Forward warping splats every left pixel to the nearest right pixel; where several land on one pixel the
nearest (smallest z) wins, and right pixels nobody lands on are holes (disocclusions). Backward
warping samples the left image at u + d_right(u), bilinearly. Tensors: images (C, H, W), maps (H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refiner.baselines import method_depths
from refiner.config import EvaluateParams, StereoParams
from refiner.evaluate import still_static_mask
from refiner.metrics import disparity_jitter
from refiner.store import open_group
from refiner.video import encode_mp4

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
    target = (v * w + ur)[ok]
    z = depth[ok].double()
    zbuf = torch.full((h * w,), float("inf"), dtype=torch.float64).scatter_reduce(0, target, z, reduce="amin")
    winner = z <= zbuf[target]  # the nearest surface at each target pixel
    out = torch.zeros(c, h * w, dtype=image.dtype)
    out[:, target[winner]] = image.reshape(c, -1)[:, ok.flatten()][:, winner]
    holes = ~torch.isfinite(zbuf)
    return out.reshape(c, h, w), holes.reshape(h, w)


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


def stereo_report(decoded: str | Path, sources: dict[str, np.ndarray], p: StereoParams) -> tuple[dict, list[dict]]:
    """Stereo metrics per depth source (T, H, W) on the decoded clip, and per-frame plot rows."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    rgb = torch.from_numpy(np.asarray(dec["rgb"][...])).permute(0, 3, 1, 2).float() / 255
    K = np.asarray(dec["K"][...])
    baseline = float(dec.attrs.get("baseline_m") or p.baseline_m)
    has_right = "rgb_right" in dec and "depth_gt_right" in dec
    static, n_static = still_static_mask(dec, rgb.shape[0])
    metrics: dict = {"baseline_m": baseline}
    rows: list[dict] = [{"frame": t} for t in range(len(next(iter(sources.values()))))]  # one column per source
    for name, depth_np in sources.items():
        depth = torch.from_numpy(depth_np)
        disp = torch.stack([disparity_from_depth(depth[t], float(K[t, 0, 0]), baseline) for t in range(len(depth))])
        m: dict = {}
        if has_right:
            photo_lr, photo_rl, geo, rt = [], [], [], []
            for t in range(len(depth)):
                right = torch.from_numpy(np.asarray(dec["rgb_right"][t])).permute(2, 0, 1).float() / 255
                gt_right = disparity_from_depth(
                    torch.from_numpy(np.asarray(dec["depth_gt_right"][t])), float(K[t, 0, 0]), baseline
                )
                warped, holes = forward_warp(rgb[t], disp[t], depth[t])
                photo_lr.append(float((warped - right).abs().mean(0)[~holes].mean()))
                back, valid = backward_warp(right, disp[t], sign=-1.0)
                photo_rl.append(float((back - rgb[t]).abs().mean(0)[valid].mean()))
                d_right, d_holes = forward_warp(disp[t][None], disp[t], depth[t])
                ok = ~d_holes & (gt_right > 0)
                geo.append(float((d_right[0] - gt_right).abs()[ok].mean()))
                rt.append(round_trip_error(rgb[t], disp[t], depth[t]))
            m.update(
                photometric_l2r=float(np.mean(photo_lr)),
                photometric_r2l=float(np.mean(photo_rl)),
                disparity_error_px=float(np.mean(geo)),
                round_trip_error=float(np.nanmean(rt)),
            )
        if n_static >= 2:
            jit = disparity_jitter(depth[:n_static], torch.from_numpy(K[:n_static, 0, 0]), baseline, static)
            m["disparity_jitter_px"] = float(jit.mean())
            m["temporal_pops"] = temporal_pops(jit, p.pop_threshold_px)
        med = [float(disp[t][depth[t] > 0].median()) for t in range(len(depth))]
        if n_static >= 2:  # still camera: the median disparity should not move
            m["static_median_disparity_range_px"] = float(np.ptp(med[:n_static]))
        metrics[name] = m
        for row, v in zip(rows, med, strict=True):
            row[f"{name}_median_disparity_px"] = v
    return metrics, rows


def sbs_video(decoded: str | Path, depth: np.ndarray, out: str | Path, p: StereoParams) -> int:
    """Left | synthesised right (disocclusion holes filled with the row's background) side-by-side mp4 for VR."""
    dec = open_group(decoded, ("rgb", "K"))
    K = np.asarray(dec["K"][...])
    baseline = float(dec.attrs.get("baseline_m") or p.baseline_m)
    frames = depth.shape[0] if p.max_video_frames is None else min(depth.shape[0], p.max_video_frames)

    def gen():
        for t in range(frames):
            left = torch.from_numpy(np.asarray(dec["rgb"][t])).permute(2, 0, 1).float()
            d = torch.from_numpy(depth[t])
            disp = disparity_from_depth(d, float(K[t, 0, 0]), baseline)
            right, holes = forward_warp(torch.cat([left, d[None]]), disp, d)  # colour and depth, one splat
            right = fill_holes(right[:3], holes, right[3])
            yield torch.cat([left, right], 2).permute(1, 2, 0).round().clamp(0, 255).byte().numpy()

    return encode_mp4(gen(), out, int(dec.attrs.get("fps", 24)))


def stereo_sources(decoded, teacher, refined, evaluate: EvaluateParams) -> dict[str, np.ndarray]:
    """Depth sources for the stereo table: teacher, EMA and bilateral baselines, refiner, and GT when present."""
    sources = method_depths(decoded, teacher, refined, evaluate)
    dec = open_group(decoded, ("rgb",))
    if "depth_gt" in dec:
        sources["gt"] = np.asarray(dec["depth_gt"][...], dtype=np.float32)
    return sources

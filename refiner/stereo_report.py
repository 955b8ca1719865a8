"""The stereo checks of one clip and its side-by-side VR video (the geometry lives in :mod:`refiner.stereo`).

Per depth source (teacher, EMA, bilateral, refiner; GT as the floor), with disparity d = fx·b/z in pixels:

- ``disparity_error_l2r_px``: the left depth's disparity splatted into the right eye (z-buffered) against the
  rendered right eye's GT disparity, on right pixels the left view sees (occlusions excluded);
- ``disparity_error_r2l_px``: the RIGHT eye's own depth from the same source (the right video run through
  the same teacher, filters and refiner) splatted into the left eye against the left GT, occlusions excluded;
- ``lr_consistency_px``: the left-right inverse-consistency score between the two eyes' depths of the source,
  |d_L(x) − d_R(x − d_L(x))| on left pixels visible in the right eye;
- ``photometric_l2r``: |right image − left image splatted with the left depth| on non-hole pixels (0–1);
- on the still-camera segment: disparity jitter (px), temporal pops, median-disparity range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from refiner.clip import Clip
from refiner.config import StereoParams
from refiner.metrics import disparity_jitter
from refiner.stereo import (
    disparity_from_depth,
    fill_holes,
    forward_warp,
    lr_inverse_consistency,
    lr_reprojection_error,
    temporal_pops,
)
from refiner.store import create_group, frames_array, small_array
from refiner.video import encode_mp4


def right_eye_store(clip: Clip, out: str | Path) -> bool:
    """A decoded-clip store of the right eye (its rendered RGB, GT depth and poses; same K), for running the
    teacher and refiner on it. False when the clip has no right eye."""
    dec = clip.dec
    if not {"rgb_right", "depth_gt_right"} <= set(dec):
        return False
    g = create_group(
        out, {k: v for k, v in dec.attrs.items()} | {"scene_id": f"{clip.dec.attrs.get('scene_id')}_right"}
    )
    for src, dst in (("rgb_right", "rgb"), ("depth_gt_right", "depth_gt")):
        frames_array(g, dst, dec[src].shape, dec[src].dtype)[...] = dec[src][...]
    small_array(g, "K", np.asarray(dec["K"][...]))
    if "poses_right" in dec:
        small_array(g, "poses", np.asarray(dec["poses_right"][...]))
    return True


def _pair_metrics(left: torch.Tensor, right: torch.Tensor | None, clip: Clip, fx: torch.Tensor, b: float) -> dict:
    """Both-eye checks of one source, means over frames (see the module docstring)."""
    gt_l, gt_r = (
        torch.from_numpy(np.asarray(clip.dec[k][...], dtype=np.float32)) for k in ("depth_gt", "depth_gt_right")
    )
    rgb_r = torch.from_numpy(np.asarray(clip.dec["rgb_right"][...])).permute(0, 3, 1, 2).float() / 255
    rgb_l = torch.from_numpy(np.asarray(clip.dec["rgb"][...])).permute(0, 3, 1, 2).float() / 255
    l2r, _ = lr_reprojection_error(left, gt_r, fx, b)
    photo = []
    for t in range(left.shape[0]):
        warped, holes = forward_warp(rgb_l[t], disparity_from_depth(left[t], float(fx[t]), b), left[t])
        photo.append(float((warped - rgb_r[t]).abs().mean(0)[~holes].mean()))
    m = {"disparity_error_l2r_px": float(np.nanmean(l2r.numpy())), "photometric_l2r": float(np.mean(photo))}
    if right is not None:
        _, r2l = lr_reprojection_error(gt_l, right, fx, b)
        err, valid = lr_inverse_consistency(left, right, fx, b)
        m["disparity_error_r2l_px"] = float(np.nanmean(r2l.numpy()))
        m["lr_consistency_px"] = float(err.sum() / valid.sum().clamp_min(1))
    return m


def stereo_metrics(clip: Clip, left: dict[str, np.ndarray], right: dict[str, np.ndarray], p: StereoParams) -> tuple:
    """(metrics per source, per-frame rows of median disparity) for left-eye depths and, where given,
    the same sources' right-eye depths."""
    fx = torch.from_numpy(clip.K()[:, 0, 0])
    b = float(clip.dec.attrs.get("baseline_m") or p.baseline_m)
    static, n = clip.still_static()
    has_right = clip.has_gt and "depth_gt_right" in clip.dec
    metrics: dict = {"baseline_m": b}
    rows = [{"frame": t} for t in range(clip.frames)]
    for name, depth_np in left.items():
        depth = torch.from_numpy(depth_np)
        r = torch.from_numpy(right[name]) if name in right else None
        m = _pair_metrics(depth, r, clip, fx, b) if has_right else {}
        if n:
            jit = disparity_jitter(depth[:n], fx[:n], b, static)
            m.update(disparity_jitter_px=float(jit.mean()), temporal_pops=temporal_pops(jit, p.pop_threshold_px))
        med = [float((fx[t] * b / depth[t][depth[t] > 0]).median()) for t in range(clip.frames)]
        if n:
            m["static_median_disparity_range_px"] = float(np.ptp(med[:n]))
        metrics[name] = m
        for row, v in zip(rows, med, strict=True):
            row[f"{name}_median_disparity_px"] = v
    return metrics, rows


def sbs_video(clip: Clip, depth: np.ndarray, out: str | Path, p: StereoParams) -> int:
    """Left | synthesised right (disocclusion holes filled with the row's background) side-by-side mp4 for VR."""
    K = clip.K()
    baseline = float(clip.dec.attrs.get("baseline_m") or p.baseline_m)
    frames = depth.shape[0] if p.max_video_frames is None else min(depth.shape[0], p.max_video_frames)

    def gen():
        for t in range(frames):
            left = torch.from_numpy(clip.rgb((t, slice(None), slice(None)))).permute(2, 0, 1).float()
            d = torch.from_numpy(depth[t])
            disp = disparity_from_depth(d, float(K[t, 0, 0]), baseline)
            right, holes = forward_warp(torch.cat([left, d[None]]), disp, d)  # colour and depth, one splat
            right = fill_holes(right[:3], holes, right[3])
            yield torch.cat([left, right], 2).permute(1, 2, 0).round().clamp(0, 255).byte().numpy()

    return encode_mp4(gen(), out, clip.fps)

"""The stereo checks of one clip and its side-by-side VR video (the geometry lives in :mod:`refiner.stereo`).

Per depth source (teacher, EMA, bilateral, refiner; GT as the floor), with disparity d = fx·b/z in DISPLAY pixels
(fx of the source camera, :meth:`refiner.clip.Clip.display_fx`; the warps run on the canonical grid and their
pixel errors are scaled to display pixels):

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
from refiner.source_res import SourceFrames, source_K, source_rgb, stereo_video, store_map
from refiner.stereo import (
    disparity_from_depth,
    forward_warp,
    lr_inverse_consistency,
    lr_reprojection_error,
    sbs_frame,
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
    if "mapping" in dec:  # the same canonical map: display pixels and source-resolution outputs match the left eye
        small_array(g, "mapping", np.asarray(dec["mapping"][...]))
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
    px = float(clip.display_fx()[0] / fx[0])  # canonical -> display pixels
    m = {"disparity_error_l2r_px": px * float(np.nanmean(l2r.numpy())), "photometric_l2r": float(np.mean(photo))}
    if right is not None:
        _, r2l = lr_reprojection_error(gt_l, right, fx, b)
        err, valid = lr_inverse_consistency(left, right, fx, b)
        m["disparity_error_r2l_px"] = px * float(np.nanmean(r2l.numpy()))
        m["lr_consistency_px"] = px * float(err.sum() / valid.sum().clamp_min(1))
    return m


def stereo_metrics(clip: Clip, left: dict[str, np.ndarray], right: dict[str, np.ndarray], p: StereoParams) -> tuple:
    """(metrics per source, per-frame rows of median disparity) for left-eye depths and, where given,
    the same sources' right-eye depths."""
    fx, fx_display = torch.from_numpy(clip.K()[:, 0, 0]), torch.from_numpy(clip.display_fx())
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
            jit = disparity_jitter(depth[:n], fx_display[:n], b, static)
            m.update(disparity_jitter_px=float(jit.mean()), temporal_pops=temporal_pops(jit, p.pop_threshold_px))
        med = [float((fx_display[t] * b / depth[t][depth[t] > 0]).median()) for t in range(clip.frames)]
        if n:
            m["static_median_disparity_range_px"] = float(np.ptp(med[:n]))
        metrics[name] = m
        for row, v in zip(rows, med, strict=True):
            row[f"{name}_median_disparity_px"] = v
    return metrics, rows


def sbs_video(clip: Clip, depth: np.ndarray, out: str | Path, p: StereoParams) -> int:
    """Left | synthesised right (disocclusion holes filled with the row's background) side-by-side mp4 for VR, at
    the source video's resolution (d = fx_source·b/z display pixels) when the decoded store names its video, else
    on the canonical grid."""
    K = clip.K()
    baseline = float(clip.dec.attrs.get("baseline_m") or p.baseline_m)
    rgb = source_rgb(clip.dec)
    if rgb is not None:
        src = SourceFrames(depth, store_map(clip.dec))
        return stereo_video(rgb, src, source_K(clip.dec)[:, 0, 0], baseline, out, clip.fps, p.max_video_frames, False)
    frames = depth.shape[0] if p.max_video_frames is None else min(depth.shape[0], p.max_video_frames)

    def gen():
        for t in range(frames):
            yield sbs_frame(clip.rgb((t, slice(None), slice(None))), depth[t], float(K[t, 0, 0]), baseline)

    return encode_mp4(gen(), out, clip.fps)

"""The stereo checks of one clip from both eyes' depths (:mod:`refiner.evaluation.method_depths`; the geometry lives
in :mod:`refiner.geometry.warp`).

Per depth source (teacher, EMA, bilateral, refiner; GT as the floor), with disparity d = fx·b/z in DISPLAY pixels
(fx of the source camera, :meth:`refiner.data.clip.Clip.display_fx`; the warps run on the canonical grid and their
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

from collections.abc import Mapping

import numpy as np
import torch

from refiner.core.config import StereoParams
from refiner.data.clip import Clip, full
from refiner.evaluation.depth_metrics import disparity_jitter
from refiner.geometry.warp import (
    disparity_from_depth,
    forward_warp,
    lr_inverse_consistency,
    reprojection_error_l2r,
    reprojection_error_r2l,
    temporal_pops,
)

STEP = 24  # frames read at a time: memory is flat in clip length


def _frames(array, lo: int, hi: int) -> torch.Tensor:
    """Frames lo..hi−1 of a NumPy or Zarr depth array as a float32 tensor."""
    return torch.from_numpy(np.asarray(array[lo:hi], dtype=np.float32))


def _both_eyes(clip: Clip, lo: int, hi: int) -> dict[str, torch.Tensor]:
    """GT depth and RGB (0–1) of both eyes for frames lo..hi−1 (the left eye through the clip's checked getters)."""
    win = full(slice(lo, hi))
    rgb = [torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 for x in (clip.rgb(win), clip.dec["rgb_right"][lo:hi])]
    gt_r = _frames(clip.dec["depth_gt_right"], lo, hi)
    return {"gt_l": torch.from_numpy(clip.gt(win)), "gt_r": gt_r, "rgb": rgb[0], "rgb_right": rgb[1]}


def _add_pair_chunk(acc: dict, left: torch.Tensor, right: torch.Tensor | None, eyes: dict, fx: torch.Tensor, b: float):
    """One chunk of a source's both-eye checks into its running values (see the module docstring)."""
    l2r = reprojection_error_l2r(left, eyes["gt_r"], fx, b)
    acc["l2r"] += l2r.tolist()
    for t in range(left.shape[0]):
        warped, holes = forward_warp(eyes["rgb"][t], disparity_from_depth(left[t], float(fx[t]), b), left[t])
        acc["photo"].append(float((warped - eyes["rgb_right"][t]).abs().mean(0)[~holes].mean()))
    if right is not None:
        r2l = reprojection_error_r2l(eyes["gt_l"], right, fx, b)
        err, valid = lr_inverse_consistency(left, right, fx, b)
        acc["r2l"] += r2l.tolist()
        acc["lr"] = (acc["lr"][0] + float(err.sum()), acc["lr"][1] + int(valid.sum()))


def _pair_figures(acc: dict, px: float) -> dict[str, float]:
    """Means over frames of a source's running both-eye values, in display pixels."""
    m = {"disparity_error_l2r_px": px * float(np.nanmean(acc["l2r"])), "photometric_l2r": float(np.mean(acc["photo"]))}
    if acc["r2l"]:
        m["disparity_error_r2l_px"] = px * float(np.nanmean(acc["r2l"]))
        m["lr_consistency_px"] = px * acc["lr"][0] / max(acc["lr"][1], 1)
    return m


def _still_figures(depth: torch.Tensor, fx: torch.Tensor, b: float, static: torch.Tensor, p: StereoParams) -> dict:
    """Disparity jitter and temporal pops on the still-camera segment (depth (n, H, W))."""
    jit = disparity_jitter(depth, fx, b, static)
    return {"disparity_jitter_px": float(jit.mean()), "temporal_pops": temporal_pops(jit, p.pop_threshold_px)}


def stereo_metrics(clip: Clip, left: Mapping, right: Mapping, p: StereoParams, step: int = STEP) -> tuple:
    """(metrics per source, per-frame rows of median disparity) for left-eye depths and, where given, the same
    sources' right-eye depths. Depths are (T, H, W) NumPy or Zarr arrays, read ``step`` frames at a time."""
    fx, fx_display = torch.from_numpy(clip.K()[:, 0, 0]), torch.from_numpy(clip.display_fx())
    b = clip.baseline_m(p.baseline_m)
    static, n = clip.still_static()
    has_right = clip.has_gt and "depth_gt_right" in clip.dec
    acc = {name: {"l2r": [], "photo": [], "r2l": [], "lr": (0.0, 0), "med": []} for name in left}
    for lo in range(0, clip.frames, step):
        hi = min(clip.frames, lo + step)
        eyes = _both_eyes(clip, lo, hi) if has_right else None
        for name, array in left.items():
            d = _frames(array, lo, hi)
            acc[name]["med"] += [float((fx_display[lo + i] * b / x[x > 0]).median()) for i, x in enumerate(d)]
            if eyes is not None:
                r = _frames(right[name], lo, hi) if name in right else None
                _add_pair_chunk(acc[name], d, r, eyes, fx[lo:hi], b)
    metrics: dict = {"baseline_m": b}
    px = float(clip.display_fx()[0] / fx[0])  # canonical -> display pixels
    for name, array in left.items():
        m = _pair_figures(acc[name], px) if has_right else {}
        if n:
            m.update(_still_figures(_frames(array, 0, n), fx_display[:n], b, static, p))
            m["static_median_disparity_range_px"] = float(np.ptp(acc[name]["med"][:n]))
        metrics[name] = m
    metrics["skipped"] = stereo_skips(clip.frames, has_right, n)
    rows = [
        {"frame": t, **{f"{name}_median_disparity_px": acc[name]["med"][t] for name in left}}
        for t in range(clip.frames)
    ]
    return metrics, rows


def stereo_skips(frames: int, has_right: bool, still_frames: int) -> dict[str, str]:
    """The checks a clip cannot have, each with the reason in words."""
    out = {}
    if not has_right:
        out["both_eyes"] = (
            "the clip has no rendered right eye (depth_gt_right): the L→R and R→L disparity errors, the LR consistency "
            "and the photometric check need it"
        )
    still = "disparity jitter, temporal pops and the median-disparity range"
    if frames < 2:
        out["still"] = f"skipped: needs ≥ 2 frames (the clip has {frames}): {still} compare frames"
    elif not still_frames:
        out["still"] = f"the clip has no still-camera segment (static_frames attribute): {still} need it"
    return out

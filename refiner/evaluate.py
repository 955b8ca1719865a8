"""Score one clip: the raw teacher, its EMA and temporal bilateral filters, and the refiner, in one table.

Per method (definitions in :mod:`refiner.metrics` and :mod:`refiner.perceptual`): AbsRel, RMSE, log-RMSE,
δ1–3 (metric, no alignment); static-region flicker (std and MAD over the still-camera segment); TAE two
ways (``tae``: masked, z-buffered, metric; ``tae_vda``: Video Depth Anything's protocol); OPW two ways
(``opw_metric``: metric, motion compensated; ``opw_nvds``: NVDS's per-frame normalised disparity);
T-SCIN (LPIPS on temporal gradients, when the LPIPS backbone weights are available; else the metrics say
why in words); disparity jitter; per-frame scale; errors stratified by teacher confidence and by motion.
A metric that cannot be computed is listed under ``skipped`` with the reason; a NaN never passes silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from refiner.baselines import baseline_depths
from refiner.clip import Clip, full
from refiner.config import EvaluateParams
from refiner.metrics import (
    disparity_jitter,
    flicker,
    mean_errors,
    opw_metric,
    opw_nvds,
    per_frame_errors,
    scale_ratios,
    stratified,
    tae,
    tae_vda,
)
from refiner.perceptual import t_scin
from refiner.store import check_finite, open_group

METHODS = ("teacher", "ema", "bilateral", "refiner")


@dataclass
class Scene:
    """Everything of one clip that scoring reads, as tensors."""

    rgb: torch.Tensor  # (T, 3, H, W) in [0, 1]
    K: torch.Tensor  # (T, 3, 3)
    display_fx: torch.Tensor  # (T,) the source camera's fx: disparities in display (source video) pixels
    gt: torch.Tensor | None  # (T, H, W)
    poses: torch.Tensor | None  # (T, 4, 4) camera-to-world
    moving: torch.Tensor | None  # (T, H, W) bool
    conf: torch.Tensor  # (T, H, W) teacher confidence
    static: torch.Tensor  # (H, W) static pixels of the still-camera segment
    n_static: int  # its length (0: no still segment)
    baseline: float


def load_scene(clip: Clip, p: EvaluateParams) -> Scene:
    win = full(slice(None))
    moving = clip.moving(win)
    static, n = clip.still_static()
    poses = clip.poses()
    return Scene(
        rgb=torch.from_numpy(clip.rgb(win)).permute(0, 3, 1, 2).float() / 255,
        K=torch.from_numpy(clip.K()),
        display_fx=torch.from_numpy(clip.display_fx()),
        gt=torch.from_numpy(clip.gt(win)) if clip.has_gt else None,
        poses=None if poses is None else torch.from_numpy(poses),
        moving=None if moving is None else torch.from_numpy(moving),
        conf=torch.from_numpy(clip.confidence(win)),
        static=static,
        n_static=n,
        baseline=float(clip.dec.attrs.get("baseline_m") or p.baseline_m),
    )


def method_depths(clip: Clip, refined: str, p: EvaluateParams) -> dict[str, np.ndarray]:
    """Depth (T, H, W) of every scored method: the teacher, its EMA and bilateral filters, the refiner."""
    tea = clip.teacher_depth(full(slice(None)))
    ref = np.asarray(open_group(refined, ("depth",), "refined depth store")["depth"][...], dtype=np.float32)
    if ref.shape != tea.shape:
        raise ValueError(f"{refined}: shape {ref.shape} differs from the teacher's {tea.shape}; re-run infer")
    check_finite(ref, f"{refined}/depth")
    return {"teacher": tea, **baseline_depths(tea, clip.rgb(full(slice(None))), p), "refiner": ref}


def score(d: torch.Tensor, s: Scene, p: EvaluateParams, lpips_model) -> dict[str, float]:
    """Every figure of one method's depth (T, H, W) on the scene."""
    m: dict[str, float] = {}
    if s.gt is not None:
        m.update(mean_errors(per_frame_errors(d, s.gt)))
        m["scale_ratio_std"] = float(scale_ratios(d, s.gt, s.moving).std())
        if lpips_model is not None:
            m["t_scin"] = t_scin(d, s.gt, lpips_model)
    if s.n_static >= 2:
        f = flicker(d[: s.n_static], s.static)
        m["flicker_std_rel"], m["flicker_mad_rel"] = f["std_rel"], f["mad_rel"]
        m["disparity_jitter_px"] = float(
            disparity_jitter(d[: s.n_static], s.display_fx[: s.n_static], s.baseline, s.static).mean()
        )
    if s.poses is not None and s.gt is not None:
        m["tae"] = tae(d, s.K, s.poses, s.gt, s.moving)
        m["tae_vda"] = tae_vda(d, s.K, s.poses, s.gt, max_depth=p.tae_max_depth_m)
        m["opw_metric"] = opw_metric(d, s.rgb, s.K, s.poses, s.gt, s.moving, p.opw_weight)
        m["opw_nvds"] = opw_nvds(d, s.rgb, s.K, s.poses, s.gt)
    bad = [k for k, v in m.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"metric(s) {bad} are not finite: the depth or ground truth has no valid pixels there")
    return m


def skipped_metrics(s: Scene, lpips_note: str | None) -> dict[str, str]:
    """The metrics this clip cannot have, each with the reason in words."""
    out = {}
    if s.gt is None:
        out["gt_metrics"] = "the clip has no ground truth: AbsRel, RMSE, δ, TAE, OPW, T-SCIN need it"
    elif s.poses is None:
        out["tae_opw"] = "the clip has no camera poses: TAE and OPW need them"
    if lpips_note is not None and s.gt is not None:
        out["t_scin"] = lpips_note
    if s.n_static < 2:
        out["flicker"] = "the clip has no still-camera segment (static_frames attribute): flicker and jitter need it"
    return out


def motion_strata(d: torch.Tensor, teacher: torch.Tensor, s: Scene) -> dict[str, dict[str, float]]:
    """AbsRel and mean |ΔD| on moving-object pixels and on static-scene pixels (flicker only on the latter)."""
    out = {}
    for name, sel in (("moving", s.moving), ("static", ~s.moving)):
        ok = sel & (s.gt > 0) & (d > 0)
        if not ok.any():
            continue
        out[name] = {
            "share": float(ok.float().mean()),
            "absrel": float(((d - s.gt).abs() / s.gt)[ok].double().mean()),
            "mean_abs_delta_m": float((d - teacher).abs()[ok].double().mean()),
        }
    return out


def per_window_medians(d: torch.Tensor, s: Scene, length: int) -> list[float]:
    """Median depth over static-scene valid pixels per window of ``length`` frames (the do-no-harm drift curve)."""
    ok = (d > 0) & (~s.moving if s.moving is not None else torch.ones_like(d, dtype=torch.bool))
    return [float(d[t : t + length][ok[t : t + length]].median()) for t in range(0, d.shape[0], length)]


def ratios(methods: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Refiner figure / baseline figure for every figure both have, against the teacher and the bilateral filter."""
    r = methods["refiner"]
    return {
        f"refiner_vs_{base}": {k: r[k] / methods[base][k] for k in r if k in methods[base] and methods[base][k] != 0}
        for base in ("teacher", "bilateral")
    }


def _rows(depths: dict[str, torch.Tensor], s: Scene) -> list[dict]:
    """Per-frame plot rows, one column per method: AbsRel and scale (median D/G), when the clip has GT."""
    rows = [{"frame": t} for t in range(next(iter(depths.values())).shape[0])]
    if s.gt is None:
        return rows
    for name, d in depths.items():
        errs, scale = per_frame_errors(d, s.gt), scale_ratios(d, s.gt, s.moving)
        for t, row in enumerate(rows):
            row[f"{name}_absrel"], row[f"{name}_scale_ratio"] = errs[t]["absrel"], float(scale[t])
    return rows


def evaluate_clip(clip: Clip, refined: str, p: EvaluateParams, window: int, lpips=(None, None)) -> dict:
    """Metrics of one clip (methods, ratios, strata, GT floors, skipped), per-frame rows and drift rows."""
    s = load_scene(clip, p)
    depths = {k: torch.from_numpy(v) for k, v in method_depths(clip, refined, p).items()}
    metrics: dict = {"methods": {name: score(d, s, p, lpips[0]) for name, d in depths.items()}}
    metrics["ratios"] = ratios(metrics["methods"])
    if s.gt is not None:
        strata = {
            n: stratified(depths[n], depths["teacher"], s.gt, s.conf, s.static, s.n_static)
            for n in ("teacher", "refiner")
        }
        if s.moving is not None:
            for n in strata:
                strata[n].update(motion_strata(depths[n], depths["teacher"], s))
        metrics["stratified"] = strata
        metrics["gt_floor"] = {k: v for k, v in score(s.gt, s, p, None).items() if k.startswith(("tae", "opw"))}
    metrics["skipped"] = skipped_metrics(s, lpips[1])
    drift = {n: per_window_medians(depths[n], s, window) for n in ("teacher", "refiner")}
    drift_rows = [
        {"window": i, "teacher_median_m": a, "refiner_median_m": b}
        for i, (a, b) in enumerate(zip(drift["teacher"], drift["refiner"], strict=True))
    ]
    return {"metrics": metrics, "per_frame": _rows(depths, s), "drift": drift_rows, "depths": depths, "scene": s}

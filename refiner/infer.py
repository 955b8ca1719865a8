"""Windowed inference over a clip of any length with memory bounded by one window.

Per window (the same N, To and keyframes as training, read lazily by :class:`ClipWindows`): teacher
depth/confidence → optional temporal EMA of c(x) → refiner (SSM at the low-res grid; with
``model.carry_state`` its forward scan starts from the state the previous window left after the frame
before this window's start, so context runs over the whole clip at constant memory) → residual ΔD
blended across overlapping windows (:class:`WindowBlender`) → refined = teacher + ΔD, clamped to the
depth range. Drift control: optional per-window bias removal on a cadence (toward the teacher, never a
global rescale) and a warning when the refined/teacher ratio of the centre patch's median depth trends.
A clip shorter than N frames is one short window.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refiner.clip import Clip, full
from refiner.config import InferParams, WindowParams
from refiner.dataset import ClipWindows
from refiner.export import export_frames, side_by_side_video
from refiner.masks import static_gate
from refiner.source_res import SourceFrames, store_map
from refiner.store import atomic_path, atomic_paths, create_group, frames_array, open_group, write_csv, write_json
from refiner.windows import WindowBlender

OCCLUDED_WEIGHT = 0.1  # blending weight factor of a pixel a window sees changing colour (occlusion, motion)


def drift_trend(medians: np.ndarray) -> float:
    """Relative change of a per-frame median depth over the clip from a least-squares line (0 for < 2 frames).

    Non-finite input is an error (a NaN must never read as "no drift")."""
    if not np.isfinite(medians).all():
        raise ValueError(f"drift monitor: {int((~np.isfinite(medians)).sum())} non-finite patch median(s)")
    if len(medians) < 2:
        return 0.0
    slope, intercept = np.polyfit(np.arange(len(medians)), medians, 1)
    return float(slope * (len(medians) - 1) / max(abs(intercept), 1e-6))


def occlusion_weights(rgb: torch.Tensor, factor: int) -> np.ndarray:
    """(n, H, W) blending weight factors of one window's frames (rgb [n, 3, H, W]): 1 where the low-res
    photometric check finds the colour steady with both temporal neighbours, ``OCCLUDED_WEIGHT`` elsewhere."""
    if rgb.shape[0] < 2:
        return np.ones((rgb.shape[0], *rgb.shape[-2:]), dtype=np.float32)
    gate = static_gate(rgb[None], factor)[0, :, 0]  # [n-1, H, W], pair (t, t+1)
    steady = torch.ones(rgb.shape[0], *rgb.shape[-2:])
    steady[:-1] = torch.minimum(steady[:-1], gate)
    steady[1:] = torch.minimum(steady[1:], gate)
    return (OCCLUDED_WEIGHT + (1 - OCCLUDED_WEIGHT) * steady).numpy()


@dataclass
class _Monitor:
    """Per-frame centre-patch medians (refined, teacher) and per-window residual statistics."""

    patch: tuple[slice, slice]
    refined: dict[int, float] = field(default_factory=dict)
    teacher: dict[int, float] = field(default_factory=dict)
    clamp_hits: list[float] = field(default_factory=list)
    abs_delta: list[float] = field(default_factory=list)

    def frame(self, t: int, refined: np.ndarray, base: np.ndarray) -> None:
        self.refined[t], self.teacher[t] = float(np.median(refined[self.patch])), float(np.median(base[self.patch]))

    def curves(self) -> tuple[np.ndarray, np.ndarray]:
        keys = sorted(self.refined)
        return np.array([self.refined[t] for t in keys]), np.array([self.teacher[t] for t in keys])


def _patch(height: int, width: int, fraction: float) -> tuple[slice, slice]:
    ph, pw = max(1, int(height * fraction)), max(1, int(width * fraction))
    return slice((height - ph) // 2, (height - ph) // 2 + ph), slice((width - pw) // 2, (width - pw) // 2 + pw)


def _smooth_confidence(conf: torch.Tensor, start: int, eta: float, cache: dict[int, torch.Tensor]) -> torch.Tensor:
    """Causal EMA of c(x) over the clip; frames shared with the previous window reuse their smoothed value."""
    out = conf.clone()
    for i in range(conf.shape[0]):
        t = start + i
        if t not in cache:
            prev = cache.get(t - 1)
            cache[t] = conf[i] if prev is None else eta * prev + (1 - eta) * conf[i]
        out[i] = cache[t]
    for t in [t for t in cache if t < start - 1]:
        del cache[t]
    return out


def _window_delta(model, batch: dict, p: InferParams, state, state_index, device) -> tuple[torch.Tensor, object, float]:
    """(ΔD [n, H, W] of one window, the carried state for the next, clamp hit rate)."""
    inputs = {k: v[None].to(device) for k, v in batch.items() if v.dim() > 0}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with autocast:
        out = model(
            inputs["depth"],
            inputs["conf"],
            inputs["rgb"],
            inputs["keyframes"],
            hard_clamp=p.hard_clamp,
            state=state,
            state_index=state_index,
        )
    return out.delta_full.float()[0, :, 0].cpu(), out.state, float(max(out.clamp_hit_rate.values()))


@torch.no_grad()
def refine_clip(
    model,
    clip: Clip,
    out: str | Path,
    windows: WindowParams,
    p: InferParams,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Refine every frame of ``clip`` into the Zarr store ``out`` (arrays ``depth`` and ``delta``); returns stats."""
    device = torch.device(device)
    frames = ClipWindows(clip, windows.length, windows.keyframes, windows.overlap)
    starts, total = frames.starts, clip.frames
    blender = WindowBlender(windows.keyframes, p.keyframe_tau, p.keyframe_boost)
    monitor, conf_cache, state = _Monitor(_patch(clip.height, clip.width, p.drift_patch)), {}, None
    carry = bool(getattr(model.p, "carry_state", False))
    with atomic_path(out) as tmp:
        group = create_group(tmp, {"description": "refined z-depth in metres (teacher + blended residual)"})
        arrays = {n: frames_array(group, n, (total, clip.height, clip.width), np.float32) for n in ("depth", "delta")}

        def flush(before: int) -> None:
            for t, delta in blender.pop_ready(before):
                base = clip.teacher_depth(full(t))
                refined = np.where(base > 0, np.clip(base + delta, p.min_depth_m, p.max_depth_m), 0).astype(np.float32)
                if not np.isfinite(refined).all():
                    raise ValueError(f"refined depth of frame {t} is not finite; check the checkpoint")
                arrays["depth"][t], arrays["delta"][t] = refined, refined - base
                monitor.frame(t, refined, base)

        for k in tqdm(range(len(frames)), desc="infer", disable=not progress):
            batch, s = frames[k], starts[k]
            if p.confidence_ema > 0:
                batch["conf"] = _smooth_confidence(batch["conf"], s, p.confidence_ema, conf_cache)
            nxt = starts[k + 1] - s - 1 if carry and k + 1 < len(starts) else None
            delta, state, hits = _window_delta(model, batch, p, state if carry else None, nxt, device)
            if p.reanchor_every and k % p.reanchor_every == 0:
                teacher_w = batch["depth"][:, 0]
                valid = teacher_w > 0
                bias = (delta[valid] / teacher_w[valid]).mean() if valid.any() else delta.new_zeros(())
                delta = delta - bias * teacher_w  # remove this window's mean relative residual
            monitor.clamp_hits.append(hits)
            monitor.abs_delta.append(float(delta.abs().mean()))
            gate = occlusion_weights(batch["rgb"], clip.factor) if p.occlusion_gating else None
            blender.add(s, delta.numpy(), gate)
            flush(starts[k + 1] if k + 1 < len(starts) else total)
        flush(total)
    return _stats(monitor, total, len(starts), p)


def _stats(monitor: _Monitor, total: int, windows: int, p: InferParams) -> dict:
    refined, teacher = monitor.curves()
    drift = drift_trend(refined / np.maximum(teacher, 1e-6))
    if abs(drift) > p.drift_warn_rel:
        warnings.warn(
            f"refined depth drifts by {drift:+.1%} against the teacher over the clip on the centre patch "
            f"(threshold {p.drift_warn_rel:.1%}); consider infer.reanchor_every",
            stacklevel=3,
        )
    return {
        "frames": total,
        "windows": windows,
        "clamp_hit_rate": float(np.mean(monitor.clamp_hits)),
        "mean_abs_delta_m": float(np.mean(monitor.abs_delta)),
        "drift_rel": drift,
        "patch_median_depth": refined.tolist(),
        "teacher_patch_median_depth": teacher.tolist(),
    }


def _write_outputs(clip: Clip, p, refined, frames_dir: Path, reports_dir: Path, stats: dict) -> None:
    """Frame exports and the teacher | refined (| GT) video at the source resolution; metrics and drift rows."""
    m = store_map(clip.dec)  # exports at the source video's resolution
    png_range = (p.min_depth_m, p.max_depth_m)
    export_frames(SourceFrames(refined, m), frames_dir, npy=p.export_npy, png=p.export_png16, png_range=png_range)
    panels = [clip.tea["depth"], refined] + ([clip.dec["depth_gt"]] if clip.has_gt else [])
    side_by_side_video([SourceFrames(x, m) for x in panels], reports_dir / "side_by_side.mp4", fps=clip.fps)
    medians, teacher_medians = stats.pop("patch_median_depth"), stats.pop("teacher_patch_median_depth")
    write_json(reports_dir / "metrics.json", {**stats, "provenance": clip.provenance()})
    write_csv(
        reports_dir / "drift.csv",
        [
            {"frame": t, "refined_patch_median_m": m, "teacher_patch_median_m": mt}
            for t, (m, mt) in enumerate(zip(medians, teacher_medians, strict=True))
        ],
    )


def run_infer(
    model, clip: Clip, params, out: str | Path, frames_dir: str | Path, reports_dir: str | Path, progress: bool = True
) -> dict:
    """Refine the clip into ``out`` (canonical grid), export frames (``frames_dir``) and the teacher | refined (| GT)
    video at the source resolution, the metrics and drift plot data (``reports_dir``). Shared by the infer stage
    and the one-command tool (:mod:`refiner.cli`)."""
    device = next(model.parameters()).device
    if model.factor != clip.factor:
        raise ValueError(
            f"the model was trained with low-res factor {model.factor} but {clip.teacher_path} was cached with "
            f"{clip.factor}; re-run the teacher with teacher.low_res_factor {model.factor}"
        )
    with atomic_paths(out, frames_dir, reports_dir) as (out_tmp, frames_tmp, reports_tmp):
        stats = refine_clip(model, clip, out_tmp, params.windows, params.infer, device, progress)
        _write_outputs(clip, params.infer, open_group(out_tmp)["depth"], frames_tmp, reports_tmp, stats)
    return stats

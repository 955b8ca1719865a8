"""Windowed inference over a clip of any length with memory bounded by one window.

Per window (the same N, To and keyframes as training, read lazily by :class:`ClipWindows`):
teacher depth/confidence → optional temporal EMA of c(x) → refiner (SSM at the low-res grid,
residual upsampled with M, hard clamp optional) → residual ΔD blended across overlapping windows
(:class:`WindowBlender`) → refined = teacher + ΔD, clamped to the depth range. Drift control:
optional per-window bias removal on a cadence (toward the teacher, never a global rescale) and a
warning when the refined/teacher ratio of the centre patch's median depth trends over the clip
(the refiner must not add drift of its own).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refiner.checkpoint import load_refiner
from refiner.config import InferParams, Params, WindowParams
from refiner.dataset import STATIC_COLOUR_THRESHOLD, ClipWindows, run_refiner
from refiner.export import export_frames, side_by_side_video
from refiner.losses import static_gate
from refiner.lowres import downsample
from refiner.store import atomic_path, create_group, frames_array, open_group, write_csv, write_json
from refiner.teachers.cache import write_teacher_store
from refiner.windows import WindowBlender, window_starts


def drift_trend(medians: np.ndarray) -> float:
    """Relative change of a per-frame median depth over the clip from a least-squares line (0 for < 2 frames)."""
    if len(medians) < 2 or not np.isfinite(medians).all():
        return 0.0
    slope, intercept = np.polyfit(np.arange(len(medians)), medians, 1)
    return float(slope * (len(medians) - 1) / max(abs(intercept), 1e-6))


OCCLUDED_WEIGHT = 0.1  # blending weight factor of a pixel a window sees changing colour (occlusion, motion)


def occlusion_weights(rgb: torch.Tensor, factor: int) -> np.ndarray:
    """(n, H, W) blending weight factors of one window's frames (rgb [n, 3, H, W]): 1 where the low-res
    photometric check (:func:`refiner.losses.static_gate`) finds the colour steady with both temporal
    neighbours, ``OCCLUDED_WEIGHT`` where it changes (occlusions, moving edges)."""
    if rgb.shape[0] < 2:
        return np.ones((rgb.shape[0], *rgb.shape[-2:]), dtype=np.float32)
    gate = static_gate(rgb[None], factor, STATIC_COLOUR_THRESHOLD)[0, :, 0]  # [n-1, H, W], pair (t, t+1)
    steady = torch.ones(rgb.shape[0], *rgb.shape[-2:])
    steady[:-1] = torch.minimum(steady[:-1], gate)
    steady[1:] = torch.minimum(steady[1:], gate)
    return (OCCLUDED_WEIGHT + (1 - OCCLUDED_WEIGHT) * steady).numpy()


@torch.no_grad()
def refine_clip(
    model: torch.nn.Module,
    mapping: torch.Tensor,
    decoded: str | Path,
    teacher: str | Path,
    out: str | Path,
    windows: WindowParams,
    p: InferParams,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Refine every frame of a clip into the Zarr store ``out`` (arrays ``depth`` and ``delta``); returns stats."""
    device = torch.device(device)
    frames = ClipWindows(decoded, teacher, windows.length, windows.keyframes, overlap=windows.overlap)
    total, size = frames.hi, frames.size
    starts = window_starts(total, frames.length, windows.overlap)
    assert frames.starts == starts
    blender = WindowBlender(windows.keyframes, p.keyframe_tau, p.keyframe_boost)
    tea = open_group(teacher)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )  # fp32 on CPU
    conf_state: torch.Tensor | None = None
    conf_cache: dict[int, torch.Tensor] = {}  # smoothed c(x) of the current window's frames
    patch = max(1, int(size * p.drift_patch))
    lo = (size - patch) // 2
    medians, teacher_medians = np.zeros(total), np.zeros(total)
    clamp_hits, abs_delta = [], []
    with atomic_path(out) as tmp:
        group = create_group(tmp, {"description": "refined z-depth in metres (teacher + blended residual)"})
        depth_arr = frames_array(group, "depth", (total, size, size), np.float32)
        delta_arr = frames_array(group, "delta", (total, size, size), np.float32)

        def flush(before: int) -> None:
            for t, delta in blender.pop_ready(before):
                base = np.asarray(tea["depth"][t], dtype=np.float32)
                refined = np.where(base > 0, np.clip(base + delta, p.min_depth_m, p.max_depth_m), 0).astype(np.float32)
                depth_arr[t] = refined
                delta_arr[t] = refined - base
                medians[t] = np.median(refined[lo : lo + patch, lo : lo + patch])
                teacher_medians[t] = np.median(base[lo : lo + patch, lo : lo + patch])

        for k in tqdm(range(len(frames)), desc="infer", disable=not progress):
            batch = frames[k]
            s = int(batch["start"])
            if p.confidence_ema > 0:  # causal EMA over the clip; overlap frames reuse their smoothed value
                conf = batch["conf_full"]
                for i in range(conf.shape[0]):
                    t = s + i
                    if t not in conf_cache:
                        eta = p.confidence_ema if conf_state is not None else 0.0
                        conf_state = conf[i] if conf_state is None else eta * conf_state + (1 - eta) * conf[i]
                        conf_cache[t] = conf_state.clone()
                    conf[i] = conf_cache[t]
                for t in [t for t in conf_cache if t < s]:
                    del conf_cache[t]
                batch["conf_low"] = downsample(conf, frames.factor)
            inputs = {key: v[None].to(device) for key, v in batch.items() if v.dim() > 0}
            with autocast:
                out_w = run_refiner(model, inputs, mapping, hard=p.hard_clamp)
            delta = out_w.delta_full.float()[0, :, 0]  # [n, H, W]
            teacher_w = inputs["depth_full"][0, :, 0]
            if p.reanchor_every and k % p.reanchor_every == 0:
                valid = teacher_w > 0
                bias = (delta[valid] / teacher_w[valid]).mean() if valid.any() else delta.new_zeros(())
                delta = delta - bias * teacher_w  # remove this window's mean relative residual
            clamp_hits.append(float(out_w.clamp_hit_rate))
            abs_delta.append(float(delta.abs().mean()))
            gate = occlusion_weights(batch["rgb"], frames.factor) if p.occlusion_gating else None
            blender.add(s, delta.cpu().numpy(), gate)
            flush(starts[k + 1] if k + 1 < len(starts) else total)
        flush(total)
    drift = drift_trend(medians / np.maximum(teacher_medians, 1e-6))
    if abs(drift) > p.drift_warn_rel:
        warnings.warn(
            f"refined depth drifts by {drift:+.1%} against the teacher over the clip on the centre patch "
            f"(threshold {p.drift_warn_rel:.1%}); consider infer.reanchor_every",
            stacklevel=2,
        )
    return {
        "frames": total,
        "windows": len(starts),
        "clamp_hit_rate": float(np.mean(clamp_hits)),
        "mean_abs_delta_m": float(np.mean(abs_delta)),
        "drift_rel": drift,
        "patch_median_depth": medians.tolist(),
        "teacher_patch_median_depth": teacher_medians.tolist(),
    }


def run_infer(
    params: Params,
    decoded: str | Path,
    teacher: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    frames_dir: str | Path,
    reports_dir: str | Path,
    progress: bool = True,
) -> dict:
    """The infer stage: refine the clip into ``out``, export frames (``frames_dir``) and the side-by-side
    teacher | refined (| GT) video, write metrics and drift plot data to ``reports_dir``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = load_refiner(checkpoint, device)
    if not (Path(teacher) / "zarr.json").is_file():  # no cached teacher: run it now (the cache is reused later)
        print(f"{teacher} not found: running teacher {params.teacher.name} first")
        write_teacher_store(decoded, teacher, Path(teacher).with_name("calibration.json"), params.teacher, progress)
    mapping = torch.as_tensor(open_group(teacher, ("low_mapping",), "teacher store")["low_mapping"][...])
    if mapping.tolist() != list(meta["low_mapping"]):
        raise ValueError(
            f"{checkpoint} was trained with low-res mapping {meta['low_mapping']} but {teacher} has "
            f"{mapping.tolist()}; retrain, or re-run the teacher with the training low_res_factor"
        )
    stats = refine_clip(model, mapping, decoded, teacher, out, params.windows, params.infer, device, progress)
    p, reports_dir = params.infer, Path(reports_dir)
    refined, tea = open_group(out)["depth"], open_group(teacher)["depth"]
    export_frames(refined, frames_dir, npy=p.export_npy, png=p.export_png16)
    dec = open_group(decoded)
    panels = [tea, refined] + ([dec["depth_gt"]] if "depth_gt" in dec else [])
    side_by_side_video(panels, reports_dir / "side_by_side.mp4", fps=int(dec.attrs.get("fps", 24)))
    medians, teacher_medians = stats.pop("patch_median_depth"), stats.pop("teacher_patch_median_depth")
    write_json(reports_dir / "metrics.json", stats)
    rows = [
        {"frame": t, "refined_patch_median_m": m, "teacher_patch_median_m": mt}
        for t, (m, mt) in enumerate(zip(medians, teacher_medians, strict=True))
    ]
    write_csv(reports_dir / "drift.csv", rows)
    return stats

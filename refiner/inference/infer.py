"""Windowed inference over a clip of any length with memory bounded by one window.

Per window (the same N, To and keyframes as training, read lazily by :class:`ClipWindows`): teacher
depth/confidence → optional temporal EMA of c(x) → refiner (SSM at the low-res grid; with
``model.carry_state`` its forward scan starts from the state the previous window left after the frame
before this window's start, so context runs over the whole clip at constant memory) → residual ΔD
blended across overlapping windows (:class:`WindowBlender`) → refined = teacher + ΔD, clamped to the
depth range. Drift control: optional per-window bias removal on a cadence (toward the teacher, never a
global rescale) and a warning when the refined/teacher ratio of the centre patch's median depth trends.
A clip shorter than N frames is one short window. Given scene cuts (:mod:`refiner.data.cuts`), each scene is refined as
a clip of its own (:class:`Refinement`), so no state, blend or monitor reaches across a cut. :func:`run_infer` hands
each refined frame, in order, to writer threads through bounded queues (:mod:`refiner.core.streaming`,
:mod:`refiner.inference.sinks`) while the next window is computed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refiner.core.config import InferParams, WindowParams
from refiner.core.progress import Progress
from refiner.core.store import atomic_path, atomic_paths, write_csv, write_json
from refiner.core.streaming import Streams, fan_out
from refiner.data.clip import Clip, ClipPart, full
from refiner.data.cuts import segments
from refiner.data.dataset import ClipWindows
from refiner.data.windows import WindowBlender
from refiner.geometry.masks import centre_patch, static_gate
from refiner.inference.noise_ceiling import under_ceiling
from refiner.inference.sinks import at_source, canonical_store, review_video
from refiner.inference.source_res import store_map
from refiner.visual.export import write_frame_files

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
    """(ΔD [n, H, W] of one window, the carried state for the next, clamp hit rate), under the noise ceiling."""
    inputs = {k: v[None].to(device) for k, v in batch.items() if v.dim() > 0}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def run(depth: torch.Tensor) -> tuple[torch.Tensor, object, float]:
        with autocast:
            out = model(
                depth[None],
                inputs["conf"],
                inputs["rgb"],
                inputs["keyframes"],
                hard_clamp=p.hard_clamp,
                state=state,
                state_index=state_index,
            )
        return out.delta_full.float()[0, :, 0], out.state, float(max(out.clamp_hit_rate.values()))

    delta, state, hits = under_ceiling(run, inputs["depth"][0].float(), p.noise_ceiling)
    return delta.cpu(), state, hits


def _window(
    model: torch.nn.Module,
    batch: dict,
    k: int,
    s: int,
    nxt: int | None,
    p: InferParams,
    device: torch.device,
    cache: dict,
    state: object,
) -> tuple[torch.Tensor, object, float]:
    """One window's residual (confidence EMA, carried state, optional re-anchoring): (ΔD [n, H, W], next state,
    clamp hit rate)."""
    if p.confidence_ema > 0:
        batch["conf"] = _smooth_confidence(batch["conf"], s, p.confidence_ema, cache)
    delta, state, hits = _window_delta(model, batch, p, state, nxt, device)
    if p.reanchor_every and k % p.reanchor_every == 0:
        teacher_w = batch["depth"][:, 0]
        valid = teacher_w > 0
        bias = (delta[valid] / teacher_w[valid]).mean() if valid.any() else delta.new_zeros(())
        delta = delta - bias * teacher_w  # remove this window's mean relative residual
    return delta, state, hits


def _finished(
    blender: WindowBlender, clip: Clip | ClipPart, p: InferParams, monitor: _Monitor, before: int
) -> Iterator[tuple]:
    """(t, refined, teacher) of every frame the blender has finished below ``before``."""
    for t, delta in blender.pop_ready(before):
        base = clip.teacher_depth(full(t))
        refined = np.where(base > 0, np.clip(base + delta, p.min_depth_m, p.max_depth_m), 0).astype(np.float32)
        if not np.isfinite(refined).all():
            raise ValueError(f"refined depth of frame {t} is not finite; check the checkpoint")
        monitor.frame(t, refined, base)
        yield t, refined, base


@torch.no_grad()
def _refine_scene(
    model: torch.nn.Module,
    clip: Clip | ClipPart,
    windows: WindowParams,
    p: InferParams,
    device: torch.device,
    monitor: _Monitor,
    note: Callable[[int, int], None],
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(t, refined, teacher) of every frame of ``clip`` (a whole clip or one scene), in order: fresh carried state,
    blending and confidence EMA."""
    frames = ClipWindows(clip, windows.length, windows.keyframes, windows.overlap)
    starts, total = frames.starts, clip.frames
    blender = WindowBlender(windows.keyframes, p.keyframe_tau, p.keyframe_boost)
    carry = bool(getattr(model.p, "carry_state", False))
    cache, state = {}, None
    for k in range(len(frames)):
        note(k, len(frames))
        batch, s = frames[k], starts[k]
        nxt = starts[k + 1] - s - 1 if carry and k + 1 < len(starts) else None
        delta, state, hits = _window(model, batch, k, s, nxt, p, device, cache, state if carry else None)
        monitor.clamp_hits.append(hits)
        monitor.abs_delta.append(float(delta.abs().mean()))
        gate = occlusion_weights(batch["rgb"], clip.factor) if p.occlusion_gating else None
        blender.add(s, delta.numpy(), gate)
        yield from _finished(blender, clip, p, monitor, starts[k + 1] if k + 1 < len(starts) else total)
    yield from _finished(blender, clip, p, monitor, total)


class Refinement:
    """The refined frames of a clip as ``(t, refined, teacher)``, in clip order, one window in memory. Each scene
    between ``cuts`` (:mod:`refiner.data.cuts`) is refined as a clip of its own: carried Mamba state, window blending,
    confidence EMA and the drift monitor start afresh at a cut. ``note(text)`` hears which window runs. It slides
    the inference windows of ``windows`` (:meth:`refiner.core.config.WindowParams.for_inference`)."""

    def __init__(self, model, clip: Clip, windows: WindowParams, p: InferParams, device="cpu", cuts=None) -> None:
        self.model, self.clip, self.p, self.device = model, clip, p, torch.device(device)
        self.windows = windows.for_inference()
        self.cuts = None if cuts is None else [a for a, _ in segments(cuts, clip.frames)[1:]]
        self.scenes = segments(self.cuts or [], clip.frames)
        self.monitors: list[_Monitor] = []
        self.note: Callable[[str], None] = lambda text: None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for i, (a, b) in enumerate(self.scenes):
            part = self.clip if (a, b) == (0, self.clip.frames) else ClipPart(self.clip, a, b)
            monitor = _Monitor(centre_patch(part.height, part.width, self.p.drift_patch))
            self.monitors.append(monitor)
            scene = f"scene {i + 1}/{len(self.scenes)}, " if len(self.scenes) > 1 else ""

            def note(k: int, n: int, scene: str = scene) -> None:
                self.note(f"{scene}window {k + 1}/{n}")

            for t, refined, base in _refine_scene(self.model, part, self.windows, self.p, self.device, monitor, note):
                yield a + t, refined, base

    def stats(self) -> dict:
        """The run's statistics (:func:`_stats`), once every frame has been taken."""
        return _stats(self.monitors, self.clip.frames, self.p, self.cuts)


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
    refinement = Refinement(model, clip, windows, p, device)
    with atomic_path(out) as tmp:
        write = canonical_store(tmp, clip.frames, clip.height, clip.width)
        write(tqdm(refinement, desc="infer", total=clip.frames, unit="frame", disable=not progress))
    return refinement.stats()


def clip_refiner(model: torch.nn.Module, windows: WindowParams, p: InferParams) -> Callable[[Clip, Path], dict]:
    """``refine(clip, out)``: :func:`refine_clip` with ``model`` on its own device, without a progress bar."""
    device = next(model.parameters()).device
    return lambda clip, out: refine_clip(model, clip, out, windows, p, device, progress=False)


def _stats(monitors: list[_Monitor], total: int, p: InferParams, cuts: list[int] | None) -> dict:
    """Windows, clamp hits, mean |ΔD| and the drift of refined against teacher depth, per scene (the largest in
    ``drift_rel``; with ``cuts`` given, the scenes' own under ``drift_rel_scenes``)."""
    curves = [m.curves() for m in monitors]
    drifts = [drift_trend(refined / np.maximum(teacher, 1e-6)) for refined, teacher in curves]
    drift = max(drifts, key=abs)
    if abs(drift) > p.drift_warn_rel:
        warnings.warn(
            f"refined depth drifts by {drift:+.1%} against the teacher over the clip on the centre patch "
            f"(threshold {p.drift_warn_rel:.1%}); consider infer.reanchor_every",
            stacklevel=3,
        )
    hits, deltas = (sum((getattr(m, k) for m in monitors), []) for k in ("clamp_hits", "abs_delta"))
    stats = {
        "frames": total,
        "windows": len(hits),
        "clamp_hit_rate": float(np.mean(hits)),
        "mean_abs_delta_m": float(np.mean(deltas)),
        "drift_rel": drift,
        "patch_median_depth": np.concatenate([c[0] for c in curves]).tolist(),
        "teacher_patch_median_depth": np.concatenate([c[1] for c in curves]).tolist(),
    }
    return stats if cuts is None else {**stats, "scene_cuts": cuts, "drift_rel_scenes": drifts}


def _write_reports(clip: Clip, reports_dir: Path, stats: dict) -> None:
    """metrics.json (the stats and the clip's provenance) and drift.csv (per-frame centre-patch medians)."""
    medians, teacher_medians = stats.pop("patch_median_depth"), stats.pop("teacher_patch_median_depth")
    write_json(reports_dir / "metrics.json", {**stats, "provenance": clip.provenance()})
    write_csv(
        reports_dir / "drift.csv",
        [
            {"frame": t, "refined_patch_median_m": m, "teacher_patch_median_m": mt}
            for t, (m, mt) in enumerate(zip(medians, teacher_medians, strict=True))
        ],
    )


def _writers(
    clip: Clip,
    p: InferParams,
    out: Path | None,
    frames_dir: Path | None,
    reports_dir: Path,
    source: dict,
    streams: Streams,
) -> dict:
    """The canonical store (``out``; None: none) and, at the source resolution, the per-frame files (``frames_dir``;
    None: none) and ``source``: the review video and the caller's writers."""
    m = store_map(clip.dec)
    if frames_dir is not None:
        png_range = (p.min_depth_m, p.max_depth_m)
        source["frames"] = lambda items: write_frame_files(items, frames_dir, p.export_npy, p.export_png16, png_range)
    writers = {"source": at_source(m, source, streams)}
    if out is not None:
        writers["canonical"] = canonical_store(out, clip.frames, clip.height, clip.width)
    return writers


def run_infer(
    model,
    clip: Clip,
    params,
    out: str | Path | None,
    frames_dir: str | Path | None,
    reports_dir: str | Path,
    progress: bool = True,
    extra: dict | None = None,
    cuts: list[int] | None = None,
    review: bool = True,
) -> dict:
    """Refine the clip into ``out`` (canonical grid; None: not kept), export frames (``frames_dir``; None: none) and
    the teacher | refined (| GT) video (``review``) at the source resolution, the metrics and drift plot data
    (``reports_dir``), streaming: each writer runs on its own thread fed through a bounded queue
    (:mod:`refiner.core.streaming`), and ``extra`` writers of ``(t, source-resolution depth)`` join them. Scenes between
    ``cuts`` are refined afresh (:class:`Refinement`). Returns the stats, with the source writers' results under
    ``writers``. Shared by the test stage (its infer step) and the one-command tool (:mod:`refiner.app.video_run`)."""
    device = next(model.parameters()).device
    if model.factor != clip.factor:
        raise ValueError(
            f"the model was trained with low-res factor {model.factor} but {clip.teacher_path} was cached with "
            f"{clip.factor}; re-run the teacher with teacher.low_res_factor {model.factor}"
        )
    paths = [reports_dir, *(p for p in (out, frames_dir) if p is not None)]
    with atomic_paths(*paths) as (reports_tmp, *tmps):
        out_tmp = tmps.pop(0) if out is not None else None
        reports_tmp.mkdir()
        source = dict(extra or {})
        if review:
            source = {"review": review_video(reports_tmp / "side_by_side.mp4", clip, store_map(clip.dec)), **source}
        refinement, streams = Refinement(model, clip, params.windows, params.infer, device, cuts), Streams()
        writers = _writers(clip, params.infer, out_tmp, next(iter(tmps), None), reports_tmp, source, streams)
        with Progress(clip.frames, "refine + write", streams.finished, progress) as bar:
            refinement.note = bar.note
            results = fan_out(refinement, writers, streams=streams)
        stats = refinement.stats()
        _write_reports(clip, reports_tmp, stats)
    return {**stats, "writers": results["source"]}

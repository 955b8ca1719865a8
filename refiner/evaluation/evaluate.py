"""Score one clip: the raw teacher, its EMA and temporal bilateral filters, and the refiner, in one table.

Per method (definitions in the ``*_metrics`` modules and :mod:`refiner.evaluation.perceptual`): AbsRel, RMSE,
log-RMSE, δ1–3 (metric, no alignment); static-region flicker (std and MAD over the still-camera segment); TAE two
ways (``tae``: masked, z-buffered, metric; ``tae_vda``: Video Depth Anything's protocol); OPW two ways
(``opw_metric``: metric, motion compensated; ``opw_nvds``: NVDS's per-frame normalised disparity);
T-SCIN (LPIPS on temporal gradients, when the LPIPS backbone weights are available; else the metrics say
why in words); disparity jitter; per-frame scale; errors stratified by teacher confidence and by motion.
A metric that cannot be computed is listed under ``skipped`` with the reason; a NaN never passes silently.

Memory is flat in clip length: the clip is read span by span (:mod:`refiner.evaluation.span_reader`) into running sums
(:mod:`refiner.evaluation.running_sums`), in two passes (the first fits VDA's per-clip alignment and the confidence
terciles).
Only the still-camera segment (flicker, jitter) is read whole, so it is bounded by its own length.
"""

from __future__ import annotations

import math

import torch

from refiner.core.config import EvaluateParams
from refiner.data.clip import Clip, full
from refiner.evaluation.depth_metrics import (
    STRATA,
    confidence_terciles,
    disparity_jitter,
    flicker,
    still_temporal_var,
    strata_table,
)
from refiner.evaluation.reports import ratios
from refiner.evaluation.running_sums import Tally
from refiner.evaluation.span_reader import ClipSpans

SPAN_WINDOWS = 2  # windows per span: memory ~ this many windows of every method
CONF_BINS = 10_000  # histogram bins of c(x) for the tercile edges


def fit_pass(spans: ClipSpans, tallies: dict[str, Tally], step: int) -> tuple[float, float]:
    """First pass: VDA's alignment sums of every method and the clip's confidence terciles (where GT is valid)."""
    hist = torch.zeros(CONF_BINS, dtype=torch.float64)
    for span in spans.spans(step):
        for name, tally in tallies.items():
            tally.fit(span.depths[name], span)
        if span.gt is not None:
            new = slice(span.skip, None)
            valid = (span.gt[new] > 0) & (span.depths["teacher"][new] > 0)
            hist += torch.histc(span.conf[new][valid].double(), CONF_BINS, 0, 1)
    return confidence_terciles(hist)


def score_pass(spans: ClipSpans, tallies: dict[str, Tally], edges, window: int, step: int, snap: set[int]) -> dict:
    """Second pass: every span into every tally; returns the teacher/refined/GT frames listed in ``snap``."""
    snapshots: dict[int, dict] = {}
    for span in spans.spans(step):
        for name, tally in tallies.items():
            tally.add(span.depths[name], span, edges, window)
        for t in snap & set(range(span.first_new, span.hi)):
            snapshots[t] = {
                k: span.depths[k][t - span.lo].clone() for k in ("teacher", "refiner", "gt") if k in span.depths
            }
    return snapshots


def still_figures(
    spans: ClipSpans, still: tuple[torch.Tensor, int], edges: tuple[float, float], baseline_m: float
) -> dict[str, dict]:
    """Flicker, disparity jitter and per-tercile temporal variance of every method on the still segment
    (``still``: its static-pixel mask and length, :meth:`refiner.data.clip.Clip.still_static`; ``baseline_m``:
    the eye separation where the clip states none, params.yaml's ``stereo.baseline_m``)."""
    static, n = still
    if n < 2:
        return {name: {} for name in spans.methods}
    clip = spans.clip
    conf = torch.from_numpy(clip.confidence(full(slice(0, n))))
    fx = torch.from_numpy(clip.display_fx()[:n])
    baseline = clip.baseline_m(baseline_m)
    out = {}
    for name, d in spans.depths.frames(0, n).items():
        d = torch.from_numpy(d)
        f = flicker(d, static)
        out[name] = {
            "flicker_std_rel": f["std_rel"],
            "flicker_mad_rel": f["mad_rel"],
            "disparity_jitter_px": float(disparity_jitter(d, fx, baseline, static).mean()),
            "temporal_var_rel": still_temporal_var(d, static, conf, edges),
        }
    return out


def skipped_metrics(clip: Clip, n_static: int, lpips_note: str | None) -> dict[str, str]:
    """The metrics this clip cannot have, each with the reason in words."""
    out = {}
    if not clip.has_gt:
        out["gt_metrics"] = "the clip has no ground truth: AbsRel, RMSE, δ, TAE, OPW, T-SCIN need it"
    elif not clip.has_poses:
        out["tae_opw"] = "the clip has no camera poses: TAE and OPW need them"
    if lpips_note is not None and clip.has_gt:
        out["t_scin"] = lpips_note
    if clip.frames < 2:
        out["temporal"] = (
            f"skipped: needs ≥ 2 frames (the clip has {clip.frames}): TAE, OPW, T-SCIN, the scale std, flicker "
            "and jitter compare frames"
        )
    elif n_static < 2:
        out["flicker"] = "the clip has no still-camera segment (static_frames attribute): flicker and jitter need it"
    return out


def method_figures(tallies: dict[str, Tally], still: dict[str, dict], frames: int) -> dict[str, dict[str, float]]:
    """Every method's figures; a non-finite one is an error, never a silently dropped value."""
    methods = {}
    for name in (n for n in tallies if n != "gt"):
        seg = {k: v for k, v in still[name].items() if k != "temporal_var_rel"}
        methods[name] = {**tallies[name].figures(frames), **seg}
        bad = [k for k, v in methods[name].items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{name}: metric(s) {bad} are not finite: the depth or GT has no valid pixels there")
    return methods


def stratified(tallies: dict[str, Tally], still: dict[str, dict], pixels: int) -> dict[str, dict]:
    """Teacher and refiner errors per confidence tercile (with the still segment's temporal variance) and on
    moving-object / static-scene pixels."""
    out = {}
    for name in ("teacher", *(n for n in tallies if n.startswith("refiner"))):
        table = strata_table(tallies[name].strata)
        for b in STRATA:
            if "temporal_var_rel" in still[name]:
                table[b]["temporal_var_rel"] = still[name]["temporal_var_rel"][b]
        out[name] = {**table, **tallies[name].motion_table(pixels)}
    return out


def per_frame_rows(tallies: dict[str, Tally], frames: int) -> list[dict]:
    """Per-frame plot rows, one column per method: AbsRel and scale (median D/G), when the clip has GT."""
    rows = [{"frame": t} for t in range(frames)]
    for name in (n for n in tallies if n != "gt"):
        for row, errs, scale in zip(rows, tallies[name].errors, tallies[name].scales, strict=False):
            row[f"{name}_absrel"], row[f"{name}_scale_ratio"] = errs["absrel"], scale
    return rows


def evaluate_clip(
    clip: Clip,
    refined: str | dict[str, str],
    p: EvaluateParams,
    window: int,
    baseline_m: float,
    lpips=(None, None),
    span_windows: int = SPAN_WINDOWS,
) -> dict:
    """Metrics of one clip (methods, ratios, strata, GT floors, skipped), per-frame rows, drift rows and the
    teacher/refined/GT frames of the strip figure. The clip is read ``span_windows`` windows at a time;
    ``baseline_m`` (``stereo.baseline_m``) is the eye separation of disparity jitter where the clip states none."""
    spans, step = ClipSpans(clip, refined, p), span_windows * window
    tallies = {name: Tally(p, lpips[0]) for name in spans.methods}
    if clip.has_gt:
        tallies["gt"] = Tally(p, temporal_only=True)
    edges = fit_pass(spans, tallies, step)
    snap = {0, clip.frames // 2, clip.frames - 1} if clip.has_gt else set()
    snapshots = score_pass(spans, tallies, edges, window, step, snap)
    static, n_static = clip.still_static()
    still = still_figures(spans, (static, n_static), edges, baseline_m)
    metrics: dict = {"methods": method_figures(tallies, still, clip.frames)}
    metrics["ratios"] = ratios(metrics["methods"])
    if clip.has_gt:
        metrics["stratified"] = stratified(tallies, still, clip.frames * clip.height * clip.width)
        metrics["gt_floor"] = {
            k: v for k, v in tallies["gt"].figures(clip.frames).items() if k.startswith(("tae", "opw"))
        }
    metrics["skipped"] = skipped_metrics(clip, n_static, lpips[1])
    drift = zip(tallies["teacher"].medians, tallies["refiner"].medians, strict=True)
    return {
        "metrics": metrics,
        "per_frame": per_frame_rows(tallies, clip.frames),
        "drift": [{"window": i, "teacher_median_m": a, "refiner_median_m": b} for i, (a, b) in enumerate(drift)],
        "snapshots": dict(sorted(snapshots.items())),
        "static_frames": n_static,
    }

"""The evaluate stage: score teacher, baseline filters and refiner on one clip; write the reports.

Outputs: ``metrics.json`` (DVC metrics: one block per method, deltas vs the teacher, figures on the
frames held out from training, uncertainty-stratified figures, skipped metrics with reasons),
``plots/per_frame.csv`` and ``plots/stratified.csv`` (DVC plots), ``evaluation.md`` with figures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from refiner.baselines import method_depths  # noqa: E402
from refiner.config import EvaluateParams  # noqa: E402
from refiner.metrics import (  # noqa: E402
    align_disparity_affine,
    disparity_jitter,
    flicker,
    mean_errors,
    opw_metric,
    patch_medians,
    per_frame_errors,
    scale_ratios,
    static_region_mask,
    stratified,
    tae,
)
from refiner.store import atomic_path, open_group, write_csv, write_json  # noqa: E402

STATIC_COLOUR_TOLERANCE = 0.03  # clips without a moving mask: static = colour within this of frame 0 (0-1)
METHODS = ("teacher", "ema", "bilateral", "refiner")


def still_static_mask(dec, frames: int) -> tuple[torch.Tensor, int]:
    """(H, W) static pixels of a decoded clip's still-camera segment and the segment's length (0 when unknown):
    never on a moving object (the GT mask, else colour within a tolerance of the segment's first frame) and,
    with GT, always valid. Evaluate and stereo measure flicker and jitter on it."""
    n = min(int(dec.attrs.get("static_frames", 0)), frames)
    if n < 2:
        return torch.zeros(dec["rgb"].shape[1:3], dtype=torch.bool), 0
    if "moving_mask" in dec:
        moving = torch.from_numpy(np.asarray(dec["moving_mask"][:n]))
    else:
        rgb = torch.from_numpy(np.asarray(dec["rgb"][:n])).float() / 255
        moving = (rgb - rgb[:1]).abs().mean(-1) > STATIC_COLOUR_TOLERANCE
    valid = torch.from_numpy(np.asarray(dec["depth_gt"][:n]) > 0) if "depth_gt" in dec else ~moving
    return static_region_mask(moving, valid), n


def evaluate_clip(
    decoded: str | Path, teacher: str | Path, refined: str | Path, p: EvaluateParams, holdout_frames: int = 0
) -> tuple[dict, list[dict], list[dict], dict[str, np.ndarray]]:
    """(metrics, per-frame rows, stratified rows, depth by method) for one clip."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    tea = open_group(teacher, ("depth", "confidence"), "teacher store")
    depths = method_depths(decoded, teacher, refined, p)
    frames = depths["teacher"].shape[0]
    K = torch.from_numpy(np.asarray(dec["K"][...]))
    has_gt = "depth_gt" in dec
    gt = torch.from_numpy(np.asarray(dec["depth_gt"][...])) if has_gt else None
    moving = torch.from_numpy(np.asarray(dec["moving_mask"][...])) if "moving_mask" in dec else None
    poses = torch.from_numpy(np.asarray(dec["poses"][...])) if has_gt and "poses" in dec else None
    static, n_static = still_static_mask(dec, frames)
    baseline = float(dec.attrs.get("baseline_m") or p.baseline_m)
    rgb_t = torch.from_numpy(np.asarray(dec["rgb"][...])).permute(0, 3, 1, 2).float() / 255
    skipped = {}
    if importlib.util.find_spec("lpips") is None:
        skipped["t_scin"] = "LPIPS is not installed and its backbone weights are not available locally"
    if not has_gt:
        skipped["gt_metrics"] = "the clip has no ground truth (decode.gt)"
    if "poses" not in dec:
        skipped["tae_opw"] = "the clip has no camera poses"
    if n_static < 2:
        skipped["flicker"] = "the clip has no still-camera segment (static_frames attribute)"

    metrics: dict = {"methods": {}}
    per_frame: list[dict] = [{"frame": t} for t in range(frames)]  # wide: one column per method and figure
    for name in METHODS:
        d = torch.from_numpy(depths[name])
        m: dict = {}
        rows = per_frame_errors(d, gt) if has_gt else []
        if has_gt:
            m.update(mean_errors(rows))
            if p.align_disparity:
                m["absrel_aligned_disparity"] = mean_errors(per_frame_errors(align_disparity_affine(d, gt), gt))[
                    "absrel"
                ]
        if n_static >= 2:
            f = flicker(d[:n_static], static)
            m["flicker_std_rel"], m["flicker_mad_rel"] = f["std_rel"], f["mad_rel"]
            jitter = disparity_jitter(d[:n_static], K[:n_static, 0, 0], baseline, static)
            m["disparity_jitter_px"] = float(jitter.mean()) if jitter.numel() else float("nan")
        if poses is not None:
            m["tae"] = tae(d, K, poses, gt, moving)
            m["opw_metric"] = opw_metric(d, rgb_t, K, poses, gt, moving, p.opw_weight)
        medians = patch_medians(d, p.static_patch)
        if has_gt:  # per-frame scale: median of D/G over valid pixels off moving objects
            ratio = scale_ratios(d, gt, moving)
            m["scale_ratio_std"] = float(ratio.std())
        metrics["methods"][name] = m
        for t, row in enumerate(per_frame):
            row[f"{name}_patch_median_m"] = float(medians[t])
            if has_gt:
                row[f"{name}_absrel"], row[f"{name}_scale_ratio"] = rows[t]["absrel"], float(ratio[t])

    r, t_ = metrics["methods"]["refiner"], metrics["methods"]["teacher"]
    metrics["delta_vs_teacher"] = {k: r[k] - t_[k] for k in r if k in t_ and np.isfinite(r[k]) and np.isfinite(t_[k])}
    if has_gt and 0 < holdout_frames <= frames:
        held = {}
        for name in ("teacher", "refiner"):
            d = torch.from_numpy(depths[name][:holdout_frames])
            held[name] = {"absrel": mean_errors(per_frame_errors(d, gt[:holdout_frames]))["absrel"]}
            if n_static >= 2:
                held[name]["flicker_std_rel"] = flicker(d[: min(n_static, holdout_frames)], static)["std_rel"]
        metrics["heldout"] = {"frames": holdout_frames, **held}
    strat_rows: list[dict] = []
    if has_gt:
        conf = torch.from_numpy(np.asarray(tea["confidence"][...]))
        metrics["stratified"] = {}
        for name in ("teacher", "refiner"):
            s = stratified(
                torch.from_numpy(depths[name]), torch.from_numpy(depths["teacher"]), gt, conf, static, n_static
            )
            metrics["stratified"][name] = s
            strat_rows += [{"method": name, "confidence": b, **v} for b, v in s.items()]
    if poses is not None:  # what GT itself scores: the floor of TAE and OPW (rounding, occlusions)
        metrics["gt_floor"] = {
            "tae": tae(gt, K, poses, gt, moving),
            "opw_metric": opw_metric(gt, rgb_t, K, poses, gt, moving, p.opw_weight),
        }
    metrics["skipped"] = skipped
    metrics["synthetic_stand_in"] = bool(tea.attrs.get("synthetic_stand_in", False))
    return metrics, per_frame, strat_rows, depths


def _figures(out_dir: Path, per_frame: list[dict], depths: dict[str, np.ndarray], static_frames: int) -> list[str]:
    """Scale-ratio curve and a static-region flicker map; returns the file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    key = "scale_ratio" if "teacher_scale_ratio" in per_frame[0] else "patch_median_m"
    fig, ax = plt.subplots(figsize=(7, 3.2))
    frames = [r["frame"] for r in per_frame]
    for name in METHODS:
        values = [r[f"{name}_{key}"] for r in per_frame]
        ax.plot(frames, values, label=name, lw=1.5 if name == "refiner" else 1)
    ax.set_xlabel("frame")
    ax.set_ylabel("median D / GT" if key == "scale_ratio" else "centre-patch median depth (m)")
    if static_frames:
        ax.axvspan(0, static_frames - 1, color="0.9", label="still camera")
    ax.legend(fontsize=8, ncol=5)
    ax.set_title("scale over time" if key == "scale_ratio" else "centre-patch depth over time")
    fig.tight_layout()
    with atomic_path(out_dir / "scale_drift.png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    names.append("scale_drift.png")
    if static_frames >= 2:
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
        maps = {
            k: depths[k][:static_frames].std(0) / np.maximum(np.median(depths[k][:static_frames], 0), 1e-6)
            for k in ("teacher", "refiner")
        }
        vmax = float(np.percentile(maps["teacher"], 99))
        for ax, (k, m) in zip(axes, maps.items(), strict=True):
            im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax)
            ax.set_title(f"{k}: temporal std / median")
            ax.set_axis_off()
        fig.colorbar(im, ax=axes, fraction=0.03)
        with atomic_path(out_dir / "flicker_map.png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        names.append("flicker_map.png")
    return names


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.4g}"


def write_reports(
    reports: str | Path,
    metrics: dict,
    per_frame: list[dict],
    strat: list[dict],
    depths: dict,
    static_frames: int,
    title: str = "Evaluation",
) -> None:
    """metrics.json, plots/*.csv, figures/*.png and evaluation.md under ``reports``."""
    reports = Path(reports)
    write_json(reports / "metrics.json", metrics)
    write_csv(reports / "plots" / "per_frame.csv", per_frame)
    if strat:
        write_csv(reports / "plots" / "stratified.csv", strat)
    figures = _figures(reports / "figures", per_frame, depths, static_frames)
    keys = sorted({k for m in metrics["methods"].values() for k in m})
    lines = [
        f"# {title}",
        "",
        (
            "> The default clip and teacher are a **synthetic stand-in** (a rendered room and a simulated "
            "single-frame teacher); these figures describe the pipeline on that scene, not real-video performance."
            if metrics["synthetic_stand_in"]
            else "> Teacher: a real model on the clip named in params.yaml."
        ),
        "",
        "Metric depth, no scale alignment. Lower is better except δ. Definitions: `refiner/metrics.py`.",
        "",
        "| metric | " + " | ".join(METHODS) + " |",
        "| --- |" + " --- |" * len(METHODS),
    ]
    lines += [f"| {k} | " + " | ".join(_fmt(metrics["methods"][m].get(k)) for m in METHODS) + " |" for k in keys]
    if "heldout" in metrics:
        h = metrics["heldout"]
        lines += ["", f"Frames held out from training (0–{h['frames'] - 1}):", ""]
        lines += [f"- {m}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in h[m].items()) for m in ("teacher", "refiner")]
    if metrics["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {k}: {v}" for k, v in metrics["skipped"].items()]
    lines += [""] + [f"![{f}](figures/{f})" for f in figures] + [""]
    with atomic_path(reports / "evaluation.md") as tmp:
        tmp.write_text("\n".join(lines))

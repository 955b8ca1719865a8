"""Reports of the evaluation: per clip (metrics.json, plot CSVs, figures, evaluation.md) and the aggregate
over the test split (reports/metrics.json: the mean over test clips per method, ratios, a per-clip table).

Every report states what it scores: each clip's dataset, split and teacher, and whether the teacher is
the simulated stand-in. Nothing here computes a metric (:mod:`refiner.evaluate` does), only the ratios of
figures already computed (:func:`ratios`, per clip and for the aggregate). No torch: the report stage starts fast.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refiner.baselines import METHODS  # noqa: E402
from refiner.export import colorize, log_depth_range  # noqa: E402
from refiner.store import atomic_path, write_csv, write_json  # noqa: E402

HEADLINE = (
    "absrel",
    "rmse",
    "d1",
    "flicker_std_rel",
    "tae",
    "tae_vda",
    "opw_metric",
    "opw_nvds",
    "t_scin",
    "disparity_jitter_px",
    "scale_ratio_std",
)


def ratios(methods: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Refiner figure / baseline figure for every figure both have, against the teacher and the bilateral filter."""
    r = methods["refiner"]
    return {
        f"refiner_vs_{base}": {k: r[k] / methods[base][k] for k in r if k in methods[base] and methods[base][k] != 0}
        for base in ("teacher", "bilateral")
    }


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.4g}"


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def scale_figure(path: Path, per_frame: list[dict], static_frames: int) -> None:
    """Per-frame scale (median D/GT) of every method over the clip."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    frames = [r["frame"] for r in per_frame]
    for name in METHODS:
        ax.plot(frames, [r[f"{name}_scale_ratio"] for r in per_frame], label=name, lw=1.6 if name == "refiner" else 1)
    if static_frames:
        ax.axvspan(0, static_frames - 1, color="0.9", label="still camera")
    ax.set(xlabel="frame", ylabel="median D / GT", title="scale over time")
    ax.legend(fontsize=8, ncol=5)
    fig.tight_layout()
    _save(fig, path)


def strip_figure(path: Path, snapshots: dict[int, dict]) -> None:
    """Teacher / refined / GT / |refined − GT| / |teacher − GT| for a few frames ({frame: {"teacher", "refiner",
    "gt"}}), depth on one colour scale."""
    frames = list(snapshots)
    lo, hi = log_depth_range(snapshots[frames[0]]["gt"].numpy())
    fig, axes = plt.subplots(len(frames), 5, figsize=(13, 2.7 * len(frames)), squeeze=False)
    for r, t in enumerate(frames):
        depths = {k: v.numpy() for k, v in snapshots[t].items()}
        g = depths["gt"]
        panels = [
            ("teacher", colorize(depths["teacher"], lo, hi)),
            ("refined", colorize(depths["refiner"], lo, hi)),
            ("GT", colorize(g, lo, hi)),
        ]
        err = {k: np.abs(depths[k] - g) / np.maximum(g, 1e-6) * (g > 0) for k in ("refiner", "teacher")}
        for c, (title, img) in enumerate(panels):
            axes[r][c].imshow(img)
            axes[r][c].set_title(f"{title}, frame {t}", fontsize=8)
        for c, k in enumerate(("refiner", "teacher"), start=3):
            im = axes[r][c].imshow(err[k], cmap="magma", vmin=0, vmax=0.1)
            axes[r][c].set_title(f"|{k} − GT| / GT", fontsize=8)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.colorbar(im, ax=axes, fraction=0.02)
    _save(fig, path)


def drift_figure(path: Path, drift: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3))
    w = [r["window"] for r in drift]
    for name in ("teacher", "refiner"):
        ax.plot(w, [r[f"{name}_median_m"] for r in drift], marker="o", label=name)
    ax.set(xlabel="window", ylabel="median depth, static scene (m)", title="per-window scale drift")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _table(methods: dict[str, dict], keys) -> list[str]:
    lines = ["| metric | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    return lines + [f"| {k} | " + " | ".join(_fmt(methods[m].get(k)) for m in METHODS) + " |" for k in keys]


def clip_header(info: dict) -> list[str]:
    """Who and what a clip's figures are about: name, dataset, split, teacher, stand-in or not."""
    stand_in = (
        " — a **synthetic stand-in** (rendered scene, simulated teacher), not real video"
        if info["synthetic_stand_in"]
        else ""
    )
    lines = [
        f"Clip `{info['name']}`: dataset {info['dataset_name']}, split **{info['split']}**, "
        f"teacher {info['teacher_name']}{stand_in}."
    ]
    if "calibration" in info:
        fitted = ", ".join(info["calibration"]["fitted_on"]) or "no clip"
        lines += [
            "",
            f"Teacher: {info['teacher_label']}. Confidence table: {info['calibration']['source']} "
            f"(fitted on {fitted}).",
        ]
    return lines


def write_clip_report(out: str | Path, result: dict, info: dict) -> None:
    """metrics.json, plots/*.csv, figures/*.png and evaluation.md of one clip under ``out``."""
    out = Path(out)
    metrics = {**result["metrics"], "clip": info}
    write_json(out / "metrics.json", metrics)
    write_csv(out / "plots" / "per_frame.csv", result["per_frame"])
    write_csv(out / "plots" / "drift_windows.csv", result["drift"])
    strat = [{"method": m, "stratum": b, **v} for m, s in metrics.get("stratified", {}).items() for b, v in s.items()]
    if strat:
        write_csv(out / "plots" / "stratified.csv", strat)
    figures = ["drift_windows.png"]
    drift_figure(out / "figures" / "drift_windows.png", result["drift"])
    if result["snapshots"]:
        scale_figure(out / "figures" / "scale.png", result["per_frame"], result["static_frames"])
        strip_figure(out / "figures" / "strip.png", result["snapshots"])
        figures += ["scale.png", "strip.png"]
    keys = sorted({k for m in metrics["methods"].values() for k in m})
    lines = [
        f"# Evaluation of `{info['name']}`",
        "",
        *clip_header(info),
        "",
        "Metric depth, no scale alignment (except `tae_vda`, which follows VDA's protocol). Lower is better "
        "except δ. Definitions: `refiner/metrics.py`.",
        "",
        *_table(metrics["methods"], keys),
    ]
    if metrics["skipped"]:
        lines += ["", "Not computed:", ""] + [f"- {k}: {v}" for k, v in metrics["skipped"].items()]
    lines += [""] + [f"![{f}](figures/{f})" for f in figures] + [""]
    with atomic_path(out / "evaluation.md") as tmp:
        tmp.write_text("\n".join(lines))


def mean_by_method(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{method: {figure: mean over tables}} for every method and figure that all tables have."""
    methods = set.intersection(*(set(k for k, v in t.items() if isinstance(v, dict)) for t in tables))
    out = {}
    for m in sorted(methods):
        keys = set.intersection(*(set(t[m]) for t in tables))
        out[m] = {k: float(np.mean([t[m][k] for t in tables])) for k in sorted(keys)}
    return out


def aggregate(per_clip: dict[str, dict]) -> dict:
    """Mean over clips of every figure every clip has, per method; ratios of those means; the per-clip table."""
    names = list(per_clip)
    methods = mean_by_method([per_clip[n]["methods"] for n in names])
    table = {
        n: {
            m: {k: per_clip[n]["methods"][m].get(k) for k in HEADLINE if k in per_clip[n]["methods"][m]}
            for m in ("teacher", "bilateral", "refiner")
        }
        for n in names
    }
    return {
        "split": "test",
        "clips": names,
        "methods": methods,
        "ratios": ratios(methods),
        "per_clip": table,
        "clip_info": {n: per_clip[n]["clip"] for n in names},
        "synthetic_stand_in": all(per_clip[n]["clip"]["synthetic_stand_in"] for n in names),
    }


def write_aggregate(out: str | Path, agg: dict, stereo: dict[str, dict] | None = None) -> None:
    """reports/metrics.json, reports/per_clip.csv and reports/evaluation.md for the test split."""
    out = Path(out)
    if stereo:
        agg["stereo"] = mean_by_method(list(stereo.values()))
    write_json(out / "metrics.json", agg)
    rows = [{"clip": n, "method": m, **v} for n, t in agg["per_clip"].items() for m, v in t.items()]
    write_csv(out / "per_clip.csv", rows)
    keys = [k for k in HEADLINE if k in agg["methods"]["refiner"]]
    lines = [
        "# Test split",
        "",
        f"Mean over the {len(agg['clips'])} test clips (never trained on, never used to choose "
        "a checkpoint): " + ", ".join(f"`{n}`" for n in agg["clips"]) + ".",
    ]
    if agg["synthetic_stand_in"]:
        lines += [
            "",
            "> All are **synthetic stand-ins** (rendered scenes, a simulated teacher): these figures describe "
            "the pipeline on them, not performance on real video.",
        ]
    lines += [
        "",
        *_table(agg["methods"], keys),
        "",
        "Refiner / teacher and refiner / bilateral (ratio of the means):",
        "",
    ]
    lines += ["| metric | vs teacher | vs bilateral |", "| --- | --- | --- |"]
    r = agg["ratios"]
    lines += [
        f"| {k} | {_fmt(r['refiner_vs_teacher'].get(k))} | {_fmt(r['refiner_vs_bilateral'].get(k))} |" for k in keys
    ]
    lines += ["", "Per clip: `reports/per_clip.csv`, `reports/clips/<name>/evaluation.md`.", ""]
    with atomic_path(out / "evaluation.md") as tmp:
        tmp.write_text("\n".join(lines))

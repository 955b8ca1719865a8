"""Reports of the evaluation: per clip (metrics.json, plot CSVs, figures, evaluation.md) and the aggregate
over the test split (reports/metrics.json: the mean over test clips per method, ratios, a per-clip table).

Every report states what it scores: each clip's dataset and split, whether its frames and depth ground truth
are rendered or real, and its teacher (:mod:`refiner.core.provenance`); an aggregate mean covers the clips that have
the figure, says how many (``n_clips``) and lists every skip with its reason. Nothing here computes a metric
(:mod:`refiner.evaluation.evaluate` does), only the ratios of figures already computed (:func:`ratios`, per clip and
for the
aggregate). No torch: the report stage starts fast.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refiner.core.provenance import caveat, corpus_kinds, describe  # noqa: E402
from refiner.core.store import atomic_path, write_csv, write_json  # noqa: E402
from refiner.evaluation.baselines import ADAPTED, METHODS  # noqa: E402
from refiner.visual.export import colorize, log_depth_range  # noqa: E402

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
    """Refiner figure / baseline figure for every figure both have, against the teacher and the bilateral filter
    (``refiner_vs_teacher``, ..., and ``refiner_adapt_vs_teacher``, ... where the adapted refiner was scored)."""
    return {
        f"{m}_vs_{base}": {k: r[k] / methods[base][k] for k in r if k in methods[base] and methods[base][k] != 0}
        for m, r in methods.items()
        if m in ("refiner", ADAPTED)
        for base in ("teacher", "bilateral")
    }


def fmt(v) -> str:
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


def table_lines(methods: dict[str, dict], keys, n_clips: dict[str, int] | None = None, total: int = 0) -> list[str]:
    """A metric-by-method table; with ``n_clips``, a metric whose mean covers fewer than ``total`` clips says so."""

    def name(k: str) -> str:
        n = (n_clips or {}).get(k, total)
        return k if n == total else f"{k} ({n} of {total} clips)"

    cols = list(methods)
    lines = ["| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    return lines + [f"| {name(k)} | " + " | ".join(fmt(methods[m].get(k)) for m in cols) + " |" for k in keys]


def clip_header(info: dict) -> list[str]:
    """Who and what a clip's figures are about: name, dataset, split, what is rendered, real or simulated, and the
    confidence table its teacher's uncertainty went through."""
    lines = [
        f"Clip `{info['name']}`: dataset {info['dataset_name']}, split **{info['split']}**: a "
        f"{describe(info['provenance'])}."
    ]
    if "calibration" in info:
        fitted = ", ".join(info["calibration"]["fitted_on"]) or "no clip"
        lines += ["", f"Confidence table: {info['calibration']['source']} (fitted on {fitted})."]
    warning = caveat([info["provenance"]])
    return lines + ([f"> {warning}"] if warning else [])


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
        "except δ. Definitions: `refiner/evaluation/*_metrics.py`.",
        "",
        *table_lines(metrics["methods"], keys),
    ]
    if metrics["skipped"]:
        lines += ["", "Not computed:", ""] + [f"- {k}: {v}" for k, v in metrics["skipped"].items()]
    lines += [""] + [f"![{f}](figures/{f})" for f in figures] + [""]
    with atomic_path(out / "evaluation.md") as tmp:
        tmp.write_text("\n".join(lines))


def mean_by_method(tables: list[dict], methods: tuple[str, ...] = (*METHODS, ADAPTED)) -> tuple[dict, dict[str, int]]:
    """({method: {figure: mean over the tables that have it}}, {figure: how many tables that mean covers}) for
    every one of ``methods`` every table has. A clip's methods all have the same figures, so one count per figure."""
    present = [m for m in methods if all(isinstance(t.get(m), dict) for t in tables)]
    means: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for m in present:
        keys = sorted(set().union(*(t[m] for t in tables)))
        means[m] = {k: float(np.mean([t[m][k] for t in tables if k in t[m]])) for k in keys}
        counts |= {k: max(counts.get(k, 0), sum(k in t[m] for t in tables)) for k in keys}
    return means, counts


def skips_by_clip(per_clip: dict[str, dict], stereo: dict[str, dict] | None = None) -> dict[str, dict[str, str]]:
    """Every figure each clip lacks, with the reason: its evaluation's ``skipped`` and its stereo checks' (as
    ``stereo.<what>``)."""
    out = {}
    for name, metrics in per_clip.items():
        theirs = (stereo or {}).get(name, {}).get("skipped", {})
        out[name] = {**metrics.get("skipped", {}), **{f"stereo.{k}": v for k, v in theirs.items()}}
    return out


def aggregate(per_clip: dict[str, dict], stereo: dict[str, dict] | None = None) -> dict:
    """Mean over clips of every figure per method, each over the clips that have it (``n_clips``: how many); ratios
    of those means; the per-clip table; what each clip is (``clip_info``, ``provenance``); every skip per clip; with
    the clips' ``stereo`` checks, their means (``stereo``, ``stereo_n_clips``)."""
    names = list(per_clip)
    methods, n_clips = mean_by_method([per_clip[n]["methods"] for n in names])
    table = {
        n: {
            m: {k: per_clip[n]["methods"][m].get(k) for k in HEADLINE if k in per_clip[n]["methods"][m]}
            for m in ("teacher", "bilateral", "refiner")
        }
        for n in names
    }
    agg = {
        "split": "test",
        "clips": names,
        "methods": methods,
        "n_clips": n_clips,
        "ratios": ratios(methods),
        "per_clip": table,
        "clip_info": {n: per_clip[n]["clip"] for n in names},
        "provenance": corpus_kinds(per_clip[n]["clip"]["provenance"] for n in names),
        "skipped": skips_by_clip(per_clip, stereo),
    }
    if stereo:
        agg["stereo"], agg["stereo_n_clips"] = mean_by_method([stereo[n] for n in names], (*METHODS, "gt"))
    return agg


def write_aggregate(out: str | Path, agg: dict, sections: list[str] = ()) -> None:
    """reports/metrics.json, reports/per_clip.csv and reports/evaluation.md for the test split (:func:`aggregate`);
    ``sections``: more markdown lines after the whole-split table (e.g. one table per teacher)."""
    out = Path(out)
    write_json(out / "metrics.json", agg)
    rows = [{"clip": n, "method": m, **v} for n, t in agg["per_clip"].items() for m, v in t.items()]
    write_csv(out / "per_clip.csv", rows)
    keys = [k for k in HEADLINE if k in agg["methods"]["refiner"]]
    warning = caveat(info["provenance"] for info in agg["clip_info"].values())
    lines = [
        "# Test split",
        "",
        f"Mean over the {len(agg['clips'])} test clips (never trained on, never used to choose "
        "a checkpoint): " + ", ".join(f"`{n}`" for n in agg["clips"]) + f". They are {agg['provenance']}.",
        *(["", f"> {warning}"] if warning else []),
        "",
        *table_lines(agg["methods"], keys, agg["n_clips"], len(agg["clips"])),
        "",
        "Refiner / teacher and refiner / bilateral (ratio of the means):",
        "",
        "| metric | vs teacher | vs bilateral |",
        "| --- | --- | --- |",
    ]
    r = agg["ratios"]
    lines += [
        f"| {k} | {fmt(r['refiner_vs_teacher'].get(k))} | {fmt(r['refiner_vs_bilateral'].get(k))} |" for k in keys
    ]
    lines += ["", *sections]
    skipped = [f"- `{n}` {k}: {why}" for n, reasons in agg["skipped"].items() for k, why in reasons.items()]
    if skipped:
        lines += ["", "Not computed (each mean above covers the clips that have the figure):", "", *skipped]
    lines += ["", "Per clip: `reports/per_clip.csv`, `reports/clips/<shard>/<name>/evaluation.md`.", ""]
    with atomic_path(out / "evaluation.md") as tmp:
        tmp.write_text("\n".join(lines))

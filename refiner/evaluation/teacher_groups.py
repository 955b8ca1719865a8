"""The test split per teacher: each teacher (as the corpus names it: ``simulated``, ``learned``, a profile) is its
own group, since a refiner that stabilises one teacher's errors says little about another's.

Per group: its clips and teacher label, the mean of every figure per method over the clips that have it (with
counts), the ratios, AbsRel on moving-object pixels, the clamp hit rate of each clip's refinement, and the
do-no-harm check per clip: the refiner's static flicker and ``tae_vda`` against the teacher's.
"""

from __future__ import annotations

import numpy as np

from refiner.evaluation.baselines import ADAPTED
from refiner.evaluation.reports import HEADLINE, fmt, mean_by_method, ratios, table_lines

HARM_KEYS = ("flicker_std_rel", "tae_vda")  # do no harm: the refiner never above the teacher on these, per clip


def _moving_absrel(per_clip: dict[str, dict], names: list[str]) -> dict[str, float]:
    """Mean AbsRel on moving-object pixels per method, over the clips that have it."""
    out: dict[str, list[float]] = {}
    for n in names:
        for method, strata in per_clip[n].get("stratified", {}).items():
            value = strata.get("moving", {}).get("absrel")
            if value is not None and np.isfinite(value):
                out.setdefault(method, []).append(value)
    return {m: float(np.mean(v)) for m, v in out.items()}


def do_no_harm(methods: dict[str, dict[str, float]]) -> dict[str, dict[str, bool]]:
    """Per refined method, whether it is at or below the teacher on each of :data:`HARM_KEYS` (where both have it)."""
    teacher = methods["teacher"]
    return {
        m: {k: bool(methods[m][k] <= teacher[k]) for k in HARM_KEYS if k in methods[m] and k in teacher}
        for m in ("refiner", ADAPTED)
        if m in methods
    }


def group_summary(per_clip: dict[str, dict], names: list[str], clamp: dict[str, dict[str, float]]) -> dict:
    """One teacher group's figures (see the module docstring); ``clamp``: {clip: {method: clamp hit rate}}."""
    methods, n_clips = mean_by_method([per_clip[n]["methods"] for n in names])
    harm = {n: do_no_harm(per_clip[n]["methods"]) for n in names}
    return {
        "clips": names,
        "teacher_label": per_clip[names[0]]["clip"]["provenance"]["teacher"]["label"],
        "methods": methods,
        "n_clips": n_clips,
        "ratios": ratios(methods),
        "moving_absrel": _moving_absrel(per_clip, names),
        "clamp_hit_rate": {n: clamp.get(n, {}) for n in names},
        "do_no_harm": harm,
        "harmed_clips": sorted(n for n, h in harm.items() if not all(ok for m in h.values() for ok in m.values())),
    }


def teacher_groups(per_clip: dict[str, dict], clamp: dict[str, dict[str, float]]) -> dict[str, dict]:
    """{teacher name: :func:`group_summary`} over the test clips, in the order teachers first appear."""
    groups: dict[str, list[str]] = {}
    for name, metrics in per_clip.items():
        groups.setdefault(metrics["clip"]["teacher_name"], []).append(name)
    return {teacher: group_summary(per_clip, names, clamp) for teacher, names in groups.items()}


def group_lines(groups: dict[str, dict]) -> list[str]:
    """Markdown: per teacher, its table of means, moving-pixel AbsRel, clamp hits and any clip it harmed."""
    lines = []
    for teacher, g in groups.items():
        keys = [k for k in HEADLINE if k in g["methods"]["refiner"]]
        clamp = ", ".join(f"{n} {fmt(100 * c.get('refiner', float('nan')))}%" for n, c in g["clamp_hit_rate"].items())
        moving = ", ".join(f"{m} {fmt(v)}" for m, v in g["moving_absrel"].items())
        harmed = ", ".join(g["harmed_clips"]) or "none"
        lines += [
            f"## Teacher `{teacher}` ({len(g['clips'])} clips: {', '.join(g['clips'])})",
            "",
            f"{g['teacher_label']}.",
            "",
            *table_lines(g["methods"], keys, g["n_clips"], len(g["clips"])),
            "",
            f"AbsRel on moving-object pixels: {moving or 'n/a'}. Clamp hits: {clamp}. Clips where a refiner's "
            f"static flicker or `tae_vda` exceeds the teacher's: {harmed}.",
            "",
        ]
    return lines

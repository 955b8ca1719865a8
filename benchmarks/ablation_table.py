"""The ablation tables: test-split means of every ``abl-*`` experiment (``benchmarks/ablation.sh`` runs them), or
with ``--prefix tabl- --by-teacher`` one table per teacher group of every ``tabl-*`` experiment
(``benchmarks/ablation_teachers.sh``).

Reads each experiment's committed ``reports/metrics.json`` and ``reports/train/metrics.json`` from its git ref
(``refs/exps/.../<prefix>*``), prints markdown and writes it to ``benchmarks/ablation.md`` (or
``ablation_teachers.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import yaml

COLUMNS = {  # column title: (method key, metric key)
    "AbsRel": "absrel",
    "flicker": "flicker_std_rel",
    "TAE": "tae",
    "TAE (VDA)": "tae_vda",
    "OPW (NVDS)": "opw_nvds",
    "jitter px": "disparity_jitter_px",
}
OUT = Path(__file__).with_name("ablation.md")
TEACHERS_HEADER = (
    "# Robustness to teachers (synthetic stand-ins)\n\n"
    "`bash benchmarks/ablation_teachers.sh`: each row trained from scratch with the same budget; `narrow` = each "
    "clip's stored teacher only, `wide` = windows re-simulated from the sim_wide family with noise inputs and the "
    "noise-aware clamp; `refiner_adapt` = the same model adapted GT-free on each test clip. Means over each "
    "teacher group's test clips of `reports/metrics.json`.\n"
)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def experiments(prefix: str = "abl-") -> dict[str, str]:
    """Experiment name -> git ref, for every experiment named ``prefix``*, sorted by name (the row order)."""
    refs = _git("for-each-ref", "--format=%(refname)", "refs/exps").split()
    named = {ref.rsplit("/", 1)[-1]: ref for ref in refs if ref.rsplit("/", 1)[-1].startswith(prefix)}
    return dict(sorted(named.items()))


def _row(title: str, values: dict, extra: str) -> str:
    return (
        f"| {title} | " + " | ".join(f"{values.get(k, float('nan')):.4f}" for k in COLUMNS.values()) + f" | {extra} |"
    )


def teacher_tables(exps: dict[str, str]) -> str:
    """Per teacher group: a row per experiment and refined method (refiner, refiner_adapt), then the baselines of
    the first experiment, with the clamp hit rate (mean over the group's clips) and the clips a refiner harmed."""
    rows: dict[str, list[str]] = {}
    baselines: dict[str, dict] = {}
    for name, ref in exps.items():
        for teacher, g in json.loads(_git("show", f"{ref}:reports/metrics.json"))["groups"].items():
            baselines.setdefault(teacher, g["methods"])
            for method in (m for m in ("refiner", "refiner_adapt") if m in g["methods"]):
                hits = [c[method] for c in g["clamp_hit_rate"].values() if method in c]
                harmed = [n for n, h in g["do_no_harm"].items() if not all(h.get(method, {}).values())]
                extra = f"{sum(hits) / len(hits):.1%}; harmed: {', '.join(harmed) or 'none'}"
                rows.setdefault(teacher, []).append(_row(f"{name} {method}", g["methods"][method], extra))
    head = "| row | " + " | ".join(COLUMNS) + " | clamp hits; clips where flicker or tae_vda > teacher |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    out = ""
    for teacher, lines in rows.items():
        lines = lines + [_row(m, baselines[teacher][m], "") for m in ("teacher", "ema", "bilateral")]
        out += f"\n## Teacher `{teacher}`\n\n{head}\n{rule}\n" + "\n".join(lines) + "\n"
    return out


def table(exps: dict[str, str]) -> str:
    """The markdown table: one row per experiment, then the teacher and bilateral rows of the first one."""
    head = "| row | " + " | ".join(COLUMNS) + " | clamp hits low/full (train end) |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    baselines = None
    for name, ref in exps.items():
        metrics = json.loads(_git("show", f"{ref}:reports/metrics.json"))
        train = json.loads(_git("show", f"{ref}:reports/train/metrics.json"))["train"]
        hits = f"{train['clamp_hit_rate_low']:.1%} / {train['clamp_hit_rate_full']:.1%}"
        lines.append(_row(name, metrics["methods"]["refiner"], hits))
        baselines = baselines or metrics["methods"]
    if baselines:
        lines += [_row(m, baselines[m], "") for m in ("teacher", "bilateral")]
    return "\n".join(lines) + "\n"


def header(exps: dict[str, str]) -> str:
    """What produced the table: the step budget (from the first experiment's params.yaml), date and machine."""
    train = yaml.safe_load(_git("show", f"{next(iter(exps.values()))}:params.yaml"))["train"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads"
    return (
        "# Ablation on the test split (synthetic stand-ins, simulated teacher)\n\n"
        f"`bash benchmarks/ablation.sh {train['steps']}` ({datetime.date.today()}, {machine}): every row trained from "
        f"scratch for {train['steps']} steps (lr {train['lr']}, {train['warmup_steps']} warm-up steps, checkpoint "
        f"chosen on the val split every {train['eval_every']} steps), then infer, evaluate and stereo on the test "
        "clips; figures are the test-split means of `reports/metrics.json` (lower is better). Rows 1-3 have no "
        "full-res temporal blend; row 4 is the default model; rows 5-6 add one option to it; row 7 is the default "
        "model under the former tight clamp (gamma 0.5, alpha 0.03). Clamp hits: share of pixels at the soft bound "
        "of the low-res / full-res clamp at the last training step.\n\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default="abl-", help="experiment names to read")
    ap.add_argument("--by-teacher", action="store_true", help="one table per teacher group (ablation_teachers.sh)")
    a = ap.parse_args()
    exps = experiments(a.prefix)
    if not exps:
        raise SystemExit(f"error: no {a.prefix}* experiments; run: bash benchmarks/ablation*.sh")
    text = (TEACHERS_HEADER + teacher_tables(exps)) if a.by_teacher else header(exps) + table(exps)
    out = OUT.with_name("ablation_teachers.md") if a.by_teacher else OUT
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

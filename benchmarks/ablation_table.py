"""The ablation table: test-split means of every ``abl-*`` experiment (``benchmarks/ablation.sh`` runs them).

Reads each experiment's committed ``reports/metrics.json`` and ``reports/train/metrics.json`` from its git ref
(``refs/exps/.../abl-*``), prints a markdown table and writes it to ``benchmarks/ablation.md``.
"""

from __future__ import annotations

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


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def experiments() -> dict[str, str]:
    """Experiment name -> git ref, for every ``abl-*`` experiment, sorted by name (the row order)."""
    refs = _git("for-each-ref", "--format=%(refname)", "refs/exps").split()
    named = {ref.rsplit("/", 1)[-1]: ref for ref in refs if ref.rsplit("/", 1)[-1].startswith("abl-")}
    return dict(sorted(named.items()))


def _row(title: str, values: dict, extra: str) -> str:
    return f"| {title} | " + " | ".join(f"{values[k]:.4f}" for k in COLUMNS.values()) + f" | {extra} |"


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
    exps = experiments()
    if not exps:
        raise SystemExit("error: no abl-* experiments; run: bash benchmarks/ablation.sh")
    text = header(exps) + table(exps)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Stage report: the test split's aggregate (mean over test clips per method, ratios, per-clip table)."""

import sys

from refiner.core.errors import run_stage
from refiner.core.store import read_json
from refiner.data.manifest import load_split
from refiner.evaluation.baselines import ADAPTED
from refiner.evaluation.reports import aggregate, write_aggregate
from refiner.evaluation.teacher_groups import group_lines, teacher_groups


def clamp_hits(clip_reports: str) -> dict[str, float]:
    """{method: clamp hit rate} of a clip's refinements: the infer stage's, and the adapt stage's where it adapted."""
    hits = {"refiner": read_json(f"{clip_reports}/infer/metrics.json", "infer metrics (infer stage)")["clamp_hit_rate"]}
    adapted = read_json(f"{clip_reports}/adapt/metrics.json", "adapt metrics (adapt stage)")
    return hits | ({ADAPTED: adapted["clamp_hit_rate"]} if adapted["adapted"] else {})


def main() -> None:
    manifest, clip_reports, out = sys.argv[1:4]
    names = [c["name"] for c in load_split(manifest, "test")]
    per_clip = {n: read_json(f"{clip_reports}/{n}/metrics.json", "clip metrics (evaluate stage)") for n in names}
    stereo = {n: read_json(f"{clip_reports}/{n}/stereo/metrics.json", "stereo metrics (stereo stage)") for n in names}
    clamp = {n: clamp_hits(f"{clip_reports}/{n}") for n in names}
    agg = aggregate(per_clip, stereo)
    agg["groups"] = teacher_groups(per_clip, clamp)
    write_aggregate(out, agg, group_lines(agg["groups"]))
    r = agg["ratios"]
    print(
        f"test split ({len(names)} clips): refiner/teacher flicker {r['refiner_vs_teacher'].get('flicker_std_rel')}, "
        f"refiner/bilateral flicker {r['refiner_vs_bilateral'].get('flicker_std_rel')}"
    )


if __name__ == "__main__":
    run_stage(main)

"""Stage report: the test split's aggregate (mean over test clips per method, ratios, per-clip table)."""

import sys

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.core.store import read_json
from refiner.data.manifest import load_split
from refiner.data.shards import shard_of
from refiner.evaluation.baselines import ADAPTED
from refiner.evaluation.reports import aggregate, write_aggregate
from refiner.evaluation.teacher_groups import group_lines, teacher_groups


def clamp_hits(clip_reports: str) -> dict[str, float]:
    """{method: clamp hit rate} of a clip's refinements: the refiner's, and the adapted one's where it adapted."""
    hits = {"refiner": read_json(f"{clip_reports}/infer/metrics.json", "infer metrics (test stage)")["clamp_hit_rate"]}
    adapted = read_json(f"{clip_reports}/adapt/metrics.json", "adapt metrics (test stage)")
    return hits | ({ADAPTED: adapted["clamp_hit_rate"]} if adapted["adapted"] else {})


def main() -> None:
    manifest, clip_reports, out = sys.argv[1:4]
    names = [c["name"] for c in load_split(manifest, "test")]
    count = len(load_params().prepare.shards)
    folder = {n: f"{clip_reports}/{shard_of(n, count)}/{n}" for n in names}  # the test stage of the clip's shard
    per_clip = {n: read_json(f"{folder[n]}/metrics.json", "clip metrics (test stage)") for n in names}
    stereo = {n: read_json(f"{folder[n]}/stereo/metrics.json", "stereo metrics (test stage)") for n in names}
    clamp = {n: clamp_hits(folder[n]) for n in names}
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

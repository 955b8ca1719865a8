"""Stage prepare (per shard): every clip of the shard's plan synthesised (or located), decoded, taught and given
its guidance map and teacher view, on Ray (refiner/data/prepare_ray.py); a clip whose steps are up to date is skipped.

Arguments: PLAN CLIPS_DIR VIEWS_DIR INDEX METRICS CACHE_DIR. Writes CLIPS_DIR/<clip>/ (synth/, decoded.zarr,
teacher.zarr, guidance.zarr, digests/), VIEWS_DIR/<clip>/view.png, INDEX (per clip: stores and digests) and METRICS
(per clip: the teacher's); CACHE_DIR keeps the stat cache and the run log (runs.jsonl: what ran where).
"""

import sys
from pathlib import Path

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.core.store import write_json
from refiner.data.prepare_ray import Layout, prepare_shard
from refiner.data.shards import read_plan


def main() -> None:
    plan, clips, views, index, metrics, cache = sys.argv[1:7]
    report = prepare_shard(read_plan(plan), Layout(Path(clips), Path(views)), load_params().prepare, Path(cache))
    write_json(index, report.index)
    write_json(metrics, report.metrics)
    print(report.summary())


if __name__ == "__main__":
    run_stage(main)

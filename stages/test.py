"""Stage test (per shard): each test clip of the shard refined (infer), adapted where adapt.clips lists it, scored
against GT (evaluate) and checked in both eyes (stereo), clips side by side in test.workers processes; a clip whose
inputs are unchanged is skipped (refiner/inference/heldout_shard.py).

Arguments: SHARD MANIFEST MODEL DATA_DIR REPORTS_DIR METRICS. Writes DATA_DIR/<clip>/ (refined.zarr, frames/,
adapted/, the videos), DATA_DIR/.records/, REPORTS_DIR/<clip>/ (the clip's report, infer/, adapt/, stereo/) and
METRICS (per clip: its figures).
"""

import sys
from pathlib import Path

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.core.store import write_json
from refiner.data.manifest import load_split
from refiner.data.shards import shard_of
from refiner.inference.heldout_shard import ShardFolders, run_shard


def main() -> None:
    shard, manifest, model, data, reports, metrics = sys.argv[1:7]
    params = load_params()
    count = len(params.prepare.shards)
    names = [c["name"] for c in load_split(manifest, "test") if shard_of(c["name"], count) == int(shard)]
    run = run_shard(names, manifest, model, params, ShardFolders(Path(data), Path(reports)))
    write_json(metrics, run.figures)
    print(run.summary())


if __name__ == "__main__":
    run_stage(main)

"""Stage shards: the corpus cut into the shards of prepare.shards, one plan per shard (OUT_DIR/<i>.json) holding
every setting its clips are prepared with; each prepare@<i> stage depends on its own plan only."""

import sys

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.data.shards import write_plans


def main() -> None:
    (out_dir,) = sys.argv[1:2]
    for shard, names in write_plans(load_params(), out_dir).items():
        print(f"shard {shard}: {len(names)} clips")


if __name__ == "__main__":
    run_stage(main)

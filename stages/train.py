"""Stage train: fit the refiner on the manifest's train split, choose the checkpoint on its val split.

Also runs under ``torchrun --nproc_per_node K stages/train.py ...`` (DistributedDataParallel).
"""

import sys

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.training.train import train


def main() -> None:
    manifest, model_out, state_dir, reports = sys.argv[1:5]
    metrics = train(load_params(), manifest, model_out, state_dir, reports)
    print(f"rank {metrics['rank']}/{metrics['world']} weights {metrics['digest']}", flush=True)
    if metrics["rank"] == 0:
        print(
            f"best step {metrics['best_step']}: val static flicker {metrics['best_val_flicker_refined']:.5f} "
            f"(teacher {metrics['best_val_flicker_teacher']:.5f})"
        )


if __name__ == "__main__":
    run_stage(main)

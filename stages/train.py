"""Stage train: fit the refiner on the teacher cache; weights to data/train/, logs to reports/train/.

Also runs under ``torchrun --nproc_per_node K stages/train.py`` (DistributedDataParallel).
"""

from refiner.config import load_params
from refiner.train import train


def main() -> None:
    metrics = train(load_params(), "data/decoded/clip.zarr", "data/teacher/clip.zarr", "data/train", "reports/train")
    print(f"rank {metrics['rank']}/{metrics['world']} weights {metrics['digest']}", flush=True)
    if metrics["rank"] == 0:
        print(
            f"best step {metrics['best_step']}: held-out static flicker {metrics['val_flicker_refined']:.5f} "
            f"(teacher {metrics['val_flicker_teacher']:.5f})"
        )


if __name__ == "__main__":
    main()

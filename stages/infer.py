"""Stage infer: windowed refinement of the clip into data/infer/clip.zarr, exports and drift report."""

from refiner.config import load_params
from refiner.infer import run_infer


def main() -> None:
    stats = run_infer(
        load_params(),
        "data/decoded/clip.zarr",
        "data/teacher/clip.zarr",
        "data/train/model.safetensors",
        "data/infer/clip.zarr",
        "data/infer/frames",
        "reports/infer",
    )
    print(f"refined {stats['frames']} frames in {stats['windows']} windows; drift {stats['drift_rel']:+.2%}")


if __name__ == "__main__":
    main()

"""Stage teacher (per clip): run the frozen teacher over the decoded clip into its Zarr cache."""

import sys

from refiner.config import load_params
from refiner.errors import run_stage
from refiner.store import write_json
from refiner.teachers.cache import write_teacher_store
from refiner.viewer import view_grid


def main() -> None:
    name, decoded, out, metrics_path, view_path = sys.argv[1:6]
    params = load_params()
    choice = params.teacher_of(name)
    metrics = write_teacher_store(decoded, out, params.teacher.resolve(choice), name, group=choice)
    write_json(metrics_path, metrics)
    view_grid(decoded, out, [0, metrics["frames"] // 2, metrics["frames"] - 1], view_path)
    print(
        f"{name}: teacher {metrics['teacher']}, {metrics['frames']} frames, "
        f"corr(uncertainty, |error|) = {metrics['corr_uncertainty_error']}"
    )


if __name__ == "__main__":
    run_stage(main)

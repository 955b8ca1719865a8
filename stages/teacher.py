"""Stage teacher: run the frozen teacher over the decoded clip into the Zarr cache, calibrate its uncertainty."""

from refiner.config import load_params
from refiner.store import open_group, write_json
from refiner.teachers.cache import write_teacher_store
from refiner.viewer import view_grid


def main() -> None:
    p = load_params().teacher
    metrics = write_teacher_store(
        "data/decoded/clip.zarr", "data/teacher/clip.zarr", "data/teacher/calibration.json", p
    )
    write_json("reports/teacher/metrics.json", metrics)
    total = open_group("data/teacher/clip.zarr")["depth"].shape[0]
    view_grid(
        "data/decoded/clip.zarr", "data/teacher/clip.zarr", [0, total // 2, total - 1], "reports/teacher/view.png"
    )
    print(
        f"teacher {metrics['teacher']}: {metrics['frames']} frames, corr(uncertainty, |error|) = "
        f"{metrics['corr_uncertainty_abs_error']}"
    )


if __name__ == "__main__":
    main()

"""Stage evaluate: teacher, EMA, bilateral and refiner on the clip → reports/metrics.json, plots, evaluation.md."""

from refiner.config import load_params
from refiner.evaluate import evaluate_clip, write_reports
from refiner.store import open_group


def main() -> None:
    params = load_params()
    decoded = "data/decoded/clip.zarr"
    metrics, per_frame, strat, depths = evaluate_clip(
        decoded, "data/teacher/clip.zarr", "data/infer/clip.zarr", params.evaluate, params.train.holdout_frames
    )
    static_frames = int(open_group(decoded).attrs.get("static_frames", 0))
    write_reports("reports", metrics, per_frame, strat, depths, static_frames)
    m = metrics["methods"]
    print(" | ".join(f"{k}: flicker {v.get('flicker_std_rel', float('nan')):.4f}" for k, v in m.items()))


if __name__ == "__main__":
    main()

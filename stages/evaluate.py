"""Stage evaluate (per test clip): teacher, EMA, bilateral and refiner (and the adapted refiner, where the adapt
stage adapted this clip) scored on the clip → its reports."""

import sys
from pathlib import Path

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.data.clip import open_clip
from refiner.evaluation.baselines import ADAPTED, ADAPTED_STORE
from refiner.evaluation.evaluate import evaluate_clip
from refiner.evaluation.perceptual import load_lpips
from refiner.evaluation.reports import write_clip_report


def main() -> None:
    name, manifest, refined, adapted, out = sys.argv[1:6]
    params = load_params()
    clip, entry = open_clip(manifest, name)
    info = {k: entry[k] for k in ("name", "dataset_name", "scene_id", "split", "teacher_name", "teacher_id", "frames")}
    info["provenance"] = clip.provenance()
    info["calibration"] = {k: entry["calibration"][k] for k in ("source", "fitted_on")}
    stores = {"refiner": refined}
    if (Path(adapted) / ADAPTED_STORE).is_dir():
        stores[ADAPTED] = str(Path(adapted) / ADAPTED_STORE)
    lpips = load_lpips(params.evaluate.lpips_weights)
    result = evaluate_clip(clip, stores, params.evaluate, params.windows.length, params.stereo.baseline_m, lpips)
    write_clip_report(out, result, info)
    m = result["metrics"]["methods"]
    print(" | ".join(f"{k}: flicker {v.get('flicker_std_rel', float('nan')):.4f}" for k, v in m.items()))


if __name__ == "__main__":
    run_stage(main)

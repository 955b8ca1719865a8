"""Stage stereo (per test clip): both-eye checks per depth source and a side-by-side VR mp4.

Every depth comes from :mod:`refiner.evaluation.method_depths`; the right eye's rendered video goes through the same
teacher, filters and refiner as the left, so left-right consistency is measured between two eyes' own depths."""

import sys
import tempfile
from pathlib import Path

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.core.store import open_group, write_csv, write_json
from refiner.data.clip import open_clip
from refiner.evaluation.method_depths import both_eye_depths
from refiner.evaluation.stereo_metrics import stereo_metrics
from refiner.inference.infer import clip_refiner
from refiner.inference.source_res import write_source_stereo_video


def main() -> None:
    name, manifest, refined, model_path, out = sys.argv[1:6]
    params = load_params()
    clip, _ = open_clip(manifest, name)
    group = params.teacher_of(name)
    refine = clip_refiner(model_path, params.windows, params.infer)
    with tempfile.TemporaryDirectory() as work:  # every method's depth of both eyes, on disk: flat memory
        left, right = both_eye_depths(
            clip, name, refined, params.teacher.resolve(group), group, refine, params.evaluate, Path(work)
        )
        metrics, rows = stereo_metrics(clip, left, right, params.stereo)
    write_json(f"{out}/metrics.json", {**metrics, "provenance": clip.provenance()})
    write_csv(f"{out}/disparity.csv", rows)
    baseline = clip.baseline_m(params.stereo.baseline_m)
    depth = open_group(refined)["depth"]
    write_source_stereo_video(
        clip.dec, depth, f"{out}/stereo_sbs.mp4", baseline, clip.fps, params.stereo.max_video_frames
    )
    for src in left:  # every depth source (the arrays themselves went with the temporary folder)
        print(f"{name} {src:10s} " + ", ".join(f"{k} {v:.4g}" for k, v in metrics[src].items()))
    for what, why in metrics["skipped"].items():
        print(f"{name} skipped {what}: {why}")


if __name__ == "__main__":
    run_stage(main)

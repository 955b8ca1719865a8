"""Stage stereo (per test clip): both-eye checks per depth source and a side-by-side VR mp4.

The right eye's rendered video goes through the same teacher, filters and refiner as the left, so the
left-right consistency is measured between two eyes' own depths, not one depth map used both ways."""

import sys
import tempfile
from pathlib import Path

import torch

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.core.store import open_group, write_csv, write_json
from refiner.data.clip import Clip, open_clip
from refiner.evaluation.span_reader import write_method_depths
from refiner.inference.infer import refine_clip
from refiner.stereo.stereo_report import right_eye_store, sbs_video, stereo_metrics
from refiner.teachers.cache import write_teacher_store
from refiner.training.checkpoint import load_refiner


def right_eye_depths(clip: Clip, name: str, model_path: str, params, work: Path) -> dict:
    """Every method's depth of the right eye as Zarr arrays under ``work`` (empty when the clip has none)."""
    if not right_eye_store(clip, work / "decoded.zarr"):
        return {}
    choice = params.teacher_of(name)
    write_teacher_store(
        work / "decoded.zarr", work / "teacher.zarr", params.teacher.resolve(choice), name, False, group=choice
    )
    right = Clip(work / "decoded.zarr", work / "teacher.zarr", clip.calibration)
    model, _ = load_refiner(model_path, "cuda" if torch.cuda.is_available() else "cpu")
    refine_clip(
        model,
        right,
        work / "refined.zarr",
        params.windows,
        params.infer,
        next(model.parameters()).device,
        progress=False,
    )
    return write_method_depths(right, str(work / "refined.zarr"), params.evaluate, work / "methods.zarr")


def main() -> None:
    name, manifest, refined, model_path, out = sys.argv[1:6]
    params = load_params()
    clip, _ = open_clip(manifest, name)
    with tempfile.TemporaryDirectory() as work:  # every method's depth of both eyes, on disk: flat memory
        left = write_method_depths(clip, refined, params.evaluate, Path(work) / "left.zarr")
        right = right_eye_depths(clip, name, model_path, params, Path(work) / "right")
        if clip.has_gt:
            left["gt"] = clip.dec["depth_gt"]
        if right and "depth_gt_right" in clip.dec:
            right["gt"] = clip.dec["depth_gt_right"]
        metrics, rows = stereo_metrics(clip, left, right, params.stereo)
    write_json(f"{out}/metrics.json", {**metrics, "provenance": clip.provenance()})
    write_csv(f"{out}/disparity.csv", rows)
    sbs_video(clip, open_group(refined)["depth"], f"{out}/stereo_sbs.mp4", params.stereo)
    for src in left:  # every depth source (the arrays themselves went with the temporary folder)
        print(f"{name} {src:10s} " + ", ".join(f"{k} {v:.4g}" for k, v in metrics[src].items()))
    for what, why in metrics["skipped"].items():
        print(f"{name} skipped {what}: {why}")


if __name__ == "__main__":
    run_stage(main)

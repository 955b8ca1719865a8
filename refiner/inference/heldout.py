"""One held-out test clip, start to finish: refine (infer), GT-free adaptation where ``adapt.clips`` lists it,
scoring against GT (evaluate) and both-eye checks (stereo), in one process so the libraries load once.

What it writes into the two folders it is given (temporaries of :mod:`refiner.inference.heldout_shard`):

- ``data``: ``refined.zarr`` (canonical grid), ``frames/`` (exports), ``adapted/`` (the adapted refinement, or a
  ``NOT_ADAPTED`` note), the videos ``side_by_side.mp4`` (teacher | refined | GT) and ``stereo_sbs.mp4`` (left | right);
- ``reports``: the clip report (``metrics.json``, ``plots/*.csv``, ``figures/*.png``, ``evaluation.md``) and
  ``infer/``, ``adapt/``, ``stereo/`` with each step's own metrics and plot data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from refiner.core.config import Params
from refiner.core.store import open_group, write_csv, write_json
from refiner.data.clip import Clip, open_clip
from refiner.evaluation.baselines import ADAPTED, ADAPTED_STORE
from refiner.evaluation.evaluate import evaluate_clip
from refiner.evaluation.method_depths import both_eye_depths
from refiner.evaluation.perceptual import load_lpips
from refiner.evaluation.reports import write_clip_report
from refiner.evaluation.stereo_metrics import stereo_metrics
from refiner.inference.adapt import adapt_and_refine
from refiner.inference.infer import clip_refiner, run_infer
from refiner.inference.source_res import write_source_stereo_video
from refiner.training.checkpoint import load_refiner

INFO_KEYS = ("name", "dataset_name", "scene_id", "split", "teacher_name", "teacher_id", "frames")


def infer_step(clip: Clip, model: torch.nn.Module, params: Params, data: Path, reports: Path) -> dict:
    """The trained refiner over the clip: ``data/refined.zarr``, ``data/frames``, ``data/side_by_side.mp4`` and
    ``reports/infer/`` (metrics, drift plot data)."""
    stats = run_infer(model, clip, params, data / "refined.zarr", data / "frames", reports / "infer", progress=False)
    shutil.move(reports / "infer" / "side_by_side.mp4", data / "side_by_side.mp4")  # videos stay out of git
    return stats


def adapt_step(name: str, manifest: str, model_path: str, params: Params, data: Path, reports: Path) -> dict:
    """A clip listed in ``adapt.clips`` refined again by a copy of the model adapted on its own teacher outputs
    (GT never read) into ``data/adapted/``; any other gets a note there. Metrics into ``reports/adapt/``."""
    if name not in params.adapt.clips or params.adapt.steps == 0:
        (data / "adapted").mkdir()
        (data / "adapted" / "NOT_ADAPTED").write_text(f"{name} is not in adapt.clips (or adapt.steps is 0)\n")
        summary = {"adapted": False}
    else:
        summary = {"adapted": True, **adapt_and_refine(name, manifest, model_path, data / "adapted", params)}
    write_json(reports / "adapt" / "metrics.json", summary)
    return summary


def evaluate_step(clip: Clip, entry: dict, params: Params, data: Path, reports: Path) -> dict:
    """Teacher, EMA, bilateral, refiner (and the adapted refiner) scored against GT → the clip report."""
    info = {k: entry[k] for k in INFO_KEYS}
    info["provenance"] = clip.provenance()
    info["calibration"] = {k: entry["calibration"][k] for k in ("source", "fitted_on")}
    stores = {"refiner": str(data / "refined.zarr")}
    if (data / "adapted" / ADAPTED_STORE).is_dir():
        stores[ADAPTED] = str(data / "adapted" / ADAPTED_STORE)
    lpips = load_lpips(params.evaluate.lpips_weights)
    result = evaluate_clip(clip, stores, params.evaluate, params.windows.length, params.stereo.baseline_m, lpips)
    write_clip_report(reports, result, info)
    return result["metrics"]["methods"]


def stereo_step(clip: Clip, name: str, model: torch.nn.Module, params: Params, data: Path, reports: Path) -> dict:
    """Both eyes of every depth source (the right eye's frames through the same teacher, filters and refiner) and
    their consistency → ``reports/stereo/``; the left | right video at the source resolution → ``data``."""
    group = params.teacher_of(name)
    refine = clip_refiner(model, params.windows, params.infer)
    refined = str(data / "refined.zarr")
    with tempfile.TemporaryDirectory() as work:  # every method's depth of both eyes, on disk: flat memory
        left, right = both_eye_depths(
            clip, name, refined, params.teacher.resolve(group), group, refine, params.evaluate, Path(work)
        )
        metrics, rows = stereo_metrics(clip, left, right, params.stereo)
    write_json(reports / "stereo" / "metrics.json", {**metrics, "provenance": clip.provenance()})
    write_csv(reports / "stereo" / "disparity.csv", rows)
    baseline = clip.baseline_m(params.stereo.baseline_m)
    depth = open_group(refined)["depth"]
    video = data / "stereo_sbs.mp4"
    write_source_stereo_video(clip.dec, depth, video, baseline, clip.fps, params.stereo.max_video_frames)
    return metrics


def run_heldout(name: str, manifest: str, model_path: str, params: Params, data: Path, reports: Path) -> dict:
    """Every step of test clip ``name`` into ``data`` and ``reports`` (existing, empty folders); returns its
    headline figures: per method the evaluation's, the refinement's clamp hits and drift, adaptation, stereo."""
    clip, entry = open_clip(manifest, name)
    model, _ = load_refiner(model_path, "cuda" if torch.cuda.is_available() else "cpu")  # both eyes' refiner
    infer = infer_step(clip, model, params, data, reports)
    adapted = adapt_step(name, manifest, model_path, params, data, reports)
    methods = evaluate_step(clip, entry, params, data, reports)
    stereo = stereo_step(clip, name, model, params, data, reports)
    return {
        "methods": methods,
        "infer": {k: infer[k] for k in ("clamp_hit_rate", "drift_rel", "windows")},
        "adapt": {k: v for k, v in adapted.items() if isinstance(v, bool | int | float)},
        "stereo": {m: v for m, v in stereo.items() if m != "skipped"},
    }

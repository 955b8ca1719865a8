"""Evaluation on a held-out synthetic clip: a second scene (another seed: other colours, object placements
and motion), never seen in training, run through decode → teacher → infer with the trained refiner and
scored like the main clip. It answers whether the refiner generalises beyond the clip it was fitted on.
"""

from __future__ import annotations

from pathlib import Path

from refiner.config import Params
from refiner.evaluate import evaluate_clip, write_reports
from refiner.infer import run_infer
from refiner.ingest import ingest_video
from refiner.synth import render_clip, write_clip
from refiner.teachers.cache import write_teacher_store


def evaluate_holdout(params: Params, checkpoint: str | Path, work: str | Path, reports: str | Path) -> dict:
    """Render, decode, run the teacher and the refiner on the held-out clip in ``work``; reports in ``reports``."""
    s, h, work = params.synth, params.holdout, Path(work)
    if h.seed == s.seed:
        raise ValueError(f"holdout.seed {h.seed} equals synth.seed: the held-out clip would be the training scene")
    clip = render_clip(h.frames, s.height, s.width, s.fov_deg, s.baseline_m, h.static_frames, h.seed, progress=True)
    write_clip(clip, work / "synth", fps=s.fps, crf=s.crf, baseline_m=s.baseline_m)
    decoded, teacher, refined = work / "decoded.zarr", work / "teacher.zarr", work / "refined.zarr"
    ingest_video(
        work / "synth/clip.mp4", work / "synth/camera.json", decoded, params.decode.size, gt=work / "synth/gt.zarr"
    )
    write_teacher_store(decoded, teacher, work / "calibration.json", params.teacher)
    run_infer(params, decoded, teacher, checkpoint, refined, work / "frames", Path(reports) / "infer")
    metrics, per_frame, strat, depths = evaluate_clip(decoded, teacher, refined, params.evaluate)
    metrics["clip"] = {"seed": h.seed, "frames": h.frames, "static_frames": h.static_frames}
    title = f"Evaluation on the held-out clip (seed {h.seed}, {h.frames} frames, never trained on)"
    write_reports(reports, metrics, per_frame, strat, depths, h.static_frames, title)
    return metrics

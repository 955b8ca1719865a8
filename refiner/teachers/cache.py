"""Run a teacher over one decoded clip into its teacher cache (Zarr), with the sums to calibrate it.

The store (float32, one chunk per frame, Blosc zstd): ``depth``, ``uncertainty`` (T, H, W) as the teacher
gave them, ``rank`` (T, H, W) each pixel's uncertainty rank within its image (0 = most certain;
:func:`refiner.teachers.confidence.uncertainty_rank`), ``low_mapping`` M = [f, f, 0, 0], ``K_prompt``
(T, 3, 3) the camera given to the teacher (the K it used) and ``K_predicted`` its own prediction.
Attributes: ``teacher``, ``clip``, ``low_res_factor``, ``synthetic_stand_in``, ``error_model`` (the
simulated teacher's drawn parameters, else null) and ``calibration_sums``: per uncertainty-rank bin
error sums against GT (or the temporal std of a still-camera segment), merged over the train split by
the manifest stage into the one calibration that turns ranks into confidence c(x) for every clip.
The store replaces the old one only when complete.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from refiner.config import TeacherParams
from refiner.mapping import low_mapping
from refiner.store import atomic_path, create_group, frames_array, open_group, small_array
from refiner.teachers import make_teacher
from refiner.teachers.calibration import CalibrationAccumulator
from refiner.teachers.confidence import uncertainty_rank


class _StillSegment:
    """Running Σd, Σd², count of static pixels over a clip's still-camera segment (temporal std per pixel)."""

    def __init__(self, shape: tuple[int, int], frames: int) -> None:
        self.sums = np.zeros((3, *shape))
        self.frames = frames

    def add(self, depth: np.ndarray, still: np.ndarray) -> None:
        d = depth.astype(np.float64)
        self.sums += [np.where(still, d, 0), np.where(still, d * d, 0), still]

    def rel_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(temporal std / mean per pixel, pixels static in every frame of the segment)."""
        s, s2, n = self.sums
        mean = s / np.maximum(n, 1)
        std = np.sqrt(np.maximum(s2 / np.maximum(n, 1) - mean**2, 0))
        return std / np.maximum(mean, 1e-6), n == self.frames


def _check_frame(depth: np.ndarray, uncertainty: np.ndarray, shape: tuple, name: str, t: int) -> None:
    if depth.shape != shape or uncertainty.shape != shape:
        raise ValueError(f"teacher {name} returned shape {depth.shape} for frame {t}, expected {shape}")
    if not (np.isfinite(depth).all() and np.isfinite(uncertainty).all()) or (depth < 0).any():
        raise ValueError(f"teacher {name} returned NaN, inf or negative depth/uncertainty for frame {t}")


def _predict_frames(
    teacher, dec, arrays: dict, acc: CalibrationAccumulator, segment: _StillSegment, desc: str, progress: bool
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Run the teacher on every frame into ``arrays``, feeding the calibration sums and the still segment;
    returns (K prompts, K predictions, per-frame AbsRel against GT). The teacher runs the frames in order while
    one worker thread ranks, scores and writes the frame before (the two overlap: NumPy and Blosc release the
    GIL); the worker takes the frames in order too, so the sums are the same as in one thread."""
    total, height, width = dec["rgb"].shape[:3]
    has_gt = "depth_gt" in dec
    k_prompt, k_pred, gt_err = np.zeros((total, 3, 3)), np.zeros((total, 3, 3)), []

    def store(t: int, fr, gt: np.ndarray | None) -> None:
        valid = fr.depth > 0
        arrays["depth"][t], arrays["uncertainty"][t] = fr.depth, fr.uncertainty
        arrays["rank"][t] = uncertainty_rank(fr.uncertainty, valid)
        k_prompt[t], k_pred[t] = fr.K_prompt, fr.K_predicted
        if gt is not None:
            ok = valid & (gt > 0)
            err = np.abs(fr.depth - gt) / np.where(ok, gt, 1.0)
            acc.add(fr.uncertainty, err, ok)
            gt_err.append(float(err[ok].mean()) if ok.any() else np.nan)
        if t < segment.frames:
            segment.add(fr.depth, valid & (np.asarray(dec["moving_mask"][t]) == 0))

    with ThreadPoolExecutor(1) as worker:
        pending: deque = deque()
        for t in tqdm(range(total), desc=f"teacher {desc}", disable=not progress):
            gt = np.asarray(dec["depth_gt"][t]) if has_gt else None
            fr = teacher.predict(t, np.asarray(dec["rgb"][t]), np.asarray(dec["K"][t]), gt)
            _check_frame(fr.depth, fr.uncertainty, (height, width), teacher.name, t)
            pending.append(worker.submit(store, t, fr, gt))
            while len(pending) > 2:  # at most two frames in flight: memory stays a few frames
                pending.popleft().result()
        for job in pending:
            job.result()
    return k_prompt, k_pred, gt_err


def _calibration_source(has_gt: bool, still_frames: int, arrays: dict, acc, segment: _StillSegment) -> str:
    """What ranks the teacher's error for the calibration: GT, else the still segment's temporal std, else none."""
    if has_gt:
        return "ground truth |relative error|"
    if still_frames < 3:
        return "none"
    rel_std, keep = segment.rel_std()
    for t in range(still_frames):
        acc.add(np.asarray(arrays["uncertainty"][t]), rel_std, keep)
    return "temporal std on the still-camera segment"


def _check_grid(decoded: str | Path, height: int, width: int, f: int) -> None:
    if height % f or width % f:
        raise ValueError(
            f"{decoded}: frames {height}x{width} are not multiples of teacher.low_res_factor {f}; decode again with "
            f"the grid's multiple set to {f} (refiner.adapters.ingest(..., multiple={f}), as the decode stage does)"
        )


def write_teacher_store(
    decoded: str | Path, out: str | Path, p: TeacherParams, clip: str, progress: bool = True
) -> dict:
    """Teacher depth, uncertainty and its ranks for every frame of ``decoded`` into ``out``; returns the metrics."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    total, height, width = dec["rgb"].shape[:3]
    f = p.low_res_factor
    _check_grid(decoded, height, width, f)
    teacher = make_teacher(p, clip)
    still_frames = int(dec.attrs.get("static_frames", 0)) if "moving_mask" in dec else 0
    acc, segment = CalibrationAccumulator(p.calibration_bins), _StillSegment((height, width), still_frames)
    about = {"teacher": teacher.name, "synthetic_stand_in": teacher.name == "simulated"}
    about["error_model"] = getattr(teacher, "errors", None)
    with atomic_path(out) as tmp:
        g = create_group(tmp, {"teacher": teacher.name, "clip": clip, "low_res_factor": f, **about})
        arrays = {n: frames_array(g, n, (total, height, width), np.float32) for n in ("depth", "uncertainty", "rank")}
        k_prompt, k_pred, gt_err = _predict_frames(
            teacher, dec, arrays, acc, segment, f"{teacher.name} {clip}", progress
        )
        source = _calibration_source("depth_gt" in dec, still_frames, arrays, acc, segment)
        g.attrs["calibration_sums"] = {"source": source, **acc.state()}
        small_array(g, "low_mapping", low_mapping(f))
        small_array(g, "K_prompt", k_prompt)
        small_array(g, "K_predicted", k_pred)
    return {
        "clip": clip,
        **about,
        "frames": int(total),
        "calibration_source": source,
        "corr_uncertainty_error": acc.correlation(),
        "absrel_vs_gt": float(np.nanmean(gt_err)) if gt_err else None,
    }

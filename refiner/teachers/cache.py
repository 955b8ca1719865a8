"""Run a teacher over one decoded clip into its teacher cache (Zarr), with the sums to calibrate it.

The store (float32, one chunk per frame, Blosc zstd): ``depth``, ``uncertainty`` (T, H, W) as the teacher
gave them (ones where it gives none), ``rank`` (T, H, W) each pixel's uncertainty rank within its image
(0 = most certain; :func:`refiner.teachers.confidence.uncertainty_rank`), ``low_mapping`` M = [f, f, 0, 0],
``K_prompt`` (T, 3, 3) the camera the depth was computed with and ``K_predicted`` the teacher's own (NaN where
it predicts none). Attributes: ``teacher`` (the corpus's name for it: a registered teacher or a profile),
``teacher_plugin`` (the registered teacher that ran), ``teacher_id`` (:func:`refiner.teachers.registry.teacher_id`:
tables are shared only between equal ids), ``teacher_label`` (what it is, in one line), ``has_uncertainty``,
``clip``, ``low_res_factor``, ``error_model`` (a simulated teacher's drawn parameters, else null),
``calibration_sums`` (per uncertainty-rank bin error sums against GT, source ``none`` without GT; the manifest
merges those of the TRAIN clips per teacher id into that teacher's table) and ``self_calibration_sums`` (the
same from the teacher's own frame-to-frame disagreement, GT-free: the fallback table of a teacher no train clip
calibrated). The store replaces the old one only when complete.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from refiner.core.config import TeacherParams
from refiner.core.store import atomic_path, create_group, frames_array, open_group, small_array
from refiner.geometry.lowres_map import low_mapping
from refiner.teachers.base import Teacher, TeacherBatch, TeacherContext, TeacherFrame
from refiner.teachers.calibration import CalibrationAccumulator, frame_disagreement
from refiner.teachers.confidence import uncertainty_rank
from refiner.teachers.registry import make_teacher, teacher_id


def _checked(fr: TeacherFrame, shape: tuple, name: str, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth, uncertainty) of one returned frame, or a one-line error naming the teacher and frame."""
    depth = np.asarray(fr.depth, np.float32)
    unc = np.ones(shape, np.float32) if fr.uncertainty is None else np.asarray(fr.uncertainty, np.float32)
    if depth.shape != shape or unc.shape != shape:
        raise ValueError(f"teacher {name} returned shape {depth.shape} for frame {t}, expected {shape}")
    if not (np.isfinite(depth).all() and np.isfinite(unc).all()) or (depth < 0).any():
        raise ValueError(f"teacher {name} returned NaN, inf or negative depth/uncertainty for frame {t}")
    return depth, np.where(depth > 0, unc, 0.0).astype(np.float32)


class _Sink:
    """Writes frames in order into the store's arrays and feeds both calibration sums (runs on one worker)."""

    def __init__(self, arrays: dict, total: int, bins: int) -> None:
        self.arrays, self.gt_err = arrays, []
        self.gt_sums, self.self_sums = CalibrationAccumulator(bins), CalibrationAccumulator(bins)
        self.k_used, self.k_pred = np.zeros((total, 3, 3)), np.full((total, 3, 3), np.nan)
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.has_uncertainty = True  # False once a frame comes without one

    def store(self, t: int, fr: TeacherFrame, depth, unc, rgb: np.ndarray, gt: np.ndarray | None) -> None:
        valid = depth > 0
        self.arrays["depth"][t], self.arrays["uncertainty"][t] = depth, unc
        self.arrays["rank"][t] = uncertainty_rank(unc, valid)
        self.k_used[t] = fr.K_used
        self.has_uncertainty &= fr.uncertainty is not None
        if fr.K_predicted is not None:
            self.k_pred[t] = fr.K_predicted
        if gt is not None:
            ok = valid & (gt > 0)
            err = np.abs(depth - gt) / np.where(ok, gt, 1.0)
            self.gt_sums.add(unc, err, ok)
            self.gt_err.append(float(err[ok].mean()) if ok.any() else np.nan)
        if self.prev is not None:
            self.self_sums.add(unc, *frame_disagreement(self.prev[0], depth, self.prev[1], rgb))
        self.prev = (depth, rgb)


def _predict_frames(teacher: Teacher, dec, sink: _Sink, gt: Callable | None, desc: str, progress: bool) -> None:
    """Run the teacher over every frame in batches of its ``batch_size``, in clip order. One worker thread ranks,
    scores and writes each returned frame while the teacher predicts the next batch (NumPy and Blosc release
    the GIL); it takes the frames in order, so the sums are the same as in one thread."""
    total, height, width = dec["rgb"].shape[:3]
    size = teacher.batch_size
    with ThreadPoolExecutor(1) as worker, tqdm(total=total, desc=f"teacher {desc}", disable=not progress) as bar:
        pending: deque = deque()
        for start in range(0, total, size):
            stop = min(start + size, total)
            rgb = np.asarray(dec["rgb"][start:stop])
            batch = TeacherBatch(rgb, np.asarray(dec["K"][start:stop], np.float64), np.arange(start, stop))
            frames = teacher.predict(batch)
            if len(frames) != len(batch):
                raise ValueError(f"teacher {teacher.name} returned {len(frames)} frames for a batch of {len(batch)}")
            for i, fr in enumerate(frames):
                t = start + i
                depth, unc = _checked(fr, (height, width), teacher.name, t)
                pending.append(worker.submit(sink.store, t, fr, depth, unc, rgb[i], gt(t) if gt else None))
            while len(pending) > 2 * size:  # a few frames in flight: memory stays bounded
                pending.popleft().result()
            bar.update(len(batch))
        for job in pending:
            job.result()


def _check_grid(decoded: str | Path, height: int, width: int, f: int) -> None:
    if height % f or width % f:
        raise ValueError(
            f"{decoded}: frames {height}x{width} are not multiples of teacher.low_res_factor {f}; decode again with "
            f"the grid's multiple set to {f} (refiner.data.adapters.ingest(..., multiple={f}),"
            " as the decode stage does)"
        )


def gt_reader(dec) -> Callable[[int], np.ndarray] | None:
    """Frame t's ground-truth depth of a decoded store, or None where it has none."""
    return (lambda t: np.asarray(dec["depth_gt"][t])) if "depth_gt" in dec else None


def open_teacher(p: TeacherParams, clip: str, dec) -> Teacher:
    """The teacher ``p.name`` for one clip of the decoded store ``dec`` (its GT readable only where it has one)."""
    gt = gt_reader(dec)
    ctx = TeacherContext(clip=clip, device=p.device, options=dict(p.options.get(p.name, {})), params=p, gt=gt)
    return make_teacher(p.name, ctx)


def write_teacher_store(
    decoded: str | Path, out: str | Path, p: TeacherParams, clip: str, progress: bool = True, group: str | None = None
) -> dict:
    """Teacher depth, uncertainty and its ranks for every frame of ``decoded`` into ``out``; returns the metrics.
    ``p`` is the resolved teacher section (:meth:`TeacherParams.resolve`), ``group`` the corpus's name for the
    teacher (a profile name; default ``p.name``)."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    total, height, width = dec["rgb"].shape[:3]
    f = p.low_res_factor
    _check_grid(decoded, height, width, f)
    teacher = open_teacher(p, clip, dec)
    gt = gt_reader(dec)
    about = {
        "teacher": group or p.name,
        "teacher_plugin": teacher.name,
        "teacher_id": teacher_id(teacher),
        "teacher_label": teacher.label,
        "error_model": getattr(teacher, "errors", None),
    }
    with atomic_path(out) as tmp:
        g = create_group(tmp, {"clip": clip, "low_res_factor": f, **about})
        arrays = {n: frames_array(g, n, (total, height, width), np.float32) for n in ("depth", "uncertainty", "rank")}
        sink = _Sink(arrays, total, p.calibration_bins)
        _predict_frames(teacher, dec, sink, gt, f"{about['teacher']} {clip}", progress)
        g.attrs["has_uncertainty"] = sink.has_uncertainty
        g.attrs["calibration_sums"] = {"source": "ground truth" if gt else "none", **sink.gt_sums.state()}
        g.attrs["self_calibration_sums"] = sink.self_sums.state()
        small_array(g, "low_mapping", low_mapping(f))
        small_array(g, "K_prompt", sink.k_used)
        small_array(g, "K_predicted", sink.k_pred)
    return {
        "clip": clip,
        **about,
        "frames": int(total),
        "corr_uncertainty_error": sink.gt_sums.correlation(),
        "corr_uncertainty_disagreement": sink.self_sums.correlation(),
        "absrel_vs_gt": float(np.nanmean(sink.gt_err)) if sink.gt_err else None,
    }

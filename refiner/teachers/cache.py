"""Run a teacher over a decoded clip into the teacher cache (Zarr), calibrate its uncertainty.

``data/teacher/clip.zarr`` (float32, one chunk per frame, Blosc zstd):
``depth``, ``uncertainty``, ``confidence`` (T, S, S); ``depth_low``, ``uncertainty_low``,
``confidence_low`` (T, S/f, S/f) by f×f area mean (:func:`refiner.lowres.downsample`; a low-res pixel is
valid only where all its full-res pixels are); ``low_mapping`` M = [f, f, 0, 0]; ``K_in`` (T, 3, 3) the
camera given to the teacher and ``K_out`` the one it used. Attributes: teacher name, low_res_factor,
synthetic_stand_in, calibration. Written in two passes (depth/uncertainty, then confidence once the
calibration is known) into a temporary store that replaces the old one only on success.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refiner.config import TeacherParams
from refiner.lowres import downsample, downsample_depth, low_mapping
from refiner.store import atomic_path, create_group, frames_array, open_group, small_array, write_json
from refiner.teachers import make_teacher
from refiner.teachers.calibration import CalibrationAccumulator
from refiner.teachers.confidence import uncertainty_to_confidence


def _low(x: np.ndarray, factor: int) -> np.ndarray:
    return downsample(torch.from_numpy(x), factor).numpy()


def _low_depth(x: np.ndarray, factor: int) -> np.ndarray:
    return downsample_depth(torch.from_numpy(x), factor).numpy()


def write_teacher_store(
    decoded: str | Path, out: str | Path, calibration_path: str | Path, p: TeacherParams, progress: bool = True
) -> dict:
    """Teacher depth/uncertainty/confidence for every frame of ``decoded`` into ``out``; returns the metrics."""
    dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
    total, size = dec["rgb"].shape[:2]
    f = p.low_res_factor
    if size % f:
        raise ValueError(f"decode.size {size} is not a multiple of teacher.low_res_factor {f}; change one of them")
    has_gt = "depth_gt" in dec
    teacher = make_teacher(p)
    static_frames = int(dec.attrs.get("static_frames", 0)) if "moving_mask" in dec else 0
    acc = CalibrationAccumulator(p.calibration_bins)
    temporal = CalibrationAccumulator(p.calibration_bins)
    sums = np.zeros((3, size, size))  # Σd, Σd², static count over the still-camera segment
    gt_err: list[float] = []
    with atomic_path(out) as tmp:
        g = create_group(
            tmp, {"teacher": teacher.name, "low_res_factor": f, "synthetic_stand_in": p.name == "simulated"}
        )
        arrays = {
            name: frames_array(g, name, (total, size, size), np.float32)
            for name in ("depth", "uncertainty", "confidence")
        }
        lows = {
            f"{name}_low": frames_array(g, f"{name}_low", (total, size // f, size // f), np.float32)
            for name in ("depth", "uncertainty", "confidence")
        }
        k_in, k_out = np.zeros((total, 3, 3)), np.zeros((total, 3, 3))
        for t in tqdm(range(total), desc=f"teacher {teacher.name}", disable=not progress):
            gt = np.asarray(dec["depth_gt"][t]) if has_gt else None
            fr = teacher.predict(t, np.asarray(dec["rgb"][t]), np.asarray(dec["K"][t]), gt)
            if fr.depth.shape != (size, size) or not np.isfinite(fr.depth).all() or (fr.depth < 0).any():
                raise ValueError(f"teacher {teacher.name} returned bad depth for frame {t} (shape, NaN or < 0)")
            arrays["depth"][t], arrays["uncertainty"][t] = fr.depth, fr.uncertainty
            k_in[t], k_out[t] = fr.K_prompt, fr.K_used
            valid = fr.depth > 0
            if gt is not None:
                ok = valid & (gt > 0)
                err = np.abs(fr.depth - gt) / np.where(ok, gt, 1.0)
                acc.add(fr.uncertainty, err, ok)
                gt_err.append(float(err[ok].mean()) if ok.any() else np.nan)
            if t < static_frames:
                still = valid & (np.asarray(dec["moving_mask"][t]) == 0)
                sums += [np.where(still, fr.depth, 0), np.where(still, fr.depth.astype(np.float64) ** 2, 0), still]
        if static_frames >= 3:  # temporal std of relative depth at always-static pixels
            n = sums[2]
            keep = n == static_frames
            mean = sums[0] / np.maximum(n, 1)
            rel_std = np.sqrt(np.maximum(sums[1] / np.maximum(n, 1) - mean**2, 0)) / np.maximum(mean, 1e-6)
            for t in range(static_frames):
                temporal.add(np.asarray(arrays["uncertainty"][t]), rel_std, keep)
        if has_gt:
            calibration = acc.fit("ground truth |relative error|")
        elif static_frames >= 3:
            calibration = temporal.fit("temporal std on the still-camera segment")
        else:
            calibration = CalibrationAccumulator().fit("rank")
        calibration["corr_uncertainty_temporal_std"] = temporal.correlation()
        for t in tqdm(range(total), desc="confidence", disable=not progress):
            depth, unc = np.asarray(arrays["depth"][t]), np.asarray(arrays["uncertainty"][t])
            conf = uncertainty_to_confidence(unc, calibration, valid=depth > 0)
            arrays["confidence"][t] = conf
            depth_low = _low_depth(depth, f)
            lows["depth_low"][t] = depth_low
            for name, x in (("uncertainty", unc), ("confidence", conf)):
                lows[f"{name}_low"][t] = np.where(depth_low > 0, _low(x, f), 0)
        small_array(g, "low_mapping", low_mapping(f))
        small_array(g, "K_in", k_in)
        small_array(g, "K_out", k_out)
        g.attrs["calibration"] = calibration
    write_json(calibration_path, calibration)
    return {
        "teacher": teacher.name,
        "synthetic_stand_in": p.name == "simulated",
        "frames": int(total),
        "calibration_source": calibration["source"],
        "corr_uncertainty_abs_error": calibration.get("corr_uncertainty_error"),
        "corr_uncertainty_temporal_std": calibration["corr_uncertainty_temporal_std"],
        "absrel_vs_gt": float(np.nanmean(gt_err)) if gt_err else None,
    }

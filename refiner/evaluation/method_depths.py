"""Every scored method's depth of a clip: the one place depth is produced for scoring and for the stereo checks.

Methods: the teacher, its EMA and temporal bilateral filters (:mod:`refiner.evaluation.baselines`) and every refined
store (the refiner; the adapted refiner where the clip was adapted). Scoring (:mod:`refiner.evaluation.span_reader`,
:mod:`refiner.evaluation.evaluate`) and the stereo report (:mod:`refiner.evaluation.stereo_metrics`) consume these
depths and never compute one.

A clip is produced span by span, so memory is flat in clip length: each span after the first begins with the
previous span's last frame (``skip`` = 1), so every consecutive frame pair lies in exactly one span; the EMA
continues from that frame, and the bilateral filter reads ``radius`` more frames on each side, so span-wise depths
equal whole-clip ones.

The right eye (a rendered clip's second camera) goes through the same chain as the left: its frames into a clip
store, the same teacher and calibration, the same refiner (``refine``, from
:func:`refiner.inference.infer.clip_refiner`) and the same filters, so the stereo checks compare two eyes' own depths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from refiner.core.config import EvaluateParams, TeacherParams
from refiner.core.store import check_finite, create_group, frames_array, open_group, small_array
from refiner.data.clip import Clip, full
from refiner.evaluation.baselines import METHODS, ema, temporal_bilateral
from refiner.teachers.cache import write_teacher_store

STEP = 24  # frames copied or written at a time: memory is flat in clip length
Refine = Callable[[Clip, Path], object]  # refines a clip into the Zarr store at the path (arrays depth, delta)


def refined_stores(refined: str | Path | dict[str, str | Path]) -> dict[str, str]:
    """{method: refined store}: one path is the refiner's; a mapping may add others (e.g. ``refiner_adapt``)."""
    stores = {"refiner": refined} if isinstance(refined, (str, Path)) else dict(refined)
    if "refiner" not in stores:
        raise ValueError(f"refined stores {sorted(stores)} lack the refiner's")
    return {k: str(v) for k, v in stores.items()}


class MethodDepths:
    """Every method's depth of one clip, frame range by frame range."""

    def __init__(self, clip: Clip, refined: str | Path | dict[str, str | Path], p: EvaluateParams) -> None:
        self.clip, self.p, self.paths = clip, p, refined_stores(refined)
        self.refined = {
            m: open_group(path, ("depth",), "refined depth store")["depth"] for m, path in self.paths.items()
        }
        for m, array in self.refined.items():
            if array.shape != (clip.frames, clip.height, clip.width):
                raise ValueError(
                    f"{self.paths[m]}: shape {array.shape} differs from the teacher's "
                    f"{(clip.frames, clip.height, clip.width)}; re-run infer"
                )
        self.methods = (*(m for m in METHODS if m != "refiner"), *self.refined)  # the baselines, then every refiner

    def frames(self, lo: int, hi: int, ema_previous: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Depth (t, H, W) of frames lo..hi−1 for every method: the teacher, its EMA (continuing from
        ``ema_previous``, the EMA of frame lo − 1) and bilateral filters, and every refined store."""
        r = self.p.bilateral_radius
        a, b = max(0, lo - r), min(self.clip.frames, hi + r)
        tea = self.clip.teacher_depth(full(slice(a, b)))
        bilateral = temporal_bilateral(
            tea, self.clip.rgb(full(slice(a, b))), r, self.p.sigma_depth_rel, self.p.sigma_colour, range(lo - a, hi - a)
        )
        teacher = tea[lo - a : hi - a]
        out = {"teacher": teacher, "ema": ema(teacher, self.p.ema_alpha, ema_previous), "bilateral": bilateral}
        for method, array in self.refined.items():
            out[method] = np.asarray(array[lo:hi], dtype=np.float32)
            check_finite(out[method], f"{self.paths[method]}/depth frames {lo}..{hi}")
        return out

    def spans(self, step: int) -> Iterator[tuple[int, int, int, dict[str, np.ndarray]]]:
        """(lo, hi, skip, depths of frames lo..hi−1) of spans adding ``step`` frames each (the last may add fewer),
        each after the first led by one shared frame (``skip`` = 1)."""
        ema_previous = None
        for start in range(0, self.clip.frames, step):
            lo, hi = max(0, start - 1), min(self.clip.frames, start + step)
            depths = self.frames(lo, hi, ema_previous)
            ema_previous = depths["ema"][-2] if hi - lo > 1 else None  # the EMA of the next span's lo − 1
            yield lo, hi, start - lo, depths


def write_method_depths(clip: Clip, refined: str | Path, p: EvaluateParams, out: str | Path, step: int = STEP) -> dict:
    """Every method's depth of the whole clip into the Zarr store ``out``, span by span (flat memory); returns
    {method: its array}, readable frame range by frame range."""
    depths = MethodDepths(clip, refined, p)
    group = create_group(out)
    shape = (clip.frames, clip.height, clip.width)
    arrays = {name: frames_array(group, name, shape, np.float32) for name in depths.methods}
    for lo, hi, skip, span in depths.spans(step):
        for name, arr in arrays.items():
            arr[lo + skip : hi] = span[name][skip:]
    return arrays


def right_eye_store(clip: Clip, out: str | Path) -> bool:
    """A decoded-clip store of the right eye (its rendered RGB, GT depth and poses; same K and canonical map), for
    running the teacher and refiner on it. False when the clip has no right eye."""
    dec = clip.dec
    if not {"rgb_right", "depth_gt_right"} <= set(dec):
        return False
    g = create_group(out, dict(dec.attrs) | {"scene_id": f"{dec.attrs.get('scene_id')}_right"})
    for src, dst in (("rgb_right", "rgb"), ("depth_gt_right", "depth_gt")):
        arr = frames_array(g, dst, dec[src].shape, dec[src].dtype)
        for lo in range(0, arr.shape[0], STEP):
            arr[lo : lo + STEP] = dec[src][lo : lo + STEP]
    small_array(g, "K", np.asarray(dec["K"][...]))
    if "mapping" in dec:  # the same canonical map: display pixels and source-resolution outputs match the left eye
        small_array(g, "mapping", np.asarray(dec["mapping"][...]))
    if "poses_right" in dec:
        small_array(g, "poses", np.asarray(dec["poses_right"][...]))
    return True


def right_eye_depths(
    clip: Clip, name: str, teacher: TeacherParams, group: str, refine: Refine, p: EvaluateParams, work: Path
) -> dict:
    """Every method's depth of the right eye as Zarr arrays under ``work`` (empty when the clip has none):
    ``teacher`` is the resolved teacher section of the clip's teacher ``group``."""
    if not right_eye_store(clip, work / "decoded.zarr"):
        return {}
    write_teacher_store(work / "decoded.zarr", work / "teacher.zarr", teacher, name, False, group=group)
    right = Clip(work / "decoded.zarr", work / "teacher.zarr", clip.calibration)
    refine(right, work / "refined.zarr")
    return write_method_depths(right, work / "refined.zarr", p, work / "methods.zarr")


def both_eye_depths(
    clip: Clip,
    name: str,
    refined: str,
    teacher: TeacherParams,
    group: str,
    refine: Refine,
    p: EvaluateParams,
    work: Path,
) -> tuple[dict, dict]:
    """({method: array} of the left eye, of the right eye (empty without one)) under ``work``, each with ``gt``
    where the clip has it."""
    left = write_method_depths(clip, refined, p, work / "left.zarr")
    right = right_eye_depths(clip, name, teacher, group, refine, p, work / "right")
    if clip.has_gt:
        left["gt"] = clip.dec["depth_gt"]
    if right and "depth_gt_right" in clip.dec:
        right["gt"] = clip.dec["depth_gt_right"]
    return left, right

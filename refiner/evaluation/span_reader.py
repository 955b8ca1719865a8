"""A clip and its refined depth, read span by span with the baseline filters computed on the fly.

Scoring reads a clip in spans of a few windows, so memory is flat in clip length. Each span after the
first begins with the previous span's last frame (``skip`` = 1), so every consecutive frame pair lies in
exactly one span; the EMA baseline continues from that frame, and the bilateral filter reads
``radius`` more frames on each side, so span-wise results equal whole-clip ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refiner.core.config import EvaluateParams
from refiner.core.heap import release_free_memory
from refiner.core.store import check_finite, create_group, frames_array, open_group
from refiner.data.clip import Clip, full
from refiner.evaluation.baselines import METHODS, ema, temporal_bilateral


@dataclass
class Span:
    """Frames ``lo .. lo + len − 1`` of a clip as tensors; the frames it adds start at ``lo + skip``."""

    lo: int
    skip: int  # 1 when the span begins with the previous span's last frame, else 0
    depths: dict[str, torch.Tensor]  # method (and "gt" when the clip has GT) -> (t, H, W)
    rgb: torch.Tensor  # (t, 3, H, W) in [0, 1]
    K: torch.Tensor  # (t, 3, 3)
    gt: torch.Tensor | None  # (t, H, W)
    poses: torch.Tensor | None  # (t, 4, 4) camera-to-world
    moving: torch.Tensor | None  # (t, H, W) bool
    conf: torch.Tensor  # (t, H, W) teacher confidence
    derived: dict[str, Any] = field(default_factory=dict, repr=False)  # see :meth:`memo`

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """A value derived from the span's GT, poses and RGB only (the same for every method): made once."""
        if key not in self.derived:
            self.derived[key] = make()
        return self.derived[key]

    @property
    def first_new(self) -> int:
        """Clip index of the first frame this span adds."""
        return self.lo + self.skip

    @property
    def hi(self) -> int:
        """Clip index one past the span's last frame."""
        return self.lo + len(self.conf)


def refined_stores(refined: str | Path | dict[str, str | Path]) -> dict[str, str]:
    """{method: refined store}: one path is the refiner's; a mapping may add others (e.g. ``refiner_adapt``)."""
    stores = {"refiner": refined} if isinstance(refined, (str, Path)) else dict(refined)
    if "refiner" not in stores:
        raise ValueError(f"refined stores {sorted(stores)} lack the refiner's")
    return {k: str(v) for k, v in stores.items()}


class ClipSpans:
    """Reads one clip (and its refined stores) span by span."""

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
        poses = clip.poses()
        self.poses = None if poses is None else torch.from_numpy(poses)
        self.K = torch.from_numpy(clip.K())

    def method_depths(self, lo: int, hi: int, ema_previous: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Depth (t, H, W) of frames lo..hi−1 for every scored method: the teacher, its EMA (continuing from
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

    def span(self, lo: int, hi: int, skip: int, ema_previous: np.ndarray | None = None) -> Span:
        """Everything scoring reads of frames lo..hi−1."""
        win = full(slice(lo, hi))
        depths = {k: torch.from_numpy(v) for k, v in self.method_depths(lo, hi, ema_previous).items()}
        gt = torch.from_numpy(self.clip.gt(win)) if self.clip.has_gt else None
        if gt is not None:
            depths["gt"] = gt
        moving = self.clip.moving(win)
        return Span(
            lo=lo,
            skip=skip,
            depths=depths,
            rgb=torch.from_numpy(self.clip.rgb(win)).permute(0, 3, 1, 2).float() / 255,
            K=self.K[lo:hi],
            gt=gt,
            poses=None if self.poses is None else self.poses[lo:hi],
            moving=None if moving is None else torch.from_numpy(moving),
            conf=torch.from_numpy(self.clip.confidence(win)),
        )

    def spans(self, step: int) -> Iterator[Span]:
        """Spans adding ``step`` frames each (the last may add fewer), each after the first led by one shared frame."""
        ema_previous = None
        for start in range(0, self.clip.frames, step):
            lo = max(0, start - 1)
            s = self.span(lo, min(self.clip.frames, start + step), start - lo, ema_previous)
            ema_previous = s.depths["ema"][-2].numpy() if len(s.depths["ema"]) > 1 else None  # frame next lo − 1
            yield s
            release_free_memory()  # flat resident memory over long clips (see refiner/core/heap.py)


def write_method_depths(clip: Clip, refined: str, p: EvaluateParams, out: str | Path, step: int = 24) -> dict:
    """Every scored method's depth of the whole clip into the Zarr store ``out``, span by span (flat memory);
    returns {method: its array}, readable frame range by frame range (the stereo stage's input)."""
    spans = ClipSpans(clip, refined, p)
    group = create_group(out)
    shape = (clip.frames, clip.height, clip.width)
    arrays = {name: frames_array(group, name, shape, np.float32) for name in spans.methods}
    for span in spans.spans(step):
        for name, arr in arrays.items():
            arr[span.first_new : span.hi] = span.depths[name][span.skip :].numpy()
    return arrays

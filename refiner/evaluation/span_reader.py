"""What scoring reads of a clip, span by span: every method's depth (made by
:mod:`refiner.evaluation.method_depths`, which says how spans overlap), GT, RGB, K, poses, motion and confidence.

Scoring reads a clip in spans of a few windows, so memory is flat in clip length.
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
from refiner.data.clip import Clip, full
from refiner.evaluation.method_depths import MethodDepths


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


class ClipSpans:
    """Reads one clip (and its refined stores) span by span: every method's depth from
    :class:`refiner.evaluation.method_depths.MethodDepths`, the rest from the clip."""

    def __init__(self, clip: Clip, refined: str | Path | dict[str, str | Path], p: EvaluateParams) -> None:
        self.clip, self.depths = clip, MethodDepths(clip, refined, p)
        self.methods = self.depths.methods
        poses = clip.poses()
        self.poses = None if poses is None else torch.from_numpy(poses)
        self.K = torch.from_numpy(clip.K())

    def span(self, lo: int, hi: int, skip: int, methods: dict[str, np.ndarray]) -> Span:
        """Everything scoring reads of frames lo..hi−1, given every method's depth of them."""
        win = full(slice(lo, hi))
        depths = {k: torch.from_numpy(v) for k, v in methods.items()}
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
        for lo, hi, skip, methods in self.depths.spans(step):
            yield self.span(lo, hi, skip, methods)
            release_free_memory()  # flat resident memory over long clips (see refiner/core/heap.py)

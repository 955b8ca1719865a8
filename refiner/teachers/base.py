"""What every teacher returns per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class TeacherFrame:
    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 = invalid
    uncertainty: np.ndarray  # (H, W) float32, higher = less certain, relative within the image; 0 where depth is 0
    K_prompt: np.ndarray  # (3, 3) the camera given to the model: the K its depth was computed with
    K_predicted: np.ndarray  # (3, 3) the model's own predicted K (UniDepthV2 predicts one even when prompted)


class Teacher(Protocol):
    """A frozen single-frame metric depth model. Frames arrive in clip order (t = 0, 1, ...)."""

    name: str

    def predict(self, t: int, rgb: np.ndarray, K: np.ndarray, gt: np.ndarray | None) -> TeacherFrame:
        """Depth and uncertainty of frame ``t`` from RGB (H, W, 3) uint8 and intrinsics K; ``gt`` only for
        simulated teachers (None otherwise)."""
        ...

"""The teacher interface: what a frozen single-frame metric depth model takes and returns.

A teacher is a plug-in. A package adds one by naming a factory in the entry-point group ``refiner.teachers``
(``[project.entry-points."refiner.teachers"] mine = "my_pkg.teacher:MyTeacher"``), or params.yaml names it as
``teacher.name: my_pkg.teacher:MyTeacher``; :func:`refiner.teachers.registry.make_teacher` finds it. The
factory is called with a :class:`TeacherContext` and returns an object with the :class:`Teacher` protocol.
The pipeline (the teacher stage, ``refiner-video``) only ever calls :meth:`Teacher.predict` on batches of
frames in clip order and reads :attr:`Teacher.name`, :attr:`Teacher.batch_size`, :attr:`Teacher.label` and
:meth:`Teacher.identity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TeacherFrame:
    """One frame's prediction."""

    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 = invalid
    uncertainty: np.ndarray | None  # (H, W) float32, higher = less certain (relative within the image); None: none
    K_used: (
        np.ndarray
    )  # (3, 3) the camera the depth was computed with (the prompt, or the model's own if it ignores it)
    K_predicted: np.ndarray | None = None  # (3, 3) the model's own predicted camera, where it predicts one


@dataclass(frozen=True)
class TeacherBatch:
    """Consecutive frames of one clip, in clip order."""

    rgb: np.ndarray  # (B, H, W, 3) uint8
    K: np.ndarray  # (B, 3, 3) float64 intrinsics in pixels of these frames
    index: np.ndarray  # (B,) int64 frame numbers in the clip, increasing

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class TeacherContext:
    """What a teacher factory is given. ``options`` is ``teacher.options`` of params.yaml, free for plug-ins;
    ``params`` the whole ``teacher`` section (the built-in teachers read their own keys there); ``gt`` the
    ground-truth depth of frame t, for simulated teachers only (None where the clip has none: a real teacher
    never reads it)."""

    clip: str
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    params: Any = None
    gt: Any = None  # Callable[[int], np.ndarray] | None


def torch_device(choice: str):
    """``teacher.device`` as a torch device: ``auto`` is a GPU where there is one, else the CPU."""
    import torch  # only the teachers that run a network need it

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice)


@runtime_checkable
class Teacher(Protocol):
    """A frozen single-frame metric depth model."""

    name: str  # the name it is registered under
    label: str  # one honest line for reports: what it is (a real model, a network trained here, a formula)
    batch_size: int  # frames per predict() call the model handles at once (1: one at a time)

    def predict(self, batch: TeacherBatch) -> list[TeacherFrame]:
        """Depth (and uncertainty, where the model gives one) of every frame of ``batch``, in order."""
        ...

    def identity(self) -> dict[str, Any]:
        """Everything that makes this teacher's errors what they are (weights digest, settings), JSON-able: two
        teachers share a calibration table only when their identities are equal."""
        ...

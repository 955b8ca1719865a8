"""Training and validation windows read lazily from a clip's stores (:class:`refiner.data.clip.Clip`).

Each sample is one window of N frames (see :mod:`refiner.data.windows`) as float32 tensors:

- ``depth`` [N,1,H,W] teacher depth fed to the refiner (jittered in training);
- ``teacher`` [N,1,H,W] the clean teacher depth that L_close targets;
- ``conf`` [N,1,H,W] teacher confidence c(x) in [0, 1] (train-split calibration);
- ``rgb`` [N,3,H,W] in [0, 1]; ``gt`` [N,1,H,W] (zeros when not read) and ``use_gt`` (0-d bool: whether L_gt
  supervises the window; training reads GT on every window of a clip that has it, for L_pose's pixel choice);
- ``poses`` [N,4,4] camera-to-world (all zero where the clip has none or the window is GT-free);
- ``static`` [N,1,H,W] bool: static scene seen by a still camera (GT moving mask within the clip's
  still-camera segment) or, for clips without that mask, pixels whose colour stays put across the
  window (:func:`refiner.geometry.masks.window_static`);
- ``edges`` [N,1,H,W] the guidance stage's edge map G_t in [0, 1] (zeros without a guidance store);
- ``keyframes`` [N] bool; ``K`` [N,3,3] intrinsics of the crop; ``start`` (0-d int64).

Only the window's frames are read from Zarr (one chunk per frame), so memory does not grow with clip
length. :class:`ClipWindows` covers a clip with fixed windows (validation, inference);
:class:`RandomWindows` draws random windows and crops over several clips (training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from refiner.data.clip import Clip
from refiner.data.windows import keyframe_mask, window_starts
from refiner.geometry.masks import window_static
from refiner.teachers.confidence import uncertainty_rank
from refiner.teachers.simulated import SimulatedTeacher, draw_wide


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation; all off for validation."""

    crop: int | None = None  # square crop size (multiple of the low-res factor), None = full frame
    reverse_prob: float = 0.0  # probability of a temporal reversal
    jitter_prob: float = 0.0  # probability of teacher jitter D_in = s·D + eps
    jitter_scale: float = 0.03  # s ~ U(1 - jitter_scale, 1 + jitter_scale), per frame
    jitter_noise_rel: float = 0.01  # eps ~ N(0, (jitter_noise_rel·D)^2)
    gt_fraction: float = 0.0  # fraction of windows supervised by GT when the clip has it
    resim: Any = None  # a simulated teacher's settings (TeacherParams) whose ranges a re-simulated window draws from
    resim_prob: float = 0.0  # share of windows (of clips with GT) whose teacher is re-simulated from GT ...
    resim_gt_fraction: float = 0.0  # ... and of those, the share supervised by GT
    conf_gamma: tuple[float, float] = (1.0, 1.0)  # a re-simulated window's confidence is (1 - rank)^g, g log-uniform
    gt_free: bool = False  # never read GT or the rendered moving mask (GT-free adaptation, refiner.inference.adapt)


def read_window(
    clip: Clip,
    start: int,
    length: int,
    y0: int = 0,
    x0: int = 0,
    size: tuple[int, int] | None = None,
    read_gt: bool = False,
    gt_free: bool = False,
) -> dict[str, torch.Tensor]:
    """One window's tensors (see the module docstring), unaugmented; ``gt_free``: the static mask from the colour
    gate even where the clip has a (rendered, GT) moving mask, and no GT read at all."""
    h, w = size or (clip.height, clip.width)
    win = (slice(start, start + length), slice(y0, y0 + h), slice(x0, x0 + w))
    teacher = torch.from_numpy(clip.teacher_depth(win))[:, None]
    rgb = torch.from_numpy(clip.rgb(win)).permute(0, 3, 1, 2).float() / 255.0
    K = torch.from_numpy(clip.K(win[0]).astype(np.float32))
    K[:, 0, 2] -= x0
    K[:, 1, 2] -= y0
    moving = None if gt_free else clip.moving(win)
    if moving is not None:
        still_camera = torch.arange(start, start + length) < clip.static_frames
        static = ~torch.from_numpy(moving)[:, None] & still_camera[:, None, None, None]
    else:
        static = window_static(rgb, clip.factor).expand_as(teacher)
    gt = torch.from_numpy(clip.gt(win))[:, None] if read_gt else torch.zeros_like(teacher)
    poses = None if gt_free else clip.poses(win[0])
    edges = clip.edges(win)
    return {
        "depth": teacher,
        "teacher": teacher,
        "conf": torch.from_numpy(clip.confidence(win))[:, None],
        "rgb": rgb,
        "gt": gt,
        "static": static,
        "K": K,
        "poses": torch.zeros(teacher.shape[0], 4, 4) if poses is None else torch.from_numpy(poses).float(),
        "edges": torch.zeros_like(teacher) if edges is None else torch.from_numpy(edges)[:, None],
    }


def resimulate(sample: dict, rng: np.random.Generator, a: Augment) -> dict:
    """The window's teacher replaced by a simulated one whose error model is drawn for this window alone from the
    ranges of ``a.resim`` (:func:`refiner.teachers.simulated.draw_wide`), run on the window's GT; its confidence
    is (1 − uncertainty rank)^g with g drawn per window, so no single calibration table is learnt."""
    gt = sample["gt"][:, 0].numpy()
    teacher = SimulatedTeacher.with_errors(draw_wide(rng, a.resim), rng, lambda t: gt[t])
    frames = [teacher.predict_frame(t, np.eye(3)) for t in range(gt.shape[0])]
    depth = np.stack([f.depth for f in frames])
    valid = depth > 0
    rank = np.stack([uncertainty_rank(f.uncertainty, v) for f, v in zip(frames, valid, strict=True)])
    gamma = float(np.exp(rng.uniform(*np.log(a.conf_gamma))))
    conf = np.where(valid, (1.0 - rank) ** gamma, 0.0).astype(np.float32)
    depth_t = torch.from_numpy(depth)[:, None]
    return {**sample, "depth": depth_t, "teacher": depth_t, "conf": torch.from_numpy(conf)[:, None]}


def augment_window(sample: dict, rng: np.random.Generator, a: Augment) -> tuple[dict, bool]:
    """Teacher jitter (the input only; the loss keeps the clean teacher) and temporal reversal."""
    teacher = sample["teacher"]
    if rng.random() < a.jitter_prob:
        s = torch.from_numpy(rng.uniform(1 - a.jitter_scale, 1 + a.jitter_scale, (teacher.shape[0], 1, 1, 1)))
        eps = torch.from_numpy(rng.standard_normal(teacher.shape, dtype=np.float32)) * a.jitter_noise_rel
        sample["depth"] = ((teacher * (s + eps).float()).clamp_min(0) * (teacher > 0)).float()
    reverse = bool(rng.random() < a.reverse_prob)
    return ({k: v.flip(0) for k, v in sample.items()} if reverse else sample), reverse


class ClipWindows(Dataset):
    """Fixed windows covering one clip (stride N − overlap, the last aligned to the clip's end)."""

    def __init__(
        self, clip: Clip, length: int, keyframes: list[int], overlap: int | None = None, use_gt: bool = False
    ) -> None:
        self.clip, self.keyframes, self.use_gt = clip, keyframes, use_gt and clip.has_gt
        self.length = min(length, clip.frames)
        overlap = self.length // 2 if overlap is None else min(overlap, self.length - 1)
        self.starts = window_starts(clip.frames, self.length, overlap)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = self.starts[index]
        sample = read_window(self.clip, start, self.length, read_gt=self.use_gt)
        sample["keyframes"] = torch.from_numpy(keyframe_mask(self.length, self.keyframes))
        sample["use_gt"] = torch.tensor(self.use_gt)
        sample["start"] = torch.tensor(start)
        return sample


class RandomWindows(Dataset):
    """``samples`` random windows per epoch drawn over several clips (uniform over clips), randomly cropped
    and augmented; deterministic given seed, epoch and index."""

    def __init__(
        self, clips: list[Clip], length: int, keyframes: list[int], augment: Augment, samples: int, seed: int = 0
    ) -> None:
        if not clips:
            raise ValueError("no training clips: list at least one clip under corpus.train in params.yaml")
        self.clips, self.keyframes, self.augment, self.samples, self.seed = clips, keyframes, augment, samples, seed
        self.length = min(length, *(c.frames for c in clips))
        self.epoch = 0
        crop = augment.crop
        for c in clips:
            if crop is not None and (crop % c.factor or crop > min(c.height, c.width)):
                raise ValueError(
                    f"train.crop {crop} must be a multiple of the low-res factor {c.factor} and at most "
                    f"{min(c.height, c.width)} (the frame size of {c.decoded_path})"
                )

    def __len__(self) -> int:
        return self.samples

    def set_epoch(self, epoch: int) -> None:
        """Vary the random draws per epoch."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clip = self.clips[int(rng.integers(len(self.clips)))]
        a, f = self.augment, clip.factor
        start = int(rng.integers(0, clip.frames - self.length + 1))
        h, w = (a.crop, a.crop) if a.crop is not None else (clip.height, clip.width)
        y0 = int(rng.integers(0, (clip.height - h) // f + 1)) * f
        x0 = int(rng.integers(0, (clip.width - w) // f + 1)) * f
        has_gt = clip.has_gt and not a.gt_free
        resim = a.resim is not None and has_gt and rng.random() < a.resim_prob
        use_gt = has_gt and rng.random() < (a.resim_gt_fraction if resim else a.gt_fraction)
        sample = read_window(clip, start, self.length, y0, x0, (h, w), has_gt, a.gt_free)
        sample, reverse = augment_window(resimulate(sample, rng, a) if resim else sample, rng, a)
        sample["keyframes"] = torch.from_numpy(keyframe_mask(self.length, self.keyframes, reverse))
        sample["use_gt"] = torch.tensor(use_gt)
        sample["start"] = torch.tensor(start)
        return sample

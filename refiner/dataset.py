"""Training and validation windows read lazily from a clip's decoded and teacher stores.

Each sample is one window of N frames (see :mod:`refiner.windows`) as float32 tensors:

- ``depth_full`` [N,1,H,W] teacher depth fed to the refiner (jittered in training), ``depth_low``
  [N,1,h,w] its f×f area mean (:func:`refiner.lowres.downsample_depth`, the same as the teacher store);
- ``teacher_full`` [N,1,H,W] the clean teacher depth that L_close targets;
- ``conf_full`` [N,1,H,W], ``conf_low`` [N,1,h,w] teacher confidence c(x) in [0, 1];
- ``rgb`` [N,3,H,W] in [0, 1]; ``gt`` [N,1,H,W] (zeros when unused) and ``use_gt`` (0-d bool);
- ``static`` [N,1,H,W] bool: pixels of static scene seen by a still camera (GT moving-object mask within
  the clip's static-camera segment), or, for clips without that mask, pixels whose colour stays put
  across the window (:func:`refiner.losses.static_gate`);
- ``keyframes`` [N] bool; ``K`` [N,3,3] intrinsics of the crop; ``start`` (0-d int64).

Only the window's frames are read from Zarr (one chunk per frame), so memory does not grow
with clip length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from refiner.losses import static_gate
from refiner.lowres import downsample, downsample_depth
from refiner.store import open_group
from refiner.windows import keyframe_mask, window_starts

STATIC_COLOUR_THRESHOLD = 0.02  # mean |ΔRGB| (0-1) below which a pixel counts as unchanged


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation; all off for validation."""

    crop: int | None = None  # square crop size (multiple of the low-res factor), None = full frame
    reverse_prob: float = 0.0  # probability of a temporal reversal
    jitter_prob: float = 0.0  # probability of teacher jitter D_in = s·D + eps
    jitter_scale: float = 0.03  # s ~ U(1 - jitter_scale, 1 + jitter_scale), per frame
    jitter_noise_rel: float = 0.01  # eps ~ N(0, (jitter_noise_rel·D)^2)
    gt_fraction: float = 0.0  # fraction of windows supervised by GT when the clip has it


class ClipWindows(Dataset):
    """Windows of one clip over ``frames`` = (first, end).

    With ``samples`` None the windows are fixed (:func:`window_starts` with ``overlap``, default N/2: validation
    and inference); otherwise each of ``samples`` indices draws a random start (training).
    """

    def __init__(
        self,
        decoded: str | Path,
        teacher: str | Path,
        length: int,
        keyframes: list[int],
        frames: tuple[int, int] | None = None,
        augment: Augment | None = None,
        samples: int | None = None,
        seed: int = 0,
        overlap: int | None = None,
    ) -> None:
        self.decoded_path, self.teacher_path = str(decoded), str(teacher)
        dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
        tea = open_group(teacher, ("depth", "confidence", "low_mapping"), "teacher store")
        total = dec["rgb"].shape[0]
        if tea["depth"].shape[0] != total:
            raise ValueError(f"{teacher}: {tea['depth'].shape[0]} frames but {decoded} has {total}; re-run the teacher")
        lo, hi = frames if frames is not None else (0, total)
        if not 0 <= lo < hi <= total:
            raise ValueError(f"frame range {lo}..{hi} is outside the clip's {total} frames")
        self.lo, self.hi = lo, hi
        self.length = min(length, hi - lo)
        self.keyframes = keyframes
        self.factor = int(tea["low_mapping"][0])
        self.size = dec["rgb"].shape[1]
        self.has_gt = "depth_gt" in dec
        self.augment = augment or Augment()
        self.seed = seed
        self.epoch = 0
        crop = self.augment.crop
        if crop is not None and (crop % self.factor or crop > self.size):
            raise ValueError(f"crop {crop} must be a multiple of the low-res factor {self.factor} and <= {self.size}")
        if samples is None:
            overlap = self.length // 2 if overlap is None else min(overlap, self.length - 1)
            self.starts: list[int] | None = [lo + s for s in window_starts(hi - lo, self.length, overlap)]
            self.samples = len(self.starts)
        else:
            self.starts, self.samples = None, samples
        self._groups = None

    def __len__(self) -> int:
        return self.samples

    def set_epoch(self, epoch: int) -> None:
        """Vary the random draws per epoch (deterministic given seed, epoch and index)."""
        self.epoch = epoch

    def _open(self):
        if self._groups is None:  # opened lazily so the dataset pickles into worker processes
            self._groups = (open_group(self.decoded_path), open_group(self.teacher_path))
        return self._groups

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        dec, tea = self._open()
        a = self.augment
        if self.starts is not None:
            start = self.starts[index]
        else:
            start = int(rng.integers(self.lo, self.hi - self.length + 1))
        sl = slice(start, start + self.length)
        y0 = x0 = 0
        size = self.size
        if a.crop is not None and a.crop < self.size:
            size = a.crop
            y0, x0 = (int(rng.integers(0, (self.size - size) // self.factor + 1)) * self.factor for _ in range(2))
        win = (sl, slice(y0, y0 + size), slice(x0, x0 + size))
        teacher = torch.from_numpy(np.asarray(tea["depth"][win], dtype=np.float32))[:, None]
        conf = torch.from_numpy(np.asarray(tea["confidence"][win], dtype=np.float32))[:, None]
        rgb = torch.from_numpy(np.asarray(dec["rgb"][win])).permute(0, 3, 1, 2).float() / 255.0
        K = torch.from_numpy(np.asarray(dec["K"][sl], dtype=np.float32)).clone()
        K[:, 0, 2] -= x0
        K[:, 1, 2] -= y0
        use_gt = self.has_gt and rng.random() < a.gt_fraction
        gt = (
            torch.from_numpy(np.asarray(dec["depth_gt"][win], dtype=np.float32))[:, None]
            if use_gt
            else torch.zeros_like(teacher)
        )
        if "moving_mask" in dec:
            moving = torch.from_numpy(np.asarray(dec["moving_mask"][win]))[:, None] > 0
            still_camera = torch.arange(start, start + self.length) < int(dec.attrs.get("static_frames", 0))
            static = ~moving & still_camera[:, None, None, None]
        else:
            gate = static_gate(rgb[None], self.factor, STATIC_COLOUR_THRESHOLD)[0]
            static = gate.amin(0, keepdim=True).bool().expand_as(teacher)
        depth_in = teacher
        if rng.random() < a.jitter_prob:
            n = teacher.shape[0]
            s = torch.from_numpy(rng.uniform(1 - a.jitter_scale, 1 + a.jitter_scale, (n, 1, 1, 1)).astype(np.float32))
            eps = torch.from_numpy(rng.standard_normal(teacher.shape).astype(np.float32)) * a.jitter_noise_rel
            depth_in = (teacher * (s + eps)).clamp_min(0) * (teacher > 0)
        reverse = rng.random() < a.reverse_prob
        sample = {
            "depth_full": depth_in,
            "depth_low": downsample_depth(depth_in, self.factor),
            "teacher_full": teacher,
            "conf_full": conf,
            "conf_low": downsample(conf, self.factor),
            "rgb": rgb,
            "gt": gt,
            "static": static,
            "K": K,
        }
        if reverse:
            sample = {k: v.flip(0) for k, v in sample.items()}
        sample["keyframes"] = torch.from_numpy(keyframe_mask(self.length, self.keyframes, reverse))
        sample["use_gt"] = torch.tensor(use_gt)
        sample["start"] = torch.tensor(start)
        return sample


def run_refiner(model: torch.nn.Module, batch: dict[str, torch.Tensor], mapping: torch.Tensor, hard: bool = False):
    """One forward pass of the refiner on windows from :class:`ClipWindows` (batched, [B, N, ...])."""
    return model(
        batch["depth_low"],
        batch["conf_low"],
        batch["depth_full"],
        batch["conf_full"],
        mapping,
        rgb_full=batch["rgb"],
        hard_clamp=hard,
    )

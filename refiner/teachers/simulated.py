"""A simulated single-frame teacher: ground truth plus the errors a single-frame metric model makes.

This is a STAND-IN for UniDepthV2 on synthetic clips, where no real model can run. Every clip gets
its own error model: each parameter below is drawn uniformly from its ``[low, high]`` range in
``params.yaml`` (``teacher:``) by an RNG seeded from (``teacher.seed``, a stable hash of the clip
name), and the error sequence is seeded the same way, so no two clips share one. The drawn values are
exposed as ``SimulatedTeacher.errors``. Per frame t it returns D_t = B · s_t · W_t(x) · (1 + σ_n·ε):

- B: ground truth blurred across depth edges: within ~2 px of a depth edge G is replaced by its
  Gaussian blur (σ = ``edge_blur_px``), so depth bleeds across object boundaries;
- s_t: global scale error, exp(AR(1) with std ``scale_std`` and lag-1 correlation ``scale_corr``)
  times a piecewise-constant jump factor re-drawn with probability ``jump_prob`` (std ``jump_std``);
- W_t: a low-frequency multiplicative warp exp(``warp_amp``·f_t(x)), f a sum of 3 random
  cosine waves (≤ 1.5 cycles per image) whose phases drift by ``warp_drift`` rad per frame;
- ε: i.i.d. Gaussian depth-proportional noise, σ_n = ``noise_rel``.

Uncertainty (higher = less certain, relative within the image, like UniDepthV2's ``confidence``): the
error the model could expect at a pixel, not quite the error it made, blurred by its own mistakes:
u = (|r·(1 + λ·σ_n·ε) − 1| + (1 − λ)·0.8·σ_n) · exp(``uncertainty_noise``·ω), with r = B·W_t/G divided
by its median (scale-free, as UniDepthV2's uncertainty is trained on median-rescaled errors), λ =
``NOISE_SEEN`` = 0.2 the share of the noise it can locate (0.8·σ_n ≈ the mean |noise| it cannot), and ω
smooth unit-variance noise (Gaussian σ = 4 px). It never sees the global scale error s_t.

Measured per frame on two rendered 256×256 frames of each of the 9 synthetic corpus scenes (Spearman rank
correlation between u and |relative error| after per-frame median rescaling; mean [min, max]):

======================  =====================  =====================  =====================
other error parameters  uncertainty_noise 0.3  0.75                   1.2
======================  =====================  =====================  =====================
mid-range               0.67 [0.56, 0.74]      0.45 [0.33, 0.52]      0.32 [0.20, 0.39]
drawn per clip          0.71 [0.35, 0.89]      0.50 [0.18, 0.70]      0.36 [0.11, 0.55]
======================  =====================  =====================  =====================

Against the raw |D − G|/G the same figures are lower and vary with each frame's global scale error,
which no single-frame uncertainty can rank (mid-range: 0.43, 0.30, 0.22 on average, single frames
down to about 0). Deterministic by (seed, clip name).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter

from refiner.teachers.base import TeacherBatch, TeacherContext, TeacherFrame

if TYPE_CHECKING:
    from refiner.core.config import TeacherParams

NOISE_SEEN = 0.2  # share of the per-pixel depth noise the uncertainty can locate (texture-like errors)
ERROR_PARAMS = (
    "scale_std",
    "scale_corr",
    "jump_prob",
    "jump_std",
    "warp_amp",
    "warp_drift",
    "noise_rel",
    "edge_blur_px",
    "uncertainty_noise",
)


def clip_key(seed: int, clip_name: str) -> list[int]:
    """RNG seed words for (teacher seed, clip name); the name hash is stable across runs (sha256, not hash())."""
    digest = hashlib.sha256(clip_name.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def _bounds(value: Any, name: str) -> tuple[float, float]:
    """(low, high) of a range; a single number is the range [v, v]."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"teacher.{name}: range [{low}, {high}] has low > high")
    return low, high


def draw_errors(p: TeacherParams, clip_name: str) -> dict[str, float]:
    """Every error parameter drawn uniformly from its range, deterministically from (p.seed, clip_name)."""
    rng = np.random.default_rng([*clip_key(p.seed, clip_name), 0])
    return {name: float(rng.uniform(*_bounds(getattr(p, name), name))) for name in ERROR_PARAMS}


def draw_wide(rng: np.random.Generator, p: TeacherParams) -> dict[str, float]:
    """Every error parameter drawn LOG-uniformly from its range (uniformly where the range starts at 0): ranges
    that span decades (training's wide family) then give steady teachers as often as noisy ones."""
    out = {}
    for name in ERROR_PARAMS:
        low, high = _bounds(getattr(p, name), name)
        out[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))) if low > 0 else rng.uniform(low, high))
    return out


class SimulatedTeacher:
    """The stand-in as a :class:`~refiner.teachers.base.Teacher`: it reads the clip's ground truth through
    ``ctx.gt`` and draws its errors from ``ctx.params`` (the ``teacher`` section) and the clip's name."""

    name = "simulated"
    label = "simulated: ground truth plus a formula of a single-frame model's errors (no model runs)"
    batch_size = 1  # frame by frame: the error processes run in clip order

    def __init__(self, ctx: TeacherContext) -> None:
        if ctx.gt is None:
            raise ValueError(
                f"clip {ctx.clip}: the simulated teacher needs ground-truth depth and this clip has none; give the "
                "clip a teacher that needs no GT (teacher: learned, or unidepth with its weights), or give it GT"
            )
        self.p, self.clip_name = ctx.params, ctx.clip
        self._begin(draw_errors(self.p, ctx.clip), np.random.default_rng([*clip_key(self.p.seed, ctx.clip), 1]), ctx.gt)

    @classmethod
    def with_errors(cls, errors: dict[str, float], rng: np.random.Generator, gt) -> SimulatedTeacher:
        """A teacher with a given error model (training's per-window draws), its sequence from ``rng``."""
        teacher = cls.__new__(cls)
        teacher.p, teacher.clip_name = None, None
        teacher._begin(errors, rng, gt)
        return teacher

    def _begin(self, errors: dict[str, float], rng: np.random.Generator, gt) -> None:
        """Start the error processes of frame 0."""
        self.errors, self.rng, self.gt = errors, rng, gt
        self.ar = self.rng.standard_normal() * self.errors["scale_std"]
        self.jump = 0.0
        self.waves = [
            (self.rng.uniform(-1.5, 1.5, 2), self.rng.uniform(0, 2 * np.pi), self.rng.choice([-1.0, 1.0]))
            for _ in range(3)
        ]
        self.next_t = 0

    def identity(self) -> dict[str, Any]:
        """The error family: every range it draws from (each clip draws its own model inside them)."""
        return {"name": self.name, "noise_seen": NOISE_SEEN, **{k: list(getattr(self.p, k)) for k in ERROR_PARAMS}}

    def predict(self, batch: TeacherBatch) -> list[TeacherFrame]:
        """Every frame of ``batch`` (in clip order, no frame skipped); the RGB is unused, K passed through."""
        return [self.predict_frame(int(t), K) for t, K in zip(batch.index, batch.K, strict=True)]

    def scale(self) -> float:
        """Advance the global scale process by one frame and return s_t."""
        e, rho = self.errors, self.errors["scale_corr"]
        if self.next_t > 0:
            self.ar = rho * self.ar + np.sqrt(1 - rho**2) * e["scale_std"] * self.rng.standard_normal()
        if self.rng.random() < e["jump_prob"]:
            self.jump = e["jump_std"] * self.rng.standard_normal()
        return float(np.exp(self.ar + self.jump))

    def warp(self, t: int, h: int, w: int) -> np.ndarray:
        """W_t(x) = exp(warp_amp · mean of drifting low-frequency cosines) on an (h, w) grid."""
        yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
        f = np.zeros((h, w))
        for freq, phase, direction in self.waves:
            f += np.cos(2 * np.pi * (freq[0] * xx + freq[1] * yy) + phase + direction * self.errors["warp_drift"] * t)
        return np.exp(self.errors["warp_amp"] * f / np.sqrt(len(self.waves) / 2))

    def _bleed(self, g: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """G blurred across depth edges (within ~2 px of an edge)."""
        log_g = np.log(np.where(valid, g, 1.0))
        edge = maximum_filter(np.hypot(*np.gradient(log_g)) > 0.05, size=5) & valid
        sigma = self.errors["edge_blur_px"]
        blurred = gaussian_filter(np.where(valid, g, 0.0), sigma)
        weight = gaussian_filter(valid.astype(np.float64), sigma)
        return np.where(edge, blurred / np.maximum(weight, 1e-6), g)

    def _uncertainty(self, ratio: np.ndarray, eps: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The |relative error| the model could expect, blurred by its own mistakes (see the module docstring);
        ``ratio`` = B·W_t/G (the systematic error before the global scale), ``eps`` the depth noise draw ε."""
        ratio = ratio / np.median(ratio[valid]) if valid.any() else ratio  # scale-free, like UniDepthV2's training
        sigma_n = self.errors["noise_rel"]
        seen = np.abs(ratio * (1 + NOISE_SEEN * sigma_n * eps) - 1) + (1 - NOISE_SEEN) * 0.8 * sigma_n
        wobble = gaussian_filter(self.rng.standard_normal(ratio.shape), 4.0)
        wobble /= max(wobble.std(), 1e-9)
        return np.where(valid, seen * np.exp(self.errors["uncertainty_noise"] * wobble), 0.0)

    def predict_frame(self, t: int, K: np.ndarray) -> TeacherFrame:
        """Frame ``t`` (in order): GT with this clip's errors."""
        if t != self.next_t:
            raise ValueError(f"the simulated teacher runs frames in order; expected frame {self.next_t}, got {t}")
        gt = np.asarray(self.gt(t))
        s = self.scale()
        self.next_t += 1
        valid = gt > 0
        g = gt.astype(np.float64)
        base = self._bleed(g, valid)
        warped = base * self.warp(t, *g.shape)
        eps = self.rng.standard_normal(g.shape)
        depth = np.where(valid, np.maximum(warped * s * (1 + self.errors["noise_rel"] * eps), 1e-3), 0.0)
        uncertainty = self._uncertainty(warped / np.where(valid, g, 1.0), eps, valid)
        K = np.asarray(K, dtype=np.float64)
        return TeacherFrame(depth.astype(np.float32), uncertainty.astype(np.float32), K.copy(), K.copy())

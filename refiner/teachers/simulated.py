"""A simulated single-frame teacher: ground truth plus the errors a single-frame metric model makes.

This is a STAND-IN for UniDepthV2 on the synthetic default clip, where no real model can run.
Per frame t it returns D_t = G · s_t · W_t(x) · (1 + σ_n·ε) after blurring G across depth edges:

- s_t: global scale error, exp(AR(1) with std ``scale_std`` and lag-1 correlation ``scale_corr``)
  times a piecewise-constant jump factor re-drawn with probability ``jump_prob`` (std ``jump_std``);
- W_t: a low-frequency multiplicative warp exp(``warp_amp``·f_t(x)), f a sum of 3 random
  cosine waves (≤ 1.5 cycles per image) whose phases drift by ``warp_drift`` rad per frame;
- ε: i.i.d. Gaussian depth-proportional noise, σ_n = ``noise_rel``;
- edge bleeding: within ~2 px of a depth edge G is replaced by its Gaussian blur
  (σ = ``edge_blur_px``), so depth bleeds across object boundaries.

Uncertainty: (|D − G|/G + 0.01 + 0.03·edge) · exp(``uncertainty_noise``·smooth noise): it ranks
pixels roughly by their error (its correlation with the error is reported by calibration) without
knowing the per-frame scale error, like a real model's relative uncertainty. Deterministic by seed.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter

from refiner.config import TeacherParams
from refiner.teachers.base import TeacherFrame


class SimulatedTeacher:
    name = "simulated"

    def __init__(self, p: TeacherParams) -> None:
        self.p = p
        self.rng = np.random.default_rng(p.seed)
        self.ar = self.rng.standard_normal() * p.scale_std
        self.jump = 0.0
        self.waves = [
            (self.rng.uniform(-1.5, 1.5, 2), self.rng.uniform(0, 2 * np.pi), self.rng.choice([-1.0, 1.0]))
            for _ in range(3)
        ]
        self.next_t = 0

    def scale(self) -> float:
        """Advance the global scale process by one frame and return s_t."""
        p, rho = self.p, self.p.scale_corr
        if self.next_t > 0:
            self.ar = rho * self.ar + np.sqrt(1 - rho**2) * p.scale_std * self.rng.standard_normal()
        if self.rng.random() < p.jump_prob:
            self.jump = p.jump_std * self.rng.standard_normal()
        return float(np.exp(self.ar + self.jump))

    def warp(self, t: int, h: int, w: int) -> np.ndarray:
        """W_t(x) = exp(warp_amp · mean of drifting low-frequency cosines) on an (h, w) grid."""
        yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
        f = np.zeros((h, w))
        for freq, phase, direction in self.waves:
            f += np.cos(2 * np.pi * (freq[0] * xx + freq[1] * yy) + phase + direction * self.p.warp_drift * t)
        return np.exp(self.p.warp_amp * f / np.sqrt(len(self.waves) / 2))

    def predict(self, t: int, rgb: np.ndarray, K: np.ndarray, gt: np.ndarray | None) -> TeacherFrame:
        if gt is None:
            raise ValueError(
                "the simulated teacher (teacher.name: simulated) needs ground-truth depth, and this clip has none; "
                "use the real teacher (teacher.name: unidepth) for clips without GT, or give decode.gt"
            )
        if t != self.next_t:
            raise ValueError(f"the simulated teacher runs frames in order; expected frame {self.next_t}, got {t}")
        p = self.p
        s = self.scale()
        self.next_t += 1
        valid = gt > 0
        g = gt.astype(np.float64)
        log_g = np.log(np.where(valid, g, 1.0))
        edge = np.hypot(*np.gradient(log_g)) > 0.05
        edge = maximum_filter(edge, size=5) & valid
        blurred = gaussian_filter(np.where(valid, g, 0.0), p.edge_blur_px)
        weight = gaussian_filter(valid.astype(np.float64), p.edge_blur_px)
        base = np.where(edge, blurred / np.maximum(weight, 1e-6), g)
        noise = 1 + p.noise_rel * self.rng.standard_normal(g.shape)
        depth = base * s * self.warp(t, *g.shape) * noise
        depth = np.where(valid, np.maximum(depth, 1e-3), 0.0)
        wobble = gaussian_filter(self.rng.standard_normal(g.shape), 4.0)
        wobble /= max(wobble.std(), 1e-9)
        # the model cannot see its own global scale error: uncertainty follows the error without it
        err_local = np.abs(depth / s - g) / np.where(valid, g, 1.0)
        uncertainty = (err_local + 0.01 + 0.03 * edge) * np.exp(p.uncertainty_noise * wobble)
        K = np.asarray(K, dtype=np.float64)
        return TeacherFrame(
            depth=depth.astype(np.float32),
            uncertainty=np.where(valid, uncertainty, 0.0).astype(np.float32),
            K_used=K.copy(),
            K_prompt=K.copy(),
        )

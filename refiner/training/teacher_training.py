"""Training of the ``learned`` teacher (:mod:`refiner.teachers.learned`) from nothing, in one command::

    python -m refiner.training.teacher_training --out models/teacher-learned

**Data.** ``scenes`` training scenes and ``val_scenes`` held-out scenes of :mod:`refiner.data.synth` (seeds from
``--seed``, default 7000, checked against every synthetic seed of params.yaml's corpus), each rendered in
memory with all five camera paths at ``views`` instants spread along the path (moving objects move with them),
at 320x256 with a horizontal field of view drawn per scene and path from ``fov_deg``. Frames are independent
samples: the model is single-frame.

**Augmentation** (per training sample, in this order): a random crop of ``crop / zoom`` source pixels, zoom
uniform in ``zoom``, resized to ``crop`` (antialiased bilinear colour, nearest depth, intrinsics moved alike);
a horizontal flip with probability ``flip`` (rays follow); colour x in [0, 1] times exp(N(0, gain_std)) (exposure)
times exp(N(0, white_std)) per channel (white balance), clipped, raised to exp(N(0, gamma_std)) (tone curve);
Gaussian read noise of std uniform in [0, noise_max]; clipped and quantised to 8 bits.

**Loss.** Laplace negative log-likelihood of the log depth, |log D - log G| exp(-s) + s with s the predicted
log-uncertainty (clamped to [-6, 3]), plus ``si_weight`` times the scale-invariant log error
sqrt(mean(e^2) - si_lambda mean(e)^2) per image. AdamW, linear warm-up then cosine decay; one torch seed drives
initialisation, sampling and augmentation, so a run is deterministic on one machine.

**Outputs** (each written to a temporary file, then renamed): ``learned.safetensors`` and ``provenance.json``
(command, settings, seeds, validation figures raw and per-image median-scaled, the Spearman correlation of
uncertainty and relative error, the weights' sha256, wall times, machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from refiner.core.choices import CAMERA_PATHS
from refiner.core.config import load_params
from refiner.core.store import atomic_paths
from refiner.data.synth.raycast import render
from refiner.data.synth.scene import camera_poses, make_scene
from refiner.evaluation.depth_metrics import depth_errors
from refiner.geometry.intrinsics import intrinsics_from_fov
from refiner.teachers.learned import LearnedDepthNet, camera_rays, weights_bytes

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
WEIGHTS_NAME, PROVENANCE_NAME = "learned.safetensors", "provenance.json"
CLIP_FRAMES = 48  # object time spanned by a scene's views, in frames (a corpus clip's length)


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run depends on (recorded in provenance.json)."""

    seed: int = 7000  # first training scene seed; the validation scenes follow the training ones
    scenes: int = 24
    val_scenes: int = 4
    views: int = 8  # frames per scene and camera path
    val_views: int = 4
    height: int = 256
    width: int = 320
    fov_deg: tuple[float, float] = (60.0, 80.0)  # horizontal field of view, drawn per scene and path
    crop: tuple[int, int] = (128, 160)  # training sample size (H, W)
    zoom: tuple[float, float] = (0.5, 1.0)  # a sample covers crop / zoom source pixels
    flip: float = 0.5
    gain_std: float = 0.25
    white_std: float = 0.05
    gamma_std: float = 0.1
    noise_max: float = 0.03
    steps: int = 1600
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    si_weight: float = 0.5
    si_lambda: float = 0.85
    torch_seed: int = 0
    paths: tuple[str, ...] = CAMERA_PATHS

    @property
    def train_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.scenes))

    @property
    def val_seeds(self) -> list[int]:
        return list(range(self.seed + self.scenes, self.seed + self.scenes + self.val_scenes))


@dataclass(frozen=True)
class Frames:
    """Rendered frames: colour (N, H, W, 3) uint8, z-depth (N, H, W) float32 metres, intrinsics (N, 3, 3)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    K: torch.Tensor

    def __len__(self) -> int:
        return int(self.rgb.shape[0])


def check_seeds(seeds: list[int], params: Path = PARAMS) -> None:
    """Refuse scene seeds that a synthetic clip of the corpus (params.yaml) uses."""
    if not params.is_file():
        return
    used = {c.seed for c in load_params(params).corpus.clips.values() if c.kind == "synthetic"}
    if used & set(seeds):
        raise ValueError(f"scene seeds {sorted(used & set(seeds))} are used by the corpus in {params}; pick --seed")


def _views(seed: int, path_index: int, views: int, s: TrainSettings) -> list[tuple]:
    """(scene, pose, K, time) of ``views`` instants of one scene seen along camera path ``path_index``."""
    scene = make_scene(seed, s.paths[path_index])
    fov = np.random.default_rng([seed, path_index, 7]).uniform(*s.fov_deg)
    K = intrinsics_from_fov(s.width, s.height, float(fov))
    poses = camera_poses(scene, views, 1)
    return [(scene, poses[i], K, i * CLIP_FRAMES / views) for i in range(views)]


def render_frames(seeds: list[int], views: int, s: TrainSettings) -> Frames:
    """Every scene of ``seeds`` along every camera path at ``views`` instants, rendered in memory."""
    jobs = [v for seed in seeds for p in range(len(s.paths)) for v in _views(seed, p, views, s)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        out = list(pool.map(lambda j: render(j[0], j[1], j[2], s.height, s.width, j[3]), jobs))
    return Frames(
        torch.from_numpy(np.stack([o[0] for o in out])),
        torch.from_numpy(np.stack([o[1] for o in out])),
        torch.from_numpy(np.stack([j[2] for j in jobs])),
    )


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _crop(frames: Frames, i: int, s: TrainSettings, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A random zoomed crop of frame ``i``, maybe flipped: colour (3, h, w) in [0, 1], depth (h, w), K (3, 3)."""
    (ch, cw), (H, W) = s.crop, frames.depth.shape[1:]
    zoom = _uniform(*s.zoom, gen)
    sh, sw = min(round(ch / zoom), H), min(round(cw / zoom), W)
    y0, x0 = (int(torch.randint(0, n + 1, (), generator=gen)) for n in (H - sh, W - sw))
    rgb = frames.rgb[i, y0 : y0 + sh, x0 : x0 + sw].permute(2, 0, 1)[None].float() / 255
    rgb = F.interpolate(rgb, size=(ch, cw), mode="bilinear", antialias=True, align_corners=False)[0]
    depth = F.interpolate(frames.depth[i, None, None, y0 : y0 + sh, x0 : x0 + sw], size=(ch, cw), mode="nearest-exact")
    K = frames.K[i].clone()
    ax, ay = cw / sw, ch / sh  # continuous coordinate c -> (c + 0.5) * a - 0.5 (pixel centres at integers)
    K[0, 0], K[0, 2] = K[0, 0] * ax, (K[0, 2] - x0 + 0.5) * ax - 0.5
    K[1, 1], K[1, 2] = K[1, 1] * ay, (K[1, 2] - y0 + 0.5) * ay - 0.5
    if float(torch.rand((), generator=gen)) < s.flip:
        rgb, depth, K[0, 2] = rgb.flip(-1), depth.flip(-1), cw - 1 - K[0, 2]
    return rgb, depth[0, 0], K


def photometric(rgb: torch.Tensor, s: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """Exposure gain, white balance, tone curve, read noise and 8-bit quantisation of colour (3, h, w) in [0, 1]."""
    gain = torch.exp(s.gain_std * torch.randn((), generator=gen) + s.white_std * torch.randn(3, 1, 1, generator=gen))
    x = (rgb * gain).clamp(0, 1) ** torch.exp(s.gamma_std * torch.randn((), generator=gen))
    x = x + _uniform(0.0, s.noise_max, gen) * torch.randn(x.shape, generator=gen)
    return (x.clamp(0, 1) * 255).round() / 255


def sample_batch(frames: Frames, s: TrainSettings, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A training batch: colour (B, 3, h, w), rays (B, 2, h, w), depth (B, 1, h, w)."""
    index = torch.randint(0, len(frames), (s.batch,), generator=gen)
    crops = [_crop(frames, int(i), s, gen) for i in index]
    rgb = torch.stack([photometric(c[0], s, gen) for c in crops])
    K = torch.stack([c[2] for c in crops])
    return rgb, camera_rays(K, *s.crop), torch.stack([c[1] for c in crops])[:, None]


def depth_loss(log_depth: torch.Tensor, log_unc: torch.Tensor, gt: torch.Tensor, s: TrainSettings) -> torch.Tensor:
    """Laplace NLL of log depth plus the per-image scale-invariant log error (rendered depth is valid everywhere)."""
    e = log_depth - gt.log()
    u = log_unc.clamp(-6.0, 3.0)
    nll = (e.abs() * torch.exp(-u) + u).mean()
    e = e.flatten(1)
    si = (e.square().mean(1) - s.si_lambda * e.mean(1).square()).clamp_min(1e-8).sqrt().mean()
    return nll + s.si_weight * si


def learning_rate(step: int, s: TrainSettings) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    return 0.5 * s.lr * (1 + math.cos(math.pi * (step - s.warmup) / max(s.steps - s.warmup, 1)))


def fit(frames: Frames, s: TrainSettings, log_every: int = 100) -> tuple[LearnedDepthNet, list[float]]:
    """Train a fresh network on ``frames``; the network (eval mode) and the mean loss of every ``log_every`` steps."""
    torch.manual_seed(s.torch_seed)
    gen = torch.Generator().manual_seed(s.torch_seed)
    net = LearnedDepthNet()
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    losses, history, start = [], [], time.perf_counter()
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, s)
        rgb, rays, gt = sample_batch(frames, s, gen)
        loss = depth_loss(*net(rgb, rays), gt, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == s.steps:
            history.append(float(np.mean(losses)))
            print(f"step {step + 1}/{s.steps}: loss {history[-1]:.4f} ({time.perf_counter() - start:.0f} s)")
            losses = []
    return net.eval(), history


def predict(net: LearnedDepthNet, frames: Frames, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth and uncertainty (N, H, W) of every frame."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            rgb = frames.rgb[i : i + batch].permute(0, 3, 1, 2).float() / 255
            log_depth, log_unc = net(rgb, camera_rays(frames.K[i : i + batch], *rgb.shape[-2:]))
            out.append((log_depth[:, 0].exp(), log_unc[:, 0].exp()))
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two flat tensors (ties broken by order)."""
    ra, rb = (x.argsort().argsort().double() for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def evaluate(net: LearnedDepthNet, frames: Frames) -> dict[str, float]:
    """Mean over frames of AbsRel and δ1, raw and after per-image median scaling, and of the Spearman correlation
    between uncertainty and relative error |D - G| / G."""
    depth, unc = predict(net, frames)
    rows = []
    for d, u, g in zip(depth, unc, frames.depth, strict=True):
        raw, scaled = depth_errors(d, g), depth_errors(d * (g.median() / d.median()), g)
        rho = spearman(u.flatten(), ((d - g).abs() / g).flatten())
        rows.append([raw["absrel"], raw["d1"], scaled["absrel"], scaled["d1"], rho])
    keys = ("absrel", "d1", "absrel_median_scaled", "d1_median_scaled", "uncertainty_spearman")
    return dict(zip(keys, np.mean(rows, axis=0).round(4).tolist(), strict=True))


def machine() -> dict[str, Any]:
    """Where the run happened (determinism holds on one machine)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def train_learned(s: TrainSettings, out: Path, command: str) -> dict[str, Any]:
    """Render, train, validate; write the weights and provenance.json into ``out``; the provenance."""
    check_seeds(s.train_seeds + s.val_seeds)
    t0 = time.perf_counter()
    train, val = render_frames(s.train_seeds, s.views, s), render_frames(s.val_seeds, s.val_views, s)
    t_render = time.perf_counter() - t0
    net, history = fit(train, s)
    t_train = time.perf_counter() - t0 - t_render
    figures = evaluate(net, val)
    wall = {"render": round(t_render, 1), "train": round(t_train, 1), "total": round(time.perf_counter() - t0, 1)}
    data = weights_bytes(net, {"command": command})
    provenance = {
        "command": command,
        "settings": dataclasses.asdict(s),
        "train_seeds": s.train_seeds,
        "val_seeds": s.val_seeds,
        "frames": {"train": len(train), "val": len(val)},
        "val": figures,
        "loss_history": [round(x, 4) for x in history],
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "weights_bytes": len(data),
        "wall_s": wall,
        "machine": machine(),
    }
    with atomic_paths(out / WEIGHTS_NAME, out / PROVENANCE_NAME) as (tmp_weights, tmp_provenance):
        tmp_weights.write_bytes(data)
        tmp_provenance.write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return provenance


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m refiner.training.teacher_training --out models/teacher-learned``."""
    ap = argparse.ArgumentParser(description="Train the learned teacher's weights from nothing (rendered scenes).")
    ap.add_argument("--out", type=Path, default=Path("models/teacher-learned"))
    ap.add_argument("--seed", type=int, default=TrainSettings.seed, help="first scene seed (not one of the corpus)")
    ap.add_argument("--scenes", type=int, default=TrainSettings.scenes)
    ap.add_argument("--val-scenes", type=int, default=TrainSettings.val_scenes)
    ap.add_argument("--steps", type=int, default=TrainSettings.steps)
    a = ap.parse_args(argv)
    s = TrainSettings(seed=a.seed, scenes=a.scenes, val_scenes=a.val_scenes, steps=a.steps)
    command = " ".join(["python -m refiner.training.teacher_training", *(sys.argv[1:] if argv is None else argv)])
    p = train_learned(s, a.out, command)
    size, wall = p["weights_bytes"] / 1e6, p["wall_s"]["total"]
    print(f"wrote {a.out / WEIGHTS_NAME} ({size:.2f} MB) in {wall:.0f} s; validation: {p['val']}")


if __name__ == "__main__":
    main()

"""GT-free adaptation: fine-tune a trained refiner on clips that have only teacher outputs.

The losses that need no ground truth (:mod:`refiner.training.losses`: teacher-anchored, temporal, residual, variance)
train a copy of the refiner on random windows of the given clips, as training does (carried prefix, crops,
reversal, teacher jitter; the teacher under the inference noise ceiling, as the model will see it) but with every
GT read switched off: no GT supervision, no re-simulated teacher, and the static mask of the temporal loss from
the colour gate, never from a rendered moving-object mask. The model
passed in is never changed; the adapted copy is the EMA of the weights after ``steps`` steps (nothing to choose a
checkpoint on without GT). Time and memory are those of that many training steps at ``adapt.crop``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from refiner.core.config import AdaptParams, Params
from refiner.core.store import atomic_path
from refiner.data.clip import Clip, open_clip
from refiner.data.dataset import Augment, RandomWindows
from refiner.evaluation.baselines import ADAPTED_STORE
from refiner.inference.infer import refine_clip
from refiner.inference.noise_ceiling import below_ceiling
from refiner.training.checkpoint import load_refiner
from refiner.training.losses import compute_losses
from refiner.training.train import carried_window, lr_at, make_optimizer


def adapt_crop(clips: list[Clip], crop: int) -> int:
    """``crop``, shrunk to the smallest clip's short side (a multiple of the low-res factor)."""
    f = clips[0].factor
    return min(crop, *((min(c.height, c.width) // f) * f for c in clips))


def adaptation_windows(clips: list[Clip], params: Params, steps: int) -> RandomWindows:
    """Random windows over ``clips`` that never read GT (see the module docstring)."""
    tp, ap, win = params.train, params.adapt, params.windows
    augment = Augment(
        crop=adapt_crop(clips, ap.crop),
        reverse_prob=tp.reverse_prob,
        jitter_prob=tp.jitter_prob,
        jitter_scale=tp.jitter_scale,
        jitter_noise_rel=tp.jitter_noise_rel,
        gt_free=True,
    )
    length = win.length + (win.length - win.overlap if params.model.carry_state else 0)
    return RandomWindows(clips, length, win.keyframes, augment, steps * ap.batch_size, ap.seed)


def adapt(model: torch.nn.Module, clips: list[Clip], params: Params, steps: int, progress: bool = True):
    """(a GT-free fine-tuned copy of ``model`` on ``clips``, a summary); ``model`` itself is left as it was."""
    ap: AdaptParams = params.adapt
    torch.manual_seed(ap.seed)
    net = copy.deepcopy(model).train().requires_grad_(True)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = make_optimizer(net, params.train.replace(lr=ap.lr))
    loader = DataLoader(adaptation_windows(clips, params, steps), ap.batch_size)
    first, last, start = math.nan, math.nan, time.perf_counter()
    for step, batch in enumerate(tqdm(loader, desc="adapt (GT-free)", disable=not progress)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, min(10, steps // 10), ap.lr)
        batch["depth"] = below_ceiling(batch["depth"], params.infer.noise_ceiling)  # the view inference gives it
        window, state = carried_window(net, batch, params.windows.length)
        out = net(window["depth"], window["conf"], window["rgb"], window["keyframes"], state=state)
        losses = compute_losses(out.depth, out.delta_full, window, params.loss, net.factor, ap.anchor_still)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), params.train.grad_clip or math.inf)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - params.train.ema_decay)
        last = float(losses["total"].detach())
        first = last if step == 0 else first
    summary = {"steps": steps, "clips": [c.teacher_path for c in clips], "loss_first": first, "loss_last": last}
    return ema, {**summary, "seconds": round(time.perf_counter() - start, 2), "gt_read": False}


def adapt_and_refine(name: str, manifest: str, model_path: str, out: Path, params: Params) -> dict:
    """The adapt step for one listed test clip: adapt a copy of the model on the clip, refine the clip with it into
    ``out`` / :data:`~refiner.evaluation.baselines.ADAPTED_STORE`; returns the adaptation summary and the clamp hit
    rate. Quiet: the test stage runs several clips at once and shows its own progress."""
    clip, _ = open_clip(manifest, name)
    model, _ = load_refiner(model_path)
    adapted, summary = adapt(model, [clip], params, params.adapt.steps, progress=False)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        stats = refine_clip(adapted, clip, tmp / ADAPTED_STORE, params.windows, params.infer, progress=False)
    return {**summary, "clips": [name], "clamp_hit_rate": stats["clamp_hit_rate"]}

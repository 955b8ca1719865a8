"""The training loop: AdamW (weight decay on matrices only), warm-up + cosine schedule, grad clipping,
AMP, an EMA of the weights, checkpoint choice on the VAL split by static flicker with a do-no-harm guard,
dvclive logging, and resume after interruption.

Data: random windows over the TRAIN clips of the manifest; validation: every window of the VAL clips.
Test clips are never read here. Runs as one process or under ``torchrun --nproc_per_node K``
(DistributedDataParallel; gloo on CPU, nccl on GPU). The file runs top to bottom as: set-up, optimiser and
schedule, the carried window, validation, data, model, one step, the loop (:func:`train`), checkpoints. The
resumable state lives outside the stage's outputs (``state_dir``); the model file is written once, at the end,
from the best weights (so an interrupted run never leaves a worse one).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from dvclive import Live
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from refiner.core.config import Params, TrainParams
from refiner.data.clip import Clip, ClipPool, LazyClip
from refiner.data.dataset import Augment, ClipWindows, RandomWindows
from refiner.data.frame_cache import FrameCache
from refiner.data.manifest import load_split
from refiner.evaluation.depth_metrics import flicker
from refiner.model.refiner import Refiner
from refiner.training.checkpoint import load_refiner, load_training_state, save_refiner, save_training_state
from refiner.training.losses import compute_losses


def _setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def lr_at(step: int, steps: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def make_optimizer(model: torch.nn.Module, tp: TrainParams) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, multi-tensor (one op per update kind, not one per parameter)."""
    return torch.optim.AdamW(param_groups(model, tp.weight_decay), lr=tp.lr, foreach=True)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and conv kernels only: not on norms, biases, or parameters tagged
    ``_no_weight_decay`` (Mamba's A_log and D, as mamba_ssm tags them)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# batch keys with a time axis
TIMED = ("depth", "teacher", "conf", "rgb", "gt", "static", "K", "poses", "edges", "keyframes")


def carried_window(model: torch.nn.Module, batch: dict[str, torch.Tensor], length: int):
    """For windows read with a prefix of ``stride`` extra frames: run the first ``length`` frames without
    gradients to get the state the scan carries into the next window (as inference does), and return
    (the last ``length`` frames as the batch, that state). Without a prefix: (batch, None)."""
    stride = batch["depth"].shape[1] - length
    if stride <= 0:
        return batch, None
    with torch.no_grad():
        prev = {k: v[:, :length] for k, v in batch.items() if k in TIMED}
        state = model.carried_state(prev["depth"], prev["conf"], prev["rgb"], prev["keyframes"], stride - 1)
    window = {k: (v[:, stride:] if k in TIMED else v) for k, v in batch.items()}
    window["keyframes"] = batch["keyframes"][:, :length]
    return window, state


def run_fingerprint(params: Params, clips: list[dict]) -> str:
    """Identifies a training run for resuming: every section it depends on except ``train.steps`` (so a run
    can be extended) and the loader's speed settings, and the content digests of the train and val clips."""
    sections = {k: getattr(params, k).model_dump() for k in ("windows", "loss", "train", "model")}
    for key in ("steps", "num_workers", "frame_cache_mb"):  # how long and how fast, not what is learned
        sections["train"].pop(key)
    sections["clips"] = [c["digest"] for c in clips]
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters, to check that ranks hold identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def validate(model: torch.nn.Module, val: list[ClipWindows], device: torch.device) -> dict:
    """Val-split figures, windows run in order as inference runs them (state carried when the model carries it):
    static flicker (:func:`refiner.evaluation.depth_metrics.flicker`, std / median over each window's static pixels) of
    teacher
    and refined depth, AbsRel of each against GT, mean |ΔD|/D; means over windows."""
    rows, carry = [], bool(model.p.carry_state)
    for windows in val:
        state = None
        for k in range(len(windows)):
            batch = _to({key: v[None] for key, v in windows[k].items()}, device)
            nxt = windows.starts[k + 1] - windows.starts[k] - 1 if carry and k + 1 < len(windows) else None
            out = model(batch["depth"], batch["conf"], batch["rgb"], batch["keyframes"], state=state, state_index=nxt)
            state = out.state
            rows.append(_val_row(out.depth.float()[0, :, 0], batch))
    out = {
        k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else math.nan
        for k in rows[0]
    }
    if not np.isfinite(out["flicker_teacher"]):
        print("warning: the val clips have no still-camera static pixels: checkpoints are chosen by AbsRel")
    return out


def _val_row(refined: torch.Tensor, batch: dict) -> dict:
    teacher, gt = batch["teacher"][0, :, 0], batch["gt"][0, :, 0]
    static = (batch["static"][0, :, 0] & (teacher > 0)).all(0)
    row = {"rel_delta": float(((refined - teacher).abs() / teacher.clamp_min(1e-6))[teacher > 0].mean())}
    for name, d in (("teacher", teacher), ("refined", refined)):
        row[f"flicker_{name}"] = flicker(d, static)["std_rel"] if static.sum() > 0 else math.nan
        row[f"absrel_{name}"] = float(((d - gt).abs() / gt)[gt > 0].mean()) if (gt > 0).any() else math.nan
    return row


def _score(v: dict, guard: float) -> float:
    """Lower is better: refined flicker (AbsRel without flicker), +inf when AbsRel exceeds the teacher's by > guard."""
    if np.isfinite(v["absrel_refined"]) and v["absrel_refined"] > v["absrel_teacher"] * (1 + guard):
        return math.inf
    return v["flicker_refined"] if np.isfinite(v["flicker_refined"]) else v["absrel_refined"]


def _data(params: Params, manifest: str | Path, world: int, rank: int):
    """(train dataset, its loader, val windows per clip, train+val manifest entries, low-res factor)."""
    tp, win = params.train, params.windows
    train_entries, val_entries = load_split(manifest, "train"), load_split(manifest, "val")

    cache = FrameCache(tp.frame_cache_mb << 20) if tp.frame_cache_mb else None  # training revisits every frame

    def clip(e: dict) -> Clip:
        return Clip(e["decoded"], e["teacher"], e["calibration"], e["guidance"], cache)

    augment = Augment(
        crop=tp.crop,
        reverse_prob=tp.reverse_prob,
        jitter_prob=tp.jitter_prob,
        jitter_scale=tp.jitter_scale,
        jitter_noise_rel=tp.jitter_noise_rel,
        gt_fraction=tp.gt_fraction,
        resim=None if tp.resim_profile is None else params.teacher.resolve(tp.resim_profile),
        resim_prob=tp.resim_prob,
        resim_gt_fraction=tp.resim_gt_fraction,
        conf_gamma=tp.conf_gamma,
    )
    pool = ClipPool(cache=cache)  # hundreds of train clips: a bounded number open at once, none per window
    train_clips = [LazyClip(e, pool) for e in train_entries]
    length = win.length + (win.length - win.overlap if params.model.carry_state else 0)  # + the carried prefix
    train_set = RandomWindows(
        train_clips, length, win.keyframes, augment, tp.eval_every * tp.batch_size * world, tp.seed
    )
    sampler = DistributedSampler(train_set, world, rank, shuffle=False) if world > 1 else None
    loader = DataLoader(train_set, tp.batch_size, sampler=sampler, num_workers=tp.num_workers)
    val = [ClipWindows(clip(e), win.length, win.keyframes, win.overlap, use_gt=True) for e in val_entries]
    factors = {c.factor for c in train_clips}
    if len(factors) != 1:
        raise ValueError(f"train clips were cached with different low-res factors {factors}; re-run their teachers")
    return train_set, loader, val, train_entries + val_entries, factors.pop()


def _init_model(params: Params, factor: int, device: torch.device) -> Refiner:
    """A fresh refiner, or ``train.init`` (pretrained weights of the same architecture) when set."""
    if params.train.init is None:
        return Refiner(params.model, factor).to(device)
    model, meta = load_refiner(params.train.init, device)
    if meta["model_params"] != params.model or meta["low_res_factor"] != factor:
        raise ValueError(
            f"train.init {params.train.init} was trained with other model params or low-res factor "
            f"({meta['low_res_factor']}); set train.init: null or match params.yaml model: to it"
        )
    return model.train()


def _step(run: _Run, batch, params: Params, factor: int, step: int, device) -> dict:
    """One optimisation step; returns the log row."""
    model, ema, opt, scaler = run.model, run.ema, run.opt, run.scaler
    tp = params.train
    for g in opt.param_groups:
        g["lr"] = lr_at(step, tp.steps, tp.warmup_steps, tp.lr)
    with _autocast(device, tp.amp):
        batch, state = carried_window(model, batch, params.windows.length)
        out = run.net(batch["depth"], batch["conf"], batch["rgb"], batch["keyframes"], state=state)
    losses = compute_losses(out.depth.float(), out.delta_full.float(), batch, params.loss, factor)
    opt.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    scaler.unscale_(opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip or math.inf)
    scaler.step(opt)
    scaler.update()
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - tp.ema_decay)
    row = {f"loss_{k}": float(v.detach()) for k, v in losses.items()}
    row.update(out.stats(batch["teacher"]), grad_norm=float(grad_norm), lr=opt.param_groups[0]["lr"])
    return row


@dataclass
class _Run:
    """The objects of one training run, and where its resumable state goes."""

    model: torch.nn.Module
    ema: torch.nn.Module
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state_path: Path
    fingerprint: str


def _start(params: Params, factor: int, device, world: int, state_dir, entries) -> tuple[_Run, int, dict | None]:
    """A new run, or the interrupted one resumed: (run, step, best so far or None)."""
    tp = params.train
    model = _init_model(params, factor, device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = DistributedDataParallel(model) if world > 1 else model
    opt = make_optimizer(model, tp)
    scaler = torch.amp.GradScaler(device.type, enabled=tp.amp == "fp16")
    run = _Run(model, ema, net, opt, scaler, Path(state_dir) / "last.pt", run_fingerprint(params, entries))
    resumed = None
    if run.state_path.is_file():
        resumed = load_training_state(run.state_path, run.fingerprint, tp.steps, model, ema, opt, scaler)
    return (run, *resumed) if resumed is not None else (run, 0, None)


def train(
    params: Params,
    manifest: str | Path,
    model_out: str | Path,
    state_dir: str | Path,
    reports_dir: str | Path,
    progress: bool = True,
) -> dict:
    """Train the refiner on the manifest's train split, choose on its val split; returns the summary metrics."""
    tp = params.train
    rank, world, device = _setup_distributed()
    torch.manual_seed(tp.seed)
    train_set, loader, val, entries, factor = _data(params, manifest, world, rank)
    run, step, best = _start(params, factor, device, world, state_dir, entries)
    if best is not None and rank == 0:
        print(f"resuming from {run.state_path} at step {step}", flush=True)
    if best is None:  # the untrained refiner returns the teacher: the do-no-harm fallback if no step beats it
        v = validate(run.ema, val, device)
        best = {"score": _score(v, tp.guard_absrel), "step": 0, "weights": copy.deepcopy(run.ema.state_dict()), **v}
    live = (
        Live(str(reports_dir), resume=_log_resumable(reports_dir, step), save_dvc_exp=False, dvcyaml=None)
        if rank == 0
        else None
    )
    bar = tqdm(total=tp.steps, initial=step, desc="train", disable=not progress or rank != 0)
    while step < tp.steps:
        train_set.set_epoch(step // tp.eval_every)
        for batch in loader:
            if step >= tp.steps:
                break
            row = _step(run, _to(batch, device), params, factor, step, device)
            step += 1
            bar.update(1)
            best = _log_and_checkpoint(run, row, step, best, val, device, live, bar, tp, rank)
    bar.close()
    result = {"digest": weights_digest(run.model), "rank": rank, "world": world}
    if rank == 0:
        run.ema.load_state_dict(best.pop("weights"))
        save_refiner(model_out, run.ema, params.model, factor, {"step": best["step"]})
        result.update(_summary(live, best))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _log_resumable(reports_dir: str | Path, step: int) -> bool:
    """Continue dvclive's log only when resuming and its summary is intact (a kill can cut dvclive's
    non-atomic write short); otherwise start the log afresh."""
    try:
        return step > 0 and isinstance(json.loads((Path(reports_dir) / "metrics.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def _log_and_checkpoint(run: _Run, row: dict, step: int, best: dict, val, device, live, bar, tp, rank: int) -> dict:
    """Log the step; every ``eval_every`` steps validate, keep the best and save the resumable state."""
    if live is not None:
        for k, value in row.items():
            live.log_metric(f"train/{k}", value)
    if step % tp.eval_every == 0 or step == tp.steps:
        best = _checkpoint(run.ema, val, device, best, step, live, bar, tp.guard_absrel)
        if rank == 0:
            save_training_state(run.state_path, run.fingerprint, step, best, run.model, run.ema, run.opt, run.scaler)
    if live is not None:
        live.next_step()
    return best


def _checkpoint(ema, val, device, best: dict, step: int, live, bar, guard: float) -> dict:
    """Validate the EMA weights; keep them as the best when their score is lower."""
    v = validate(ema, val, device)
    if live is not None:
        for k, value in v.items():
            live.log_metric(f"val/{k}", value)
    bar.set_postfix(flicker=f"{v['flicker_refined']:.4f}/{v['flicker_teacher']:.4f}")
    score = _score(v, guard)
    if score < best["score"]:
        return {"score": score, "step": step, "weights": copy.deepcopy(ema.state_dict()), **v}
    return best


def _summary(live: Live, best: dict) -> dict:
    """The best checkpoint's val figures into dvclive's summary (reports/train/metrics.json)."""
    summary = {"best_step": best["step"], **{f"best_val_{k}": v for k, v in best.items() if k not in ("step", "score")}}
    live.summary.update(summary)
    live.end()
    return summary

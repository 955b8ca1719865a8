"""The training loop: AdamW, warm-up + cosine schedule, grad clipping, AMP, an EMA of the weights,
checkpoint selection by held-out flicker with a do-no-harm guard, and resume after interruption.

Runs as one process or under ``torchrun --nproc_per_node K`` (DistributedDataParallel; gloo on CPU,
nccl on GPU). Read top to bottom: data, model, optimiser, loop, validation, checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from refiner.checkpoint import load_training_state, save_refiner, save_training_state
from refiner.config import Params
from refiner.dataset import Augment, ClipWindows, run_refiner
from refiner.losses import compute_losses
from refiner.model import Refiner
from refiner.store import open_group, write_csv, write_json


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


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_fingerprint(params: Params, teacher: str | Path) -> str:
    """Identifies a training run for resuming: every section it depends on except ``train.steps`` (so a run
    can be extended), and the teacher cache's first and last frames."""
    sections = {k: asdict(getattr(params, k)) for k in ("windows", "loss", "train", "model")}
    sections["train"].pop("steps")
    h = hashlib.sha256(json.dumps(sections, sort_keys=True).encode())
    depth = open_group(teacher)["depth"]
    for t in (0, depth.shape[0] - 1):
        h.update(np.ascontiguousarray(depth[t]).tobytes())
    return h.hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters, to check that ranks hold identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, mapping: torch.Tensor, device: torch.device) -> dict:
    """Held-out figures: relative flicker (temporal std / mean of depth on static pixels) of teacher and
    refined depth, AbsRel of each against GT where present, and mean |ΔD|/D."""
    sums = {"flicker_teacher": 0.0, "flicker_refined": 0.0, "absrel_teacher": 0.0, "absrel_refined": 0.0}
    n_flicker = n_gt = 0
    rel_delta = []
    for batch in loader:
        batch = _to(batch, device)
        out = run_refiner(model, batch, mapping)
        teacher, refined = batch["teacher_full"], out.depth.float()
        static = (batch["static"] & (teacher > 0)).all(1, keepdim=True)  # static through the window
        for name, d in (("teacher", teacher), ("refined", refined)):
            rel_std = d.std(1, keepdim=True) / d.mean(1, keepdim=True).clamp_min(1e-6)
            sums[f"flicker_{name}"] += float(rel_std[static].mean()) if static.any() else 0.0
            gt = batch["gt"]
            valid = gt > 0
            if valid.any():
                sums[f"absrel_{name}"] += float(((d - gt).abs() / gt)[valid].mean())
        n_flicker += 1
        n_gt += int((batch["gt"] > 0).any())
        rel_delta.append(float(((refined - teacher).abs() / teacher.clamp_min(1e-6))[teacher > 0].mean()))
    out = {k: v / max(1, n_gt if k.startswith("absrel") else n_flicker) for k, v in sums.items()}
    out["mean_rel_delta"] = float(np.mean(rel_delta))
    out["has_gt"] = n_gt > 0
    return out


def _score(v: dict, guard: float) -> float:
    """Lower is better: refined flicker, or +inf when it harms per-frame accuracy by more than ``guard``."""
    if v["has_gt"] and v["absrel_refined"] > v["absrel_teacher"] * (1 + guard):
        return math.inf
    return v["flicker_refined"]


def train(params: Params, decoded: str, teacher: str, out_dir: str, reports_dir: str, progress: bool = True) -> dict:
    """Train the refiner; writes the chosen weights to ``out_dir`` and logs to ``reports_dir``; returns metrics."""
    tp = params.train
    rank, world, device = _setup_distributed()
    torch.manual_seed(tp.seed)
    out_dir, reports_dir = Path(out_dir), Path(reports_dir)
    state_path = out_dir / "state" / "last.pt"

    # data: training windows after the held-out frames, validation windows on them
    total = open_group(decoded, ("rgb",), "decoded clip store")["rgb"].shape[0]
    holdout = min(tp.holdout_frames, total - 2)
    win = params.windows
    augment = Augment(
        crop=tp.crop,
        reverse_prob=tp.reverse_prob,
        jitter_prob=tp.jitter_prob,
        jitter_scale=tp.jitter_scale,
        jitter_noise_rel=tp.jitter_noise_rel,
        gt_fraction=tp.gt_fraction,
    )
    per_epoch = tp.eval_every * tp.batch_size * world
    train_set = ClipWindows(decoded, teacher, win.length, win.keyframes, (holdout, total), augment, per_epoch, tp.seed)
    val_set = ClipWindows(decoded, teacher, win.length, win.keyframes, (0, max(holdout, 2)), Augment(gt_fraction=1.0))
    sampler = DistributedSampler(train_set, world, rank, shuffle=False) if world > 1 else None
    loader = DataLoader(train_set, tp.batch_size, sampler=sampler, num_workers=tp.num_workers)
    val_loader = DataLoader(val_set, 1)
    mapping = torch.as_tensor(open_group(teacher)["low_mapping"][...])

    # model, EMA copy, optimiser
    model = Refiner(params.model).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=tp.amp == "fp16")
    step, best, log = 0, {}, []
    fingerprint, resumed = run_fingerprint(params, teacher), None
    if state_path.is_file():
        resumed = load_training_state(state_path, fingerprint, tp.steps, model, ema, opt, scaler)
    if resumed is not None:
        step, best, log = resumed
        if rank == 0:
            print(f"resuming from {state_path} at step {step}")

    factor = int(mapping[0])
    if step == 0:  # the untrained refiner returns the teacher: the do-no-harm fallback if no step beats it
        v = validate(ema, val_loader, mapping, device)
        best = {"score": _score(v, tp.guard_absrel), "step": 0, **v}
        if rank == 0:
            save_refiner(out_dir / "model.safetensors", ema, params.model, mapping, {"step": 0})
    bar = tqdm(total=tp.steps, initial=step, desc="train", disable=not progress or rank != 0)
    while step < tp.steps:
        epoch = step // tp.eval_every
        train_set.set_epoch(epoch)
        for batch in loader:
            if step >= tp.steps:
                break
            batch = _to(batch, device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tp.steps, tp.warmup_steps, tp.lr)
            with _autocast(device, tp.amp):
                out = run_refiner(net, batch, mapping)
            losses = compute_losses(out.depth.float(), out.delta_full.float(), batch, params.loss, factor)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip or math.inf)
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - tp.ema_decay)
                for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
                    be.copy_(bm)
            step += 1
            bar.update(1)
            log.append(_log_row(step, losses, out, batch, grad_norm, opt.param_groups[0]["lr"]))
            if step % tp.eval_every == 0 or step == tp.steps:
                v = validate(ema, val_loader, mapping, device)
                score = _score(v, tp.guard_absrel)
                if rank == 0:
                    bar.set_postfix(flicker=f"{v['flicker_refined']:.4f}/{v['flicker_teacher']:.4f}")
                    if score < best["score"]:
                        best = {"score": score, "step": step, **v}
                        save_refiner(out_dir / "model.safetensors", ema, params.model, mapping, {"step": step})
                    save_training_state(state_path, fingerprint, step, best, log, model, ema, opt, scaler)
    bar.close()
    result = {"digest": weights_digest(model), "rank": rank, "world": world}
    if rank == 0:
        result.update(_write_reports(reports_dir, best, log, params))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _log_row(step, losses, out, batch, grad_norm, lr) -> dict:
    delta = out.delta_full.detach().float()
    teacher = batch["teacher_full"]
    rel = (delta.abs() / teacher.clamp_min(1e-6))[teacher > 0]
    conf = batch["conf_full"][teacher > 0]
    a, b = rel.flatten(), (1 - conf).flatten()
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    row = {f"loss_{k}": float(v.detach()) for k, v in losses.items()}
    row.update(
        step=step,
        lr=lr,
        grad_norm=float(grad_norm),
        temp_to_close=float(losses["temp"].detach()) / max(float(losses["close"].detach()), 1e-12),
        mean_abs_delta_m=float(delta.abs().mean()),
        frac_small_delta=float((rel < 0.01).float().mean()),
        clamp_hit_rate=float(out.clamp_hit_rate),
        corr_delta_uncertainty=corr,
    )
    return row


def _write_reports(reports_dir: Path, best: dict, log: list[dict], params: Params) -> dict:
    """reports/train/metrics.json (DVC metrics) and log.csv (DVC plots)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    last = log[-1] if log else {}
    metrics = {
        "best_step": best["step"],
        "val_flicker_teacher": best.get("flicker_teacher"),
        "val_flicker_refined": best.get("flicker_refined"),
        "val_absrel_teacher": best.get("absrel_teacher"),
        "val_absrel_refined": best.get("absrel_refined"),
        "val_mean_rel_delta": best.get("mean_rel_delta"),
        "final_loss_total": last.get("loss_total"),
        "final_clamp_hit_rate": last.get("clamp_hit_rate"),
        "final_corr_delta_uncertainty": last.get("corr_delta_uncertainty"),
    }
    write_json(reports_dir / "metrics.json", metrics)
    if log:
        write_csv(reports_dir / "log.csv", log)
    return metrics

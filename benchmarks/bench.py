"""On-demand benchmarks (not part of the test suite): ``python benchmarks/bench.py [--only NAME ...]``.

Every figure is printed next to a baseline measured in the same run, as a ratio, so numbers from
different machines compare by their ratios:

- decode: mp4 → canonical Zarr store, frames/s, vs reading the same frames with PyAV only;
- cache: teacher-cache write/read MB/s and compression ratio, vs raw float32 ``.npy``;
- scan: the selective scan at the refiner's shape (130² sequences for 518²/4, L = 12, d_inner 64, n 8), ms per
  window, frames/s and peak memory, vs the public reference scan (``refiner.model.ops.scan.selective_scan_ref``);
- refiner: model frames/s at 516² (518 rounded down to the low-res factor) full res on a rendered window with its
  RGB (as inference runs it), vs the EMA baseline filter on the same frames, vs the same model with a frozen copy
  of the Mamba block's old forward, and vs the same with the temporal blend's old forward too;
- gpu (CUDA only; skipped elsewhere): the refiner's ms/frame at 516² in float32 and under bf16 autocast, with the
  pure-PyTorch scan and with mamba_ssm's kernels where they import, vs the float32 pure-PyTorch run;
- breakdown: time per part of the refiner forward (encoder, to_ssm, temporal and its scan, from_ssm, decoder, the
  model's other top-level modules, upsampling, the rest) at 516² and 516×924 (16:9);
- train_step: the trainer's step (data loader, carried prefix, forward, losses, backward, AdamW, EMA) at
  params.yaml's batch and crop, vs the same step with baseline code paths swapped in through public names (the
  reference scan, the blend of commit cd49fa4, no frame cache);
- infer: windowed inference with blending, frames/s, vs the bare model forward on the same windows, and with
  ``refiner-video --fast``'s window overlap;
- memory: peak resident-memory growth of infer and of evaluate on a 640-frame clip vs a 64-frame one, each in a
  fresh process (flat: both are bounded by a window or a span, and the still segment is 16 frames in both);
- repro: full ``dvc repro`` of the embedded default in a scratch copy, vs the no-op repro after it;
- test_stage: the test stage's work on the built workspace's test split (``refiner.inference.heldout_shard``) in
  ``test.workers`` processes vs in one (both into fresh folders; needs ``dvc repro`` first);
- prepare, prepare_default: clip preparation on Ray (``benchmarks/bench_prepare.py``): the overhead per clip at 500
  tiny clips vs the former per-clip stages, no-op and one-changed-clip repros, a killed worker; the default corpus
  built fresh by the former per-clip stages and by this tree, alternately.
- video: ``refiner-video`` on a rendered 640x360 clip of 48 frames with npy + png16 exports, end to end with the
  teacher cached (the command's own clock: model, cache lookup, cut detection, refining and every writer; and the
  whole process, interpreter start and imports included) vs the refine step alone (the same frames computed and
  thrown away); the longest stretch without progress output in a first run (decode and teacher
  included); the refine step with two busy competing processes vs quiet, at 1 and 2 torch threads;
- video_memory: peak RSS of a whole ``refiner-video`` run with every writer and the stereo video at 2000 vs 200
  frames (72x128 frames, as a 2000-frame 640x360 run takes about an hour on 2 cores), each in a fresh process.

Results are also written to ``reports/bench.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import inspect
import itertools
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import refiner.model.blend as blend_mod  # noqa: E402
import refiner.model.mamba as mamba_mod  # noqa: E402
import refiner.model.refiner as refiner_mod  # noqa: E402
import refiner.training.train as train_mod  # noqa: E402
from benchmarks.bench_prepare import bench_prepare, bench_prepare_default, scratch_repo  # noqa: E402
from refiner.app import FAST_OVERLAP  # noqa: E402
from refiner.core.config import ModelParams, load_params  # noqa: E402
from refiner.core.store import create_group, frames_array, open_group  # noqa: E402
from refiner.core.video import decode_frames  # noqa: E402
from refiner.data.clip import Clip  # noqa: E402
from refiner.data.dataset import Augment, RandomWindows  # noqa: E402
from refiner.data.frame_cache import FrameCache  # noqa: E402
from refiner.data.ingest import ingest_video  # noqa: E402
from refiner.data.manifest import calibration_for, load_split  # noqa: E402
from refiner.data.synth.clips import render_clip, write_clip  # noqa: E402
from refiner.data.windows import window_starts  # noqa: E402
from refiner.evaluation.baselines import ema  # noqa: E402
from refiner.evaluation.evaluate import evaluate_clip  # noqa: E402
from refiner.geometry.lowres_map import low_mapping  # noqa: E402
from refiner.geometry.lowres_sampling import downsample  # noqa: E402
from refiner.inference.heldout_shard import ShardFolders, run_shard  # noqa: E402
from refiner.inference.infer import Refinement, refine_clip  # noqa: E402
from refiner.model.ops.scan import selective_scan, selective_scan_ref  # noqa: E402
from refiner.model.refiner import Refiner  # noqa: E402
from refiner.teachers.cache import write_teacher_store  # noqa: E402
from refiner.training.checkpoint import load_refiner  # noqa: E402


def _timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _clip(root: Path, frames: int, size: int, static_frames: int | None = None) -> Clip:
    """A rendered clip decoded into a store and run through the simulated teacher (the pipeline's own code)."""
    clip = render_clip(frames, size, size, 70.0, 0.063, static_frames or frames // 3, seed=0)
    write_clip(clip, root / "synth", fps=24, crf=12, baseline_m=0.063)
    decoded, teacher = root / "decoded.zarr", root / "teacher.zarr"
    ingest_video(
        root / "synth/clip.mp4", root / "synth/camera.json", decoded, size, gt=root / "synth/gt.zarr", progress=False
    )
    write_teacher_store(decoded, teacher, load_params(ROOT / "params.yaml").teacher, "bench", progress=False)
    return Clip(decoded, teacher, None)


def bench_decode(tmp: Path) -> dict:
    clip = render_clip(48, 320, 256, 70.0, 0.063, 16, seed=0)
    write_clip(clip, tmp / "synth", fps=24, crf=12, baseline_m=0.063)
    video = tmp / "synth/clip.mp4"
    t_av = _timed(lambda: sum(1 for _ in decode_frames(video)), 2)
    t_ingest = _timed(lambda: ingest_video(video, tmp / "synth/camera.json", tmp / "d.zarr", 256, progress=False), 2)
    return {"frames": 48, "fps_decode_to_store": 48 / t_ingest, "fps_pyav_only": 48 / t_av, "ratio": t_av / t_ingest}


def bench_cache(tmp: Path) -> dict:
    clip = render_clip(32, 256, 256, 70.0, 0.063, 10, seed=0)
    depth = clip.depth.astype(np.float32)
    mb = depth.nbytes / 2**20

    def write_zarr() -> None:
        frames_array(create_group(tmp / "c.zarr"), "depth", depth.shape, np.float32)[...] = depth

    t_zw = _timed(write_zarr, 2)
    t_zr = _timed(lambda: open_group(tmp / "c.zarr")["depth"][...], 3)
    t_nw = _timed(lambda: np.save(tmp / "c.npy", depth), 2)
    t_nr = _timed(lambda: np.load(tmp / "c.npy"), 3)
    stored = sum(p.stat().st_size for p in (tmp / "c.zarr").rglob("*") if p.is_file())
    return {
        "zarr_write_mb_s": mb / t_zw,
        "zarr_read_mb_s": mb / t_zr,
        "npy_write_mb_s": mb / t_nw,
        "npy_read_mb_s": mb / t_nr,
        "compression_ratio_vs_raw_f32": depth.nbytes / stored,
        "write_ratio": t_nw / t_zw,
        "read_ratio": t_nr / t_zr,
    }


# --- scan and refiner -------------------------------------------------------------------------------------------

SCAN_SHAPE = (130 * 130, 12, 64, 8)  # sequences (518² / 4), frames, d_inner, d_state
REFINER_WINDOW = (12, 518 // 4 * 4, 4)  # frames, side (516²: 518 rounded down to the factor), low-res factor


def _scan_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Scan inputs at the refiner's shape, laid out as ``Mamba`` passes them ([b, d, L] views of [b, L, d])."""
    s, length, d, n = SCAN_SHAPE
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s, length, d, generator=g).transpose(1, 2)
    delta = torch.rand(s, length, d, generator=g).mul_(0.2).transpose(1, 2)  # in place: no large temporaries
    B, C = (torch.randn(s, length, n, generator=g).transpose(1, 2) for _ in range(2))
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    return x, delta, A, B, C, torch.ones(d)


def _timed_interleaved(*fns: Callable[[], object], repeat: int) -> tuple[float, ...]:
    """Best wall times (s) of the functions, interleaved so that load from other processes hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        best = [min(b, _timed(fn)) for b, fn in zip(best, fns, strict=True)]
    return tuple(best)


def _load() -> float:
    """The 1-minute load average (NaN where the OS has none): a busy machine makes every figure noisier."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _peak_rss_mb() -> float:
    """This process's peak resident set (MiB): VmHWM on Linux (it starts afresh at exec, whereas ru_maxrss
    keeps the high-water mark of the parent that forked it), else ru_maxrss."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scan_peak_child(which: str) -> None:
    """In a fresh process: print the growth of peak RSS (MiB) over one scan window (``which``: baseline/fast)."""
    args = _scan_inputs()
    fn = selective_scan_ref if which == "baseline" else selective_scan
    before = _peak_rss_mb()
    with torch.no_grad():
        fn(*args)
    print(_peak_rss_mb() - before)


def _scan_peak_mb(which: str) -> float:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--scan-peak-child", which]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def bench_scan(tmp: Path) -> dict:
    """New selective scan vs the frozen baseline, one window at the refiner's shape (no autograd)."""
    args = _scan_inputs()
    with torch.no_grad():
        err = float((selective_scan(*args) - selective_scan_ref(*args)).abs().max())
        base, fast = functools.partial(selective_scan_ref, *args), functools.partial(selective_scan, *args)
        t_base, t_fast = _timed_interleaved(base, fast, repeat=7)
    frames = SCAN_SHAPE[1]
    return {
        "shape_S_L_d_n": "x".join(map(str, SCAN_SHAPE)),
        "ms_per_window_baseline": 1e3 * t_base,
        "ms_per_window_fast": 1e3 * t_fast,
        "ratio": t_base / t_fast,
        "fps_scan_baseline": frames / t_base,
        "fps_scan_fast": frames / t_fast,
        "max_abs_diff": err,
        "loadavg_1min": _load(),  # other processes on the cores slow the fast scan's many short parallel ops most
        # peak resident-set growth over one window, in a fresh process with the inputs already made: torch's
        # CPU allocations are plain malloc/mmap, which the RSS high-water mark sees and tracemalloc does not
        "peak_rss_mb_baseline": _scan_peak_mb("baseline"),
        "peak_rss_mb_fast": _scan_peak_mb("fast"),
    }


def _model_params(**changes: object) -> ModelParams:
    """Model params as params.yaml states them (configs without ``from_file``: the class defaults)."""
    if hasattr(ModelParams, "from_file"):
        return ModelParams.from_file(ROOT / "params.yaml", **changes)
    return ModelParams(**changes)


def _make_refiner(p: ModelParams, factor: int) -> Refiner:
    """The model under test; the one place to update when the Refiner's constructor changes."""
    takes_factor = len(inspect.signature(Refiner.__init__).parameters) > 2
    return Refiner(p, factor) if takes_factor else Refiner(p)


def _refine(
    model: Refiner, depth: torch.Tensor, conf: torch.Tensor, rgb: torch.Tensor, factor: int, **state: object
) -> object:
    """One window through the model; the one place to update when its forward signature changes.
    ``state``: ``state``/``state_index`` keywords of a model that carries state from window to window."""
    if "depth_low" in inspect.signature(model.forward).parameters:  # older API: low-res inputs and the mapping
        low_d, low_c = downsample(depth, factor), downsample(conf, factor)
        return model(low_d, low_c, depth, conf, torch.as_tensor(low_mapping(factor)))
    return model(depth, conf, rgb, **state)


def _window(height: int, width: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One 12-frame window as inference feeds the model: rendered depth (smooth surfaces, edges, a moving
    object), a confidence map and the RGB frames in [0, 1] (the temporal blend's colour term uses them)."""
    clip = render_clip(12, height, width, 70.0, 0.063, 4, seed=0)
    depth = torch.from_numpy(clip.depth)[None, :, None].float().to(device)
    rgb = torch.from_numpy(clip.rgb).permute(0, 3, 1, 2)[None].float().div(255).to(device)
    conf = torch.rand(depth.shape, generator=torch.Generator().manual_seed(0)).to(device)
    return depth, conf, rgb


def _mamba_forward_baseline(
    self: mamba_mod.Mamba,
    hidden_states: torch.Tensor,
    state: object = None,
    state_index: object = None,
    time_reversed: bool = False,
) -> torch.Tensor:
    """Frozen copy of ``Mamba.forward`` (commit 8c4e676: conv1d and the reference scan on the whole batch;
    the backward direction flipped the whole batch before and after)."""
    assert state is None and state_index is None, "the baseline block carries no state"
    if time_reversed:
        return _mamba_forward_baseline(self, hidden_states.flip(1)).flip(1)
    length = hidden_states.shape[1]
    x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)
    x = F.silu(self.conv1d(x)[..., :length])
    dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
    delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float()).transpose(1, 2)
    A = -torch.exp(self.A_log.float())
    y = selective_scan_ref(x, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D)
    y = y * F.silu(z.float())
    return self.out_proj(y.transpose(1, 2).to(hidden_states.dtype))


def _with_swaps(fn: Callable[[], object], swaps: list[tuple[object, str, object]]) -> Callable[[], object]:
    """``fn`` run with each (owner, attribute, value) of ``swaps`` set, and restored afterwards."""

    def run() -> object:
        saved = [(owner, name, vars(owner)[name]) for owner, name, _ in swaps]
        for owner, name, value in swaps:
            setattr(owner, name, value)
        try:
            return fn()
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)

    return run


def _with_baseline_mamba(fn: Callable[[], object], blend: bool = False) -> Callable[[], object]:
    """``fn`` run with every pure-PyTorch Mamba block's forward swapped for the frozen baseline (and with
    ``blend``, the temporal blend's forward for its frozen copy too)."""
    swaps = [(mamba_mod.Mamba, "forward", _mamba_forward_baseline)]
    return _with_swaps(fn, swaps + ([(blend_mod.TemporalBlend, "forward", _blend_forward_baseline)] if blend else []))


def bench_refiner(tmp: Path) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, size, f = REFINER_WINDOW
    model = _make_refiner(_model_params(), f).to(device).eval()
    depth, conf, rgb = _window(size, size, device)

    @torch.no_grad()
    def forward(**state: object) -> object:
        out = _refine(model, depth, conf, rgb, f, **state)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    forward()
    baselines = _with_baseline_mamba(forward), _with_baseline_mamba(forward, blend=True)
    t_base, t_base_blend, t_model = _timed_interleaved(*baselines, forward, repeat=7)
    arr = depth[0, :, 0].cpu().numpy()
    t_ema = _timed(lambda: ema(arr, 0.3), 3)
    result = {
        "device": device,
        "size": size,
        "fps_refiner": n / t_model,
        "fps_refiner_baseline_mamba": n / t_base,
        "speedup_vs_baseline_mamba": t_base / t_model,
        "fps_refiner_baseline_mamba_blend": n / t_base_blend,
        "speedup_vs_baseline_mamba_blend": t_base_blend / t_model,
        "fps_ema": n / t_ema,
        "ratio": t_ema / t_model,
        "loadavg_1min": _load(),
    }
    if getattr(model.p, "carry_state", False):  # streaming: from the previous window's state, handing on its own
        carried = forward(state_index=n // 2 - 1).state
        result["fps_refiner_carried_state"] = n / _timed(lambda: forward(state=carried, state_index=n // 2 - 1), 5)
    return result


def _blend_forward_baseline(self, depth: torch.Tensor, rgb: torch.Tensor | None, gate_logit: torch.Tensor):
    """Frozen copy of ``TemporalBlend.forward`` (commit cd49fa4: autograd through every per-frame op)."""
    n, valid = depth.shape[1], depth > 0
    steps = torch.arange(n, device=depth.device, dtype=depth.dtype)
    inv_sd, inv_sc, inv_tau = (torch.exp(-v) for v in (self.log_sigma_depth, self.log_sigma_colour, self.log_tau))
    means = []
    for t in range(n):
        d_t = depth[:, t : t + 1]
        logw = -0.5 * ((depth - d_t) * inv_sd / d_t.clamp_min(1e-6)).square()
        if rgb is not None:
            logw = logw - 0.5 * (rgb - rgb[:, t : t + 1]).square().sum(2, keepdim=True) * inv_sc.square()
        logw = logw - 0.5 * ((steps - t) * inv_tau).square()[None, :, None, None, None]
        w = torch.exp(logw) * valid
        means.append((w * depth).sum(1) / w.sum(1).clamp_min(1e-6))
    m = 20.0 * self.gain * torch.sigmoid(gate_logit)
    return torch.where(valid, depth + m * (torch.stack(means, 1) - depth), depth)


def _scan_reference(x, delta, A, B, C, D, h0=None, state_index=None, *, block=None, time_major=False):  # noqa: ANN001, ANN201
    """:func:`selective_scan`'s call through the public reference scan (:func:`selective_scan_ref`, step by step:
    under autograd, autograd through every per-step op), in either layout; ``block`` is ignored."""
    if not time_major:
        return selective_scan_ref(x, delta, A, B, C, D, h0, state_index)
    x_, delta_, B_, C_ = (t.transpose(1, 2) for t in (x, delta, B, C))
    out = selective_scan_ref(x_, delta_, A, B_, C_, D, None if h0 is None else h0.transpose(1, 2), state_index)
    return out.transpose(1, 2) if state_index is None else (out[0].transpose(1, 2), out[1].transpose(1, 2))


def _with_baseline_training(fn: Callable[[], object], clip: Clip) -> Callable[[], object]:
    """``fn`` with baseline code paths swapped in through public names only: the public reference scan and the
    blend of commit cd49fa4 under autograd, the carried prefix through the whole model, and window reads that
    bypass the frame cache."""
    swaps = [
        (mamba_mod, "selective_scan", _scan_reference),
        (blend_mod.TemporalBlend, "forward", _blend_forward_baseline),
        (Refiner, "carried_state", lambda self, d, c, rgb, k, i: self(d, c, rgb, k, state_index=i).state),
        (clip, "cache", None),
    ]
    return _with_swaps(fn, swaps)


def bench_train_step(tmp: Path) -> dict:
    """The trainer's optimiser step (``refiner.training.train._step``: carried prefix, forward, losses, backward, AdamW,
    EMA) on windows drawn by the data loader from a rendered 48-frame clip (batch, crop and window length as
    params.yaml), vs the same step with baseline code paths (``_with_baseline_training``)."""
    params = load_params(ROOT / "params.yaml")
    tp, win = params.train, params.windows
    clip = _clip(tmp, 48, 256)
    clip.cache = FrameCache(tp.frame_cache_mb << 20)
    length = win.length + (win.length - win.overlap if params.model.carry_state else 0)
    augment = Augment(crop=tp.crop, reverse_prob=tp.reverse_prob, jitter_prob=tp.jitter_prob)
    windows = RandomWindows([clip], length, win.keyframes, augment, 10_000, tp.seed)
    batches = itertools.chain.from_iterable(itertools.repeat(DataLoader(windows, tp.batch_size)))
    model = Refiner(params.model, clip.factor)
    opt = train_mod.make_optimizer(model, tp)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    run = train_mod._Run(model, copy.deepcopy(model).eval(), model, opt, scaler, tmp / "state.pt", "bench")
    device = torch.device("cpu")

    def steps(k: int = 4) -> None:
        for i in range(k):
            train_mod._step(run, train_mod._to(next(batches), device), params, clip.factor, 20 + i, device)

    steps(12)  # past the warm-up learning rates; every frame of the clip in the cache
    t_base, t_step = _timed_interleaved(_with_baseline_training(steps, clip), steps, repeat=7)
    return {
        "crop": tp.crop,
        "batch": tp.batch_size,
        "step_s": t_step / 4,
        "step_s_baseline": t_base / 4,
        "speedup": t_base / t_step,
        "loadavg_1min": _load(),
    }


class _PartTimer:
    """Wall time per part of a forward pass: module hooks, plus wrappers of module-level functions."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def _begin(self, name: str) -> None:
        self._start[name] = time.perf_counter()

    def _end(self, name: str) -> None:
        self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - self._start.pop(name)

    def module(self, name: str, m: torch.nn.Module | None) -> None:
        if m is not None:
            self._undo.append(m.register_forward_pre_hook(lambda *_: self._begin(name)).remove)
            self._undo.append(m.register_forward_hook(lambda *_: self._end(name)).remove)

    def function(self, name: str, owner: object, attr: str) -> None:
        if not hasattr(owner, attr):
            return
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            self._begin(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._end(name)

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, fn))

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()


def _breakdown(model: Refiner, height: int, width: int, f: int) -> dict:
    """ms per part of one window's forward (the run with the best total of 5) at height × width."""
    depth, conf, rgb = _window(height, width)
    parts = _PartTimer()
    for name, child in model.low.named_children():  # encoder, to_ssm, temporal, from_ssm, decoder, ...
        parts.module(name, child)
    for name, child in model.named_children():  # other top-level parts (mid-res branch, full-res heads, ...)
        if name != "low":
            parts.module(name, child)
    parts.function("scan", mamba_mod, "selective_scan")
    for name in ("upsample", "guided_upsample"):
        parts.function("upsampling", refiner_mod, name)
    for name in ("downsample", "downsample_depth"):  # the low-res inputs (newer API: inside the model)
        parts.function("downsampling", refiner_mod, name)
    best: dict[str, float] = {}
    try:
        with torch.no_grad():
            for _ in range(5):
                parts.total = {}
                t = _timed(lambda: _refine(model, depth, conf, rgb, f))
                if t < best.get("total", float("inf")):
                    best = {**parts.total, "total": t}
    finally:
        parts.remove()
    named = sum(v for k, v in best.items() if k not in ("total", "scan"))
    out = {f"{k}_ms": 1e3 * v for k, v in best.items()}
    out["temporal_without_scan_ms"] = out.get("temporal_ms", 0.0) - out.get("scan_ms", 0.0)
    out["other_ms"] = 1e3 * (best["total"] - named)  # features, clamps, reshapes
    out["fps"] = 12 / best["total"]
    return out


def _gpu_forward(model: Refiner, window: tuple, factor: int, bf16: bool) -> Callable[[], object]:
    """One window through ``model`` on the GPU (under bf16 autocast when ``bf16``), synchronised; warmed up once."""

    @torch.no_grad()
    def forward() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            _refine(model, *window, factor)
        torch.cuda.synchronize()

    forward()
    return forward


def bench_gpu(tmp: Path) -> dict:
    """The refiner at 516² on a GPU: float32 and bf16 autocast with our scan only (``use_mamba_ssm: never``),
    and bf16 with mamba_ssm's kernels where a block may use them (``auto``: the backward-in-time block, as the
    forward one carries state; with ``carry_state`` off, both). Skipped without CUDA (not yet run on a GPU)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    n, size, f = REFINER_WINDOW
    window = _window(size, size, "cuda")
    configs = {  # name: (model params changed, bf16)
        "fp32_pure": ({"use_mamba_ssm": "never"}, False),
        "bf16_pure": ({"use_mamba_ssm": "never"}, True),
        "bf16_mamba_ssm": ({"use_mamba_ssm": "auto"}, True),
        "bf16_mamba_ssm_no_carry": ({"use_mamba_ssm": "auto", "carry_state": False}, True),
    }
    fns = [
        _gpu_forward(_make_refiner(_model_params(**changes), f).cuda().eval(), window, f, bf16)
        for changes, bf16 in configs.values()
    ]
    times = _timed_interleaved(*fns, repeat=7)
    out: dict = {"device": torch.cuda.get_device_name(), "size": size, "mamba_ssm": mamba_mod.mamba_ssm_usable()[1]}
    out |= {f"ms_per_frame_{name}": 1000 * t / n for name, t in zip(configs, times, strict=True)}
    out["speedup_bf16_mamba_ssm_vs_fp32_pure"] = times[0] / times[2]
    return out


def bench_breakdown(tmp: Path) -> dict:
    """Per-part times of the refiner forward at 516² and 516×924 (16:9); a failing size reports its error."""
    f = 4
    model = _make_refiner(_model_params(), f).eval()
    results: dict = {}
    for height, width in ((516, 516), (516, 924)):
        try:
            parts = _breakdown(model, height, width, f)
        except Exception as e:  # e.g. a model that only takes square frames: say where
            where = traceback.extract_tb(e.__traceback__)[-1]
            results[f"{height}x{width}_error"] = f"{type(e).__name__} at {where.filename}:{where.lineno}: {e}"
            continue
        results.update({f"{height}x{width}_{k}": v for k, v in parts.items()})
    return {**results, "loadavg_1min": _load()}


def bench_infer(tmp: Path) -> dict:
    clip = _clip(tmp, 48, 128)
    params = load_params(ROOT / "params.yaml")
    model = Refiner(params.model, 4).eval()
    win = params.windows.for_inference()  # what refine_clip slides
    t_infer = _timed(lambda: refine_clip(model, clip, tmp / "o.zarr", params.windows, params.infer, progress=False))
    x = torch.rand(1, win.length, 1, 128, 128) + 1

    @torch.no_grad()
    def bare() -> None:
        for _ in window_starts(48, win.length, win.overlap):
            model(x, x.clamp(0, 1))

    t_bare = _timed(bare)
    fast = params.windows.replace(inference_overlap=min(FAST_OVERLAP, win.overlap))  # refiner-video --fast
    t_fast = _timed(lambda: refine_clip(model, clip, tmp / "f.zarr", fast, params.infer, progress=False))
    return {
        "frames": 48,
        "fps_infer": 48 / t_infer,
        "fps_bare_model": 48 / t_bare,
        "ratio": t_bare / t_infer,
        "fps_infer_fast": 48 / t_fast,
        "fast_speedup": t_infer / t_fast,
    }


def _memory_child(stage: str, root: str) -> None:
    """In a fresh process: print the peak RSS (MiB) and its growth over infer or evaluate of the clip under ``root``."""
    params = load_params(ROOT / "params.yaml")
    clip, root = Clip(Path(root) / "decoded.zarr", Path(root) / "teacher.zarr", None), Path(root)
    model = Refiner(params.model.replace(channels=16, ssm_hidden=16), 4).eval() if stage == "infer" else None
    before = _peak_rss_mb()
    if model is not None:
        refine_clip(model, clip, root / "refined.zarr", params.windows, params.infer, progress=False)
    else:
        evaluate_clip(clip, str(root / "refined.zarr"), params.evaluate, params.windows.length)
    print(_peak_rss_mb(), _peak_rss_mb() - before)


def bench_memory(tmp: Path) -> dict:
    """Peak RSS of infer and evaluate (and its growth over the call, imports and model excluded) at 64 and 640
    frames (96², a 16-frame still segment)."""
    out = {}
    for frames in (64, 640):
        _clip(tmp / str(frames), frames, 96, static_frames=16)
        for stage in ("infer", "evaluate"):  # evaluate reads the refined store infer wrote
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", stage, str(tmp / str(frames))]
            peak, growth = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-2:]
            out[f"{stage}_peak_mb_{frames}"], out[f"{stage}_growth_mb_{frames}"] = float(peak), float(growth)
    for stage in ("infer", "evaluate"):
        for what in ("peak", "growth"):
            out[f"{stage}_{what}_ratio_640_vs_64"] = out[f"{stage}_{what}_mb_640"] / out[f"{stage}_{what}_mb_64"]
    return out


def bench_repro(tmp: Path) -> dict:
    work = tmp / "repo"
    env = scratch_repo(ROOT, work)
    dvc = [sys.executable, "-m", "dvc"]
    t_full = _timed(lambda: subprocess.run([*dvc, "repro", "-q"], cwd=work, env=env, check=True))
    t_noop = _timed(lambda: subprocess.run([*dvc, "repro", "-q"], cwd=work, env=env, check=True))
    return {"full_repro_s": t_full, "noop_repro_s": t_noop, "ratio": t_full / t_noop}


def bench_test_stage(tmp: Path) -> dict:
    """Every test clip of the built workspace (infer, adapt, evaluate, stereo) in one worker, then in
    ``test.workers``, each into fresh folders: wall seconds and their ratio."""
    model, manifest = ROOT / "data/train/model.safetensors", ROOT / "data/manifest"
    if not model.is_file() or not (manifest / "test.json").is_file():
        raise RuntimeError(f"{model} or {manifest}/test.json missing: build the default first (dvc repro)")
    params = load_params(ROOT / "params.yaml")
    names = [c["name"] for c in load_split(manifest, "test")]
    wall = {}
    with contextlib.chdir(ROOT):  # the manifest's store paths are relative to the repository
        for workers in (1, params.test.workers):
            run = functools.partial(
                run_shard,
                names,
                str(manifest),
                str(model),
                params.merged({"test": {"workers": workers}}),
                ShardFolders(tmp / f"{workers}/data", tmp / f"{workers}/reports"),
            )
            wall[workers] = _timed(run)
    many = params.test.workers
    return {
        "clips": len(names),
        "wall_s_1_worker": wall[1],
        f"wall_s_{many}_workers": wall[many],
        "ratio": wall[1] / wall[many],
        "loadavg_1min": _load(),
    }


# --- refiner-video end to end ------------------------------------------------------------------------------------

VIDEO_CLIP = (48, 360, 640)  # frames, height, width: the rendered 640x360 clip
MEMORY_CLIPS = ((200, 72, 128), (2000, 72, 128))  # tiny frames: a 2000-frame 640x360 run takes an hour here
PROGRESS = re.compile(rb"refine \+ write:[^\r\n]*?(\d+)/\d+")


def _video_source(root: Path, frames: int, height: int, width: int) -> list[str]:
    """A rendered clip with GT and the refiner-video arguments that run the simulated teacher on it."""
    write_clip(render_clip(frames, height, width, 70.0, 0.063, 16, seed=3), root, fps=24, crf=12, baseline_m=0.063)
    args = [str(root / "clip.mp4"), "--intrinsics", str(root / "camera.json"), "--teacher", "simulated"]
    return [*args, "--gt", str(root / "gt.zarr")]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "refiner.app.cli", *args]


def _silences(cmd: list[str]) -> dict:
    """Run ``cmd`` and time what it prints (progress bars on stderr, the summary on stdout): the longest stretch
    without any output from the start of the command to its end, and the longest without the refine bar's count of
    written frames moving."""
    start = last = time.perf_counter()
    longest, count, count_at, longest_count, where, before = 0.0, None, None, 0.0, "", b""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_bench_env())
    while chunk := os.read(proc.stdout.fileno(), 4096):
        now = time.perf_counter()
        if now - last > longest:
            longest, where = now - last, before.decode(errors="replace").strip().split("\r")[-1][:60]
        last, before = now, chunk
        for n in PROGRESS.findall(chunk):  # from the refine bar's first appearance on
            if int(n) != count:
                longest_count, count, count_at = max(longest_count, now - (count_at or now)), int(n), now
    if proc.wait():
        raise RuntimeError(f"{' '.join(cmd)} failed with status {proc.returncode}")
    end = time.perf_counter()
    if end - last > longest:
        longest, where = end - last, "the last output"
    return {
        "wall_s": end - start,
        "longest_silence_s": longest,
        "silence_after": where,
        "no_new_frame_s": longest_count,
    }


def _bench_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), DVC_NO_ANALYTICS="1")


def _refine_alone(model: torch.nn.Module, clip: Clip, threads: int) -> float:
    """Seconds to compute every refined frame of ``clip`` (teacher cached; nothing written) with ``threads``."""
    params = load_params(ROOT / "params.yaml")
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for _ in Refinement(model, clip, params.windows, params.infer):
        pass
    return time.perf_counter() - t0


def _busy(n: int) -> list[subprocess.Popen]:
    """``n`` competing processes that keep one core each busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _contended(model: torch.nn.Module, clip: Clip, threads: int) -> float:
    """:func:`_refine_alone` while two busy processes run."""
    others = _busy(2)
    try:
        return _refine_alone(model, clip, threads)
    finally:
        for p in others:
            p.kill()
            p.wait()


def _contention(model: torch.nn.Module, clip: Clip, rounds: int = 2) -> dict:
    """The refine step quiet and with two busy processes, at 1 and 2 torch threads: the best of ``rounds``
    alternating (quiet, busy) pairs, so a change of the machine's other load hits both sides alike."""
    out = {}
    for threads in (1, 2):
        pairs = [(_refine_alone(model, clip, threads), _contended(model, clip, threads)) for _ in range(rounds)]
        quiet, busy = min(q for q, _ in pairs), min(b for _, b in pairs)
        out |= {f"refine_quiet_s_{threads}t": quiet, f"refine_busy_s_{threads}t": busy}
        out[f"busy_vs_quiet_{threads}t"] = busy / quiet
    return out


def bench_video(tmp: Path) -> dict:
    """refiner-video on a rendered 640x360 clip of 48 frames with npy + png16 exports: end to end with the teacher
    cached vs the refine step alone, the longest silence of a first run, and the refine step under contention."""
    frames = VIDEO_CLIP[0]
    args = _video_source(tmp / "src", *VIDEO_CLIP) + ["--cache", str(tmp / "cache"), "--export", "npy,png16"]
    first = _silences(_cli([*args, "--out", str(tmp / "out1")]))
    walls, own = [], []  # the whole process, and the command's own clock (after interpreter start and imports)
    for _ in range(2):
        walls.append(_timed(lambda: subprocess.run(_cli([*args, "--out", str(tmp / "out2"), "--quiet"]), check=True)))
        own.append(json.loads((tmp / "out2/outputs.json").read_text())["seconds"])
    t_wall, t_end = min(walls), min(own)
    cache = next((tmp / "cache").iterdir())
    model = load_refiner(ROOT / "models/pretrained/refiner.safetensors")[0]
    clip = Clip(cache / "decoded.zarr", cache / "teacher.zarr", calibration_for({}, cache / "teacher.zarr", "self"))
    t_refine = min(_refine_alone(model, clip, 1) for _ in range(2))
    return {
        "frames": frames,
        "fps_end_to_end_cached": frames / t_end,
        "fps_end_to_end_cached_with_interpreter_start": frames / t_wall,
        "fps_refine_alone": frames / t_refine,
        "ratio": t_refine / t_end,
        "ratio_with_interpreter_start": t_refine / t_wall,
        **{f"first_run_{k}": v for k, v in first.items()},
        **_contention(model, clip),
        "loadavg_1min": _load(),
    }


def _video_memory_child(args: list[str]) -> None:
    """In a fresh process: refiner-video with ``args``, then print this process's peak RSS (MiB)."""
    from refiner.app.cli import main as refiner_video

    refiner_video(args)
    print(_peak_rss_mb())


def bench_video_memory(tmp: Path) -> dict:
    """Peak RSS of a whole refiner-video run (decode, teacher, refine, every writer and the stereo video), each in a
    fresh process, at 200 and 2000 frames of 72x128 (canonical 64x112)."""
    out = {}
    for frames, height, width in MEMORY_CLIPS:
        args = _video_source(tmp / f"src{frames}", frames, height, width) + ["--size", "64", "--quiet", "--stereo"]
        args += ["--export", "npy,png16,zarr,ffv1,review", "--cache", str(tmp / "cache"), "--out", str(tmp / "o")]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--video-memory-child", *args]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_bench_env())
        out[f"peak_rss_mb_{frames}"] = float(done.stdout.split()[-1])
    small, large = (f"peak_rss_mb_{f}" for f, _, _ in MEMORY_CLIPS)
    return {**out, "ratio": out[large] / out[small], "loadavg_1min": _load()}


BENCHES = {
    "decode": bench_decode,
    "cache": bench_cache,
    "scan": bench_scan,
    "refiner": bench_refiner,
    "gpu": bench_gpu,
    "breakdown": bench_breakdown,
    "train_step": bench_train_step,
    "infer": bench_infer,
    "memory": bench_memory,
    "repro": bench_repro,
    "test_stage": bench_test_stage,
    "prepare": bench_prepare,
    "prepare_default": bench_prepare_default,
    "video": bench_video,
    "video_memory": bench_video_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    parser.add_argument("--scan-peak-child", choices=("baseline", "fast"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, metavar=("STAGE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--video-memory-child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scan_peak_child:
        return _scan_peak_child(args.scan_peak_child)
    if args.memory_child:
        return _memory_child(*args.memory_child)
    if args.video_memory_child:
        return _video_memory_child(args.video_memory_child)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    results: dict = {"machine": machine}
    print(machine)
    for name in args.only or BENCHES:
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = BENCHES[name](Path(tmp))
        print(
            f"{name:8s} "
            + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in results[name].items())
        )
    out = ROOT / "reports" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

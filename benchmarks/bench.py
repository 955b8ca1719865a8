"""On-demand benchmarks (not part of the test suite): ``python benchmarks/bench.py [--only NAME ...]``.

Every figure is printed next to a baseline measured in the same run, as a ratio, so numbers from
different machines compare by their ratios:

- decode: mp4 → canonical Zarr store, frames/s, vs reading the same frames with PyAV only;
- cache: teacher-cache write/read MB/s and compression ratio, vs raw float32 ``.npy``;
- refiner: v0 model frames/s at 518² full res, vs the EMA baseline filter on the same frames;
- infer: windowed inference with blending, frames/s, vs the bare model forward on the same windows;
- memory: peak traced memory of inference vs clip length (should stay flat);
- repro: full ``dvc repro`` of the embedded default in a scratch copy, vs the no-op repro after it.

Results are also written to ``reports/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refiner.baselines import ema  # noqa: E402
from refiner.config import InferParams, ModelParams, WindowParams  # noqa: E402
from refiner.infer import refine_clip  # noqa: E402
from refiner.ingest import ingest_video  # noqa: E402
from refiner.lowres import downsample, low_mapping  # noqa: E402
from refiner.model import Refiner  # noqa: E402
from refiner.store import create_group, frames_array, open_group, small_array  # noqa: E402
from refiner.synth import render_clip, write_clip  # noqa: E402
from refiner.video import decode_frames  # noqa: E402
from refiner.windows import window_starts  # noqa: E402


def _timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _clip(root: Path, frames: int, size: int) -> tuple[Path, Path]:
    """A rendered clip decoded into a store, plus a teacher store (GT with per-frame scale flicker)."""
    clip = render_clip(frames, size, size, 70.0, 0.063, frames // 3, seed=0)
    write_clip(clip, root / "synth", fps=24, crf=12, baseline_m=0.063)
    decoded = root / "decoded.zarr"
    ingest_video(root / "synth/clip.mp4", root / "synth/camera.json", decoded, size, progress=False)
    rng = np.random.default_rng(0)
    depth = (clip.depth * (1 + 0.03 * rng.standard_normal(frames))[:, None, None]).astype(np.float32)
    conf = rng.uniform(0.2, 1.0, depth.shape).astype(np.float32)
    teacher = root / "teacher.zarr"
    g = create_group(teacher)
    for name, data in (("depth", depth), ("confidence", conf)):
        frames_array(g, name, data.shape, np.float32)[...] = data
    small_array(g, "low_mapping", low_mapping(4))
    return decoded, teacher


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


def bench_refiner(tmp: Path) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, size, f = 12, 518 // 4 * 4, 4  # 516², the nearest multiple of the low-res factor to 518
    model = Refiner(ModelParams()).to(device).eval()
    depth = torch.rand(1, n, 1, size, size, device=device) * 5 + 1
    conf = torch.rand_like(depth)
    low_d, low_c = downsample(depth, f), downsample(conf, f)
    mapping = torch.as_tensor(low_mapping(f))

    @torch.no_grad()
    def forward() -> None:
        model(low_d, low_c, depth, conf, mapping)
        if device == "cuda":
            torch.cuda.synchronize()

    forward()
    t_model = _timed(forward, 3)
    arr = depth[0, :, 0].cpu().numpy()
    t_ema = _timed(lambda: ema(arr, 0.3), 3)
    return {"device": device, "size": size, "fps_refiner": n / t_model, "fps_ema": n / t_ema, "ratio": t_ema / t_model}


def bench_infer(tmp: Path) -> dict:
    decoded, teacher = _clip(tmp, 48, 128)
    model = Refiner(ModelParams()).eval()
    windows, mapping = WindowParams(), torch.as_tensor(low_mapping(4))
    t_infer = _timed(
        lambda: refine_clip(model, mapping, decoded, teacher, tmp / "o.zarr", windows, InferParams(), progress=False)
    )
    x = torch.rand(1, windows.length, 1, 128, 128) + 1

    @torch.no_grad()
    def bare() -> None:
        for _ in window_starts(48, windows.length, windows.overlap):
            model(downsample(x, 4), downsample(x, 4), x, x, mapping)

    t_bare = _timed(bare)
    return {"frames": 48, "fps_infer": 48 / t_infer, "fps_bare_model": 48 / t_bare, "ratio": t_bare / t_infer}


def bench_memory(tmp: Path) -> dict:
    model = Refiner(ModelParams(channels=16, ssm_hidden=16)).eval()
    peaks = {}
    for frames in (24, 96):
        decoded, teacher = _clip(tmp / str(frames), frames, 64)
        tracemalloc.start()
        refine_clip(
            model,
            torch.as_tensor(low_mapping(4)),
            decoded,
            teacher,
            tmp / f"o{frames}.zarr",
            WindowParams(),
            InferParams(),
            progress=False,
        )
        peaks[frames] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return {"peak_mb_24_frames": peaks[24], "peak_mb_96_frames": peaks[96], "ratio": peaks[96] / peaks[24]}


def bench_repro(tmp: Path) -> dict:
    work = tmp / "repo"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, work / name)
    for name in ("stages", "refiner"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(work))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=work, env=env, check=True)
    t_full = _timed(lambda: subprocess.run([*dvc, "repro", "-q"], cwd=work, env=env, check=True))
    t_noop = _timed(lambda: subprocess.run([*dvc, "repro", "-q"], cwd=work, env=env, check=True))
    return {"full_repro_s": t_full, "noop_repro_s": t_noop, "ratio": t_full / t_noop}


BENCHES = {
    "decode": bench_decode,
    "cache": bench_cache,
    "refiner": bench_refiner,
    "infer": bench_infer,
    "memory": bench_memory,
    "repro": bench_repro,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    args = parser.parse_args()
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

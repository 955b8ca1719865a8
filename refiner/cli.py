"""refiner-video: refine any video with a trained refiner in one command, with outputs at the video's resolution.

    refiner-video VIDEO (--intrinsics cam.json | --hfov-deg 70) --model model.safetensors --out DIR
                  [--teacher learned|simulated|unidepth|PLUGIN] [--gt GT.zarr] [--unidepth-weights DIR] [--stereo]
                  [--size S] [--crop] [--stride K] [--params params.yaml] [--calibration calibration.json]
                  [--baseline-m B] [--cache DIR] [--fast]

It runs the DVC pipeline's own code, never editing params.yaml: decode (:func:`refiner.adapters.ingest`, the
whole frame with its aspect ratio) → teacher cache (:func:`refiner.teachers.cache.write_teacher_store`) →
:class:`refiner.clip.Clip` → :func:`refiner.infer.run_infer` (the infer stage's function) → the exports at source
resolution (:mod:`refiner.source_res`). Windows, infer, teacher, decode and stereo settings come from ``--params``,
else the repository's params.yaml next to this package, else the packaged ``refiner/defaults.yaml``; the model's
own params and low-res factor come from the checkpoint. The decoded and teacher stores are cached under
``--cache`` (default ``$REFINER_CACHE`` or ``~/.cache/refiner``) in a folder keyed by the video's SHA-256 and every
setting that changes them, so a second run of the same video skips decoding and the teacher. The teacher is any
registered one (:mod:`refiner.teachers.registry`; default ``learned``, which needs nothing but the video). Its
confidence table is the one fitted for that same teacher in ``--calibration data/manifest/calibration.json``,
else ``teacher.calibration_fallback`` (the summary names which).
``--fast`` overlaps consecutive windows by ``FAST_OVERLAP`` frames instead of ``windows.overlap``: fewer windows
per clip for a little more temporal error (README, "Fast mode").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from refiner.adapters import ingest
from refiner.checkpoint import load_refiner
from refiner.clip import Clip
from refiner.config import DecodeParams, InferParams, StereoParams, TeacherParams, WindowParams, load_params
from refiner.errors import run_stage
from refiner.infer import run_infer
from refiner.ingest import resolve_intrinsics
from refiner.manifest import calibration_for
from refiner.plugins import is_teacher_name, registered, unknown_teacher
from refiner.source_res import (
    SourceFrames,
    source_K,
    source_rgb,
    stereo_video,
    store_map,
    write_depth_store,
    write_intrinsics,
)
from refiner.store import open_group, read_json, write_json
from refiner.teachers.cache import write_teacher_store
from refiner.video import video_info

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DEFAULTS = Path(__file__).with_name("defaults.yaml")
FAST_OVERLAP = 2  # --fast: frames shared by consecutive windows (12-frame windows: 5 instead of 7 per 48 frames)
SECTIONS = {
    "decode": DecodeParams,
    "windows": WindowParams,
    "infer": InferParams,
    "teacher": TeacherParams,
    "stereo": StereoParams,
}
DEFAULT_TEACHER = "learned"  # runs on any video with no other file (refiner/teachers/learned.py)


@dataclass(frozen=True)
class Settings:
    """The params.yaml sections the command reads (``run_infer`` takes it as its params), and where from."""

    decode: DecodeParams
    windows: WindowParams
    infer: InferParams
    teacher: TeacherParams
    stereo: StereoParams
    source: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="refiner-video", description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path, help="any video FFmpeg reads")
    ap.add_argument("--intrinsics", type=Path, help="JSON/YAML: fx, fy, cx, cy in pixels of the video")
    ap.add_argument("--hfov-deg", type=float, help="or a horizontal field of view (centred square-pixel pinhole)")
    ap.add_argument("--model", type=Path, help="trained refiner, e.g. data/train/model.safetensors")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument(
        "--teacher",
        default=DEFAULT_TEACHER,
        help=f"a registered teacher ({', '.join(registered())}), a teacher.profiles entry of the params, or "
        f"module:attr of a teacher factory (default: {DEFAULT_TEACHER})",
    )
    ap.add_argument("--gt", type=Path, help="ground-truth store (the simulated teacher needs one)")
    ap.add_argument("--unidepth-weights", type=Path, help="UniDepthV2 folder (config.json + model.safetensors)")
    ap.add_argument("--stereo", action="store_true", help="also write the left|right SBS video for VR")
    ap.add_argument("--size", type=int, help="canonical short side S (default: decode.size)")
    ap.add_argument("--crop", action="store_true", help="S x S centre crop instead of the whole frame")
    ap.add_argument("--stride", type=int, default=1, help="keep every k-th frame")
    ap.add_argument("--name", help="clip name (default: the video's file name without extension)")
    ap.add_argument("--params", type=Path, help="params.yaml to read (default: the repository's, else defaults)")
    ap.add_argument("--calibration", type=Path, help="calibration.json of a train split (default: c = 1 - rank)")
    ap.add_argument(
        "--baseline-m", type=float, help="stereo baseline in metres (default: the clip's or stereo.baseline_m)"
    )
    ap.add_argument("--cache", type=Path, help="teacher cache folder (default: $REFINER_CACHE or ~/.cache/refiner)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument(
        "--fast", action="store_true", help=f"windows overlap by {FAST_OVERLAP} frames (fewer windows, more TAE)"
    )
    return ap.parse_args(argv)


def load_settings(path: Path | None) -> Settings:
    """The sections from ``path``, else the repository's params.yaml, else the packaged defaults (validated)."""
    path = path or (REPO_PARAMS if REPO_PARAMS.is_file() else DEFAULTS)
    if path == DEFAULTS:
        raw = yaml.safe_load(DEFAULTS.read_text())
        return Settings(**{k: cls(**raw[k]) for k, cls in SECTIONS.items()}, source=str(path))
    params = load_params(path)
    return Settings(**{k: getattr(params, k) for k in SECTIONS}, source=str(path))


def with_overrides(s: Settings, args: argparse.Namespace) -> Settings:
    """The command line's decode options, and every per-frame export on."""
    decode = s.decode.replace(size=args.size or s.decode.size, crop=args.crop or s.decode.crop)
    infer = s.infer.replace(export_npy=True, export_png16=True)
    windows = s.windows.replace(overlap=min(FAST_OVERLAP, s.windows.overlap)) if args.fast else s.windows
    return Settings(decode, windows, infer, s.teacher, s.stereo, s.source)


def check_inputs(args: argparse.Namespace) -> dict | Path:
    """Fail early, one line each, on a missing video, model or intrinsics; returns the intrinsics to decode with."""
    if not args.video.is_file():
        raise FileNotFoundError(f"{args.video}: video not found")
    if args.model is None or not args.model.is_file():
        raise FileNotFoundError(
            f"--model {args.model or '(missing)'}: no trained refiner there; pass --model PATH to a checkpoint, "
            "e.g. data/train/model.safetensors after `dvc repro train`"
        )
    if (args.intrinsics is None) == (args.hfov_deg is None):
        raise ValueError(
            "the video needs intrinsics: pass exactly one of --intrinsics cam.json ({fx, fy, cx, cy} in pixels of "
            "the video) or --hfov-deg DEGREES (horizontal field of view)"
        )
    if args.intrinsics is not None and not args.intrinsics.is_file():
        raise FileNotFoundError(f"--intrinsics {args.intrinsics}: file not found")
    return args.intrinsics if args.intrinsics is not None else {"hfov_deg": args.hfov_deg}


def check_options(args: argparse.Namespace) -> None:
    """One line naming the option and its allowed range for a value out of range (never a params.yaml key)."""
    sizes = "an even integer in [16, 4096] (the canonical short side, pixels), a multiple of the model's low-res factor"
    checks = [
        ("--stride", args.stride, args.stride >= 1, "an integer >= 1 (keep every k-th frame)"),
        ("--size", args.size, args.size is None or (16 <= args.size <= 4096 and args.size % 2 == 0), sizes),
        ("--baseline-m", args.baseline_m, args.baseline_m is None or args.baseline_m > 0, "metres > 0"),
    ]
    for option, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{option} {value} is invalid; allowed: {allowed}")


def teacher_params(args: argparse.Namespace, s: Settings, factor: int) -> TeacherParams:
    """The teacher to run (its low-res factor is the model's); an unknown name fails here, before decoding."""
    if not (is_teacher_name(args.teacher) or args.teacher in s.teacher.profiles):
        raise ValueError(f"--teacher: {unknown_teacher(args.teacher)}")
    p = s.teacher.resolve(args.teacher).replace(low_res_factor=factor)
    if args.unidepth_weights is not None:
        p = p.replace(unidepth_weights=str(args.unidepth_weights))
    if args.gt is not None and not (args.gt / "zarr.json").is_file():
        raise FileNotFoundError(f"--gt {args.gt}: not a ground-truth Zarr store (no zarr.json)")
    return p


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_fingerprint(path: Path | None) -> list | None:
    """Names, sizes and modification times of a store's files: cheap, and changes when the store is rewritten."""
    if path is None:
        return None
    return sorted(
        [str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns] for f in path.rglob("*") if f.is_file()
    )


def cache_dir(args: argparse.Namespace, intrinsics: dict | Path, s: Settings, tp: TeacherParams) -> Path:
    """The cache folder of this video and every setting that changes its decoded and teacher stores."""
    video_hash = file_digest(args.video)
    info = video_info(args.video)
    K = resolve_intrinsics(intrinsics, int(info["width"]), int(info["height"]), str(intrinsics))
    key = {
        "video_sha256": video_hash,
        "K": K.tolist(),
        "gt": store_fingerprint(args.gt),
        "stride": args.stride,
        "decode": s.decode.model_dump(),
        "teacher": tp.model_dump(mode="json"),
        "clip": args.name,
    }
    settings_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    root = args.cache or Path(os.environ.get("REFINER_CACHE", "~/.cache/refiner")).expanduser()
    d = root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', args.name)}-{video_hash[:12]}-{settings_hash[:8]}"
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "key.json", key)
    return d


def prepare_stores(args, intrinsics, s: Settings, tp: TeacherParams) -> tuple[Path, Path, bool]:
    """(decoded store, teacher store, reused): decode and run the teacher unless the cache holds both."""
    d = cache_dir(args, intrinsics, s, tp)
    decoded, teacher = d / "decoded.zarr", d / "teacher.zarr"
    if (decoded / "zarr.json").is_file() and (teacher / "zarr.json").is_file():
        return decoded, teacher, True
    grid = {"multiple": tp.low_res_factor, "crop": s.decode.crop, "progress": not args.quiet}
    ingest(
        "video",
        args.video,
        decoded,
        s.decode.size,
        stride=args.stride,
        intrinsics=intrinsics,
        gt=args.gt,
        scene_id=args.name,
        **grid,
    )
    write_teacher_store(decoded, teacher, tp, args.name, progress=not args.quiet, group=args.teacher)
    return decoded, teacher, False


def export_outputs(args, clip: Clip, s: Settings, out: Path) -> dict[str, Path]:
    """Source-resolution Zarr of the whole clip, the source camera's intrinsics and (``--stereo``) the SBS video."""
    m, K = store_map(clip.dec), source_K(clip.dec)
    depth = SourceFrames(open_group(out / "refined_canonical.zarr")["depth"], m)
    attrs = {"source_video": str(args.video), "canonical_map": m.to_dict(), "model": str(args.model)}
    write_depth_store(depth, K, out / "depth.zarr", attrs, progress=not args.quiet)
    write_intrinsics(out / "intrinsics.json", K[0], m.src_width, m.src_height)
    paths = {"depth_zarr": out / "depth.zarr", "intrinsics": out / "intrinsics.json"}
    if args.stereo:
        baseline = args.baseline_m or clip.baseline_m(s.stereo.baseline_m)
        rgb = source_rgb(clip.dec)
        stereo_video(
            rgb,
            depth,
            K[:, 0, 0],
            baseline,
            out / "stereo_sbs.mp4",
            clip.fps,
            s.stereo.max_video_frames,
            progress=not args.quiet,
        )
        paths["stereo_sbs"] = out / "stereo_sbs.mp4"
    return paths


def refine_video(argv: list[str] | None = None) -> dict:
    """Everything the command does; returns its summary (also written to ``OUT/outputs.json``)."""
    args, clock = parse_args(argv), _Clock()
    args.name = args.name or args.video.stem
    check_options(args)
    intrinsics = check_inputs(args)
    s = with_overrides(load_settings(args.params), args)
    model, _ = load_refiner(args.model, "cuda" if torch.cuda.is_available() else "cpu")
    if s.decode.size % model.factor:
        raise ValueError(f"--size {s.decode.size} is not a multiple of the model's low-res factor {model.factor}")
    tp = teacher_params(args, s, model.factor)
    clock.lap("setup_s")
    decoded, teacher, reused = prepare_stores(args, intrinsics, s, tp)
    tables = read_json(args.calibration, "calibration") if args.calibration else {}
    clip = Clip(decoded, teacher, calibration_for(tables, teacher, s.teacher.calibration_fallback))
    clock.lap("decode_and_teacher_s")
    out = args.out
    stats = run_infer(model, clip, s, out / "refined_canonical.zarr", out / "frames", out / "reports", not args.quiet)
    clock.lap("refine_frames_and_video_s")
    paths = {
        "frames": out / "frames",
        "side_by_side": out / "reports/side_by_side.mp4",
        **export_outputs(args, clip, s, out),
        "refined_canonical": out / "refined_canonical.zarr",
        "metrics": out / "reports/metrics.json",
        "cache": decoded.parent,
    }
    clock.lap("zarr_intrinsics_stereo_s")
    summary = summarise(args, s, clip, paths, stats, reused, clock.laps)
    write_json(out / "outputs.json", summary)
    return summary


class _Clock:
    """Named wall-clock laps in seconds."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = round(now - self.last, 3), now


def _bytes(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def summarise(args, s: Settings, clip: Clip, paths: dict[str, Path], stats: dict, reused: bool, laps: dict) -> dict:
    """What ran, how fast, and where every output went (with its size)."""
    m, seconds = store_map(clip.dec), sum(laps.values())
    return {
        "video": str(args.video),
        "frames": clip.frames,
        "source_size_wh": [m.src_width, m.src_height],
        "canonical_size_wh": [m.width, m.height],
        "teacher": str(clip.tea.attrs.get("teacher")),
        "teacher_id": str(clip.tea.attrs.get("teacher_id")),
        "teacher_label": str(clip.tea.attrs.get("teacher_label")),
        "calibration": {k: clip.calibration[k] for k in ("source", "fitted_on")},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "params": s.source,
        "teacher_cache_reused": reused,
        "seconds": round(seconds, 3),
        "frames_per_s": round(clip.frames / seconds, 3),
        "timings_s": laps,
        "drift_rel": stats["drift_rel"],
        "outputs": {k: str(v) for k, v in paths.items()},
        "bytes": {k: _bytes(v) for k, v in paths.items() if v.exists()},
    }


def report(summary: dict) -> str:
    """The lines printed at the end: the run, then every output with its size."""
    (w, h), (cw, ch) = summary["source_size_wh"], summary["canonical_size_wh"]
    cache = "reused" if summary["teacher_cache_reused"] else "written"
    lines = [
        f"refined {summary['frames']} frames of {summary['video']} ({w}x{h}; canonical {cw}x{ch}; teacher "
        f"{summary['teacher']}, cache {cache}; params {summary['params']}) in {summary['seconds']:.1f} s = "
        f"{summary['frames_per_s']:.2f} frames/s on {summary['device']}",
        f"  teacher: {summary['teacher_label']}; confidence table: {summary['calibration']['source']}",
        "  " + ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items()),
    ]
    for name, path in summary["outputs"].items():
        size = summary["bytes"].get(name)
        lines.append(f"  {name:18s} {path}" + (f"  ({size / 1e6:.2f} MB)" if size is not None else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``refiner-video``: one line ``error: ...`` and exit status 1 on any failure."""

    def run() -> None:
        summary = refine_video(argv)
        print(report(summary))
        print(f"  {'summary':18s} {Path(summary['outputs']['frames']).parent / 'outputs.json'}")

    run_stage(run)


if __name__ == "__main__":
    main()

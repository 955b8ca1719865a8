"""What refiner-video does once its command line is read (:mod:`refiner.app.cli`), with the pipeline's own code.

1. decode (:func:`refiner.data.adapters.ingest`, the whole frame with its aspect ratio) and the teacher
   (:func:`refiner.teachers.cache.write_teacher_store`) into the cache (:mod:`refiner.app.video_cache`), skipped
   when the cache holds this video with these settings;
2. scene cuts (:mod:`refiner.data.cuts`);
3. ``--adapt STEPS``: a GT-free fine-tuned copy of the model on this video's teacher outputs
   (:func:`refiner.inference.adapt.adapt`); it needs the whole teacher store, so it runs before the streaming pass;
4. one streaming pass, :func:`refiner.inference.infer.run_infer` (the test stage's infer step): refine window by window,
   each scene afresh, and every writer on its own thread behind a bounded queue (:mod:`refiner.core.streaming`,
   :mod:`refiner.inference.sinks`), so memory does not grow with the video's length.

Steps 1 and 4 are two passes over Zarr stores on disk rather than one in-memory pipe: the confidence table of a
teacher no train clip calibrated (``teacher.calibration_fallback: self``) and ``--adapt`` both need the teacher's
output for the whole video before the first frame is refined, and the cache lets a second run skip step 1.
Every output goes to a temporary folder that replaces ``--out`` at the end (:mod:`refiner.app.out_folder`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from refiner.app.out_folder import LISTING, listing, output_folder
from refiner.app.video_cache import cache_key, prepare_stores
from refiner.app.video_settings import (
    Settings,
    adapt_params,
    load_settings,
    stereo_settings,
    teacher_params,
    with_overrides,
)
from refiner.core.store import read_json, write_json
from refiner.data.clip import Clip
from refiner.data.cuts import detect_cuts
from refiner.data.gt_store import check_gt_store
from refiner.data.manifest import calibration_for
from refiner.inference.depth_video import encode_depth_video
from refiner.inference.infer import run_infer
from refiner.inference.sinks import source_store
from refiner.inference.source_res import source_K, source_rgb, store_map, write_intrinsics
from refiner.training.checkpoint import load_refiner
from refiner.visual.videos import write_stereo_video


def check_inputs(args: argparse.Namespace) -> dict | Path:
    """Fail early, one line each, on a missing video, model, intrinsics or a wrong GT store; returns the intrinsics
    to decode with."""
    if not args.video.is_file():
        raise FileNotFoundError(f"{args.video}: video not found")
    if not args.model.is_file():
        raise FileNotFoundError(
            f"--model {args.model}: no refiner checkpoint there; pass --model PATH to one (the package ships "
            "models/pretrained/refiner.safetensors; `dvc repro train` writes data/train/model.safetensors)"
        )
    if args.intrinsics is not None and not args.intrinsics.is_file():
        raise FileNotFoundError(f"--intrinsics {args.intrinsics}: file not found")
    if args.gt is not None:
        check_gt_store(args.gt)
    return args.intrinsics if args.intrinsics is not None else {"hfov_deg": args.hfov_deg}


def _adapted(
    model: torch.nn.Module, clip: Clip, args: argparse.Namespace, s: Settings
) -> tuple[torch.nn.Module, dict | None]:
    """``--adapt STEPS``: the GT-free adapted copy and its summary; else the model as it is."""
    if args.adapt is None:
        return model, None
    from refiner.inference.adapt import adapt  # the training code: only when asked for

    adapted, summary = adapt(model, [clip], adapt_params(args, s, model.p), args.adapt, not args.quiet)
    return adapted.eval(), {"steps": args.adapt, "seconds": summary["seconds"], "gt_read": summary["gt_read"]} | {
        k: summary[k] for k in ("loss_first", "loss_last")
    }


def _writers(args: argparse.Namespace, clip: Clip, s: Settings, tmp: Path, cuts: list[int]) -> dict:
    """The source-resolution writers ``--export`` and ``--stereo`` ask for (besides frames and the review video)."""
    m, K = store_map(clip.dec), source_K(clip.dec)
    writers = {}
    if "zarr" in args.export:
        attrs = {"source_video": str(args.video), "canonical_map": m.to_dict(), "model": str(args.model)}
        writers["zarr"] = source_store(tmp / "depth.zarr", (clip.frames, m.src_height, m.src_width), K, attrs)
    if "ffv1" in args.export:
        lo, hi, mkv = s.infer.min_depth_m, s.infer.max_depth_m, tmp / "depth_16bit.mkv"
        writers["ffv1"] = lambda items: encode_depth_video((d for _, d in items), mkv, clip.fps, lo, hi)
    if args.stereo:
        st = stereo_settings(args)
        sbs = tmp / st.file_name(args.name)
        writers["stereo"] = lambda items: write_stereo_video(
            sbs, source_rgb(clip.dec), items, K[:, 0, 0], st, clip.fps, cuts
        )
    write_intrinsics(tmp / "intrinsics.json", K[0], m.src_width, m.src_height)
    return writers


def refine_video(args: argparse.Namespace, started: Callable[[], None] = lambda: None) -> dict:
    """Everything the command does; returns its summary (also written to ``OUT/outputs.json``). ``started()`` is
    called once the setup (model, settings, the video's hash) is done, before the first stage's progress bar."""
    torch.set_num_threads(args.threads)
    clock, intrinsics = _Clock(), check_inputs(args)
    s = with_overrides(load_settings(args.params), args)
    model, _ = load_refiner(args.model, "cuda" if torch.cuda.is_available() else "cpu")
    if s.decode.size % model.factor:
        raise ValueError(f"--size {s.decode.size} is not a multiple of the model's low-res factor {model.factor}")
    tp = teacher_params(args, s, model.factor)
    with output_folder(args.out) as tmp:
        clock.lap("setup_s")
        key = cache_key(args.video, intrinsics, args.gt, args.stride, s.decode, tp)
        started()
        decoded, teacher, reused = prepare_stores(args, key, intrinsics, s.decode, tp)
        tables = read_json(args.calibration, "calibration") if args.calibration else {}
        clip = Clip(decoded, teacher, calibration_for(tables, teacher, s.teacher.calibration_fallback))
        cuts = [] if args.no_cuts else detect_cuts(clip, not args.quiet)
        clock.lap("decode_teacher_cuts_s")
        model, adapted = _adapted(model, clip, args, s)
        clock.lap("adapt_s")
        canonical = tmp / "refined_canonical.zarr" if "canonical" in args.export else None
        frames = tmp / "frames" if {"npy", "png16"} & set(args.export) else None
        extra = _writers(args, clip, s, tmp, cuts)
        stats = run_infer(
            model,
            clip,
            s,
            canonical,
            frames,
            tmp / "reports",
            not args.quiet,
            extra,
            cuts,
            review="review" in args.export,
        )
        clock.lap("refine_and_write_s")
        summary = summarise(args, s, clip, stats, reused, clock.laps, adapted) | {"cache": str(decoded.parent)}
        summary["outputs"], summary["bytes"] = listing(tmp, args.out)
        summary["outputs"][LISTING] = str(args.out / LISTING)
        write_json(tmp / LISTING, summary)
    return summary


class _Clock:
    """Named wall-clock laps in seconds."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = round(now - self.last, 3), now


def summarise(
    args: argparse.Namespace, s: Settings, clip: Clip, stats: dict, reused: bool, laps: dict, adapted: dict | None
) -> dict:
    """What ran, with which model and teacher, how fast, the scenes and the stereo settings."""
    m, seconds = store_map(clip.dec), sum(laps.values())
    stereo = stats["writers"].get("stereo")
    return {
        "video": str(args.video),
        "frames": clip.frames,
        "source_size_wh": [m.src_width, m.src_height],
        "canonical_size_wh": [m.width, m.height],
        "model": {"path": str(args.model), "adapted": adapted},
        "teacher": str(clip.tea.attrs.get("teacher")),
        "teacher_id": str(clip.tea.attrs.get("teacher_id")),
        "teacher_label": str(clip.tea.attrs.get("teacher_label")),
        "teacher_seed": s.teacher.seed if args.seed is None else args.seed,
        "calibration": {k: clip.calibration[k] for k in ("source", "fitted_on")},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": args.threads,
        "params": s.source,
        "teacher_cache_reused": reused,
        "seconds": round(seconds, 3),
        "frames_per_s": round(clip.frames / seconds, 3),
        "timings_s": laps,
        "scene_cuts": stats["scene_cuts"],
        "drift_rel": stats["drift_rel"],
        "exports": args.export,
        "stereo": None
        if stereo is None
        else {**vars(stereo_settings(args)), "convergence_used_m": stereo["convergence_m"]},
    }


def report(summary: dict) -> str:
    """The lines printed at the end: the run, the model, then every output with its size."""
    (w, h), (cw, ch) = summary["source_size_wh"], summary["canonical_size_wh"]
    cache = "reused" if summary["teacher_cache_reused"] else "written"
    adapted = summary["model"]["adapted"]
    model = summary["model"]["path"] + (
        f", adapted GT-free to this video for {adapted['steps']} steps in {adapted['seconds']:.1f} s (the figures "
        "come from the adapted copy; the file is unchanged)"
        if adapted
        else ""
    )
    cuts = summary["scene_cuts"]
    lines = [
        f"refined {summary['frames']} frames of {summary['video']} ({w}x{h}; canonical {cw}x{ch}; teacher "
        f"{summary['teacher']}, cache {cache}; params {summary['params']}) in {summary['seconds']:.1f} s = "
        f"{summary['frames_per_s']:.2f} frames/s on {summary['device']} ({summary['threads']} torch threads)",
        f"  model: {model}",
        f"  teacher: {summary['teacher_label']}; confidence table: {summary['calibration']['source']}",
        f"  scene cuts at frames {cuts}" if cuts else "  no scene cut",
        "  " + ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items()),
    ]
    for name, path in summary["outputs"].items():
        size = summary["bytes"].get(name)
        lines.append(f"  {name:26s} {path}" + (f"  ({size / 1e6:.2f} MB)" if size is not None else ""))
    return "\n".join(lines)

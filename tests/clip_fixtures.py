"""Tiny clips in the pipeline's real layout (rendered, decoded, simulated teacher, guidance, manifest)."""

from pathlib import Path

from refiner.core.config import load_params
from refiner.data.clip import Clip
from refiner.data.guidance import write_guidance
from refiner.data.ingest import ingest_video
from refiner.data.manifest import calibrate, clip_entry, write_manifest
from refiner.data.synth.clips import render_clip, write_clip
from refiner.teachers.cache import write_teacher_store

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(**sections):
    """params.yaml with sections updated key by key (e.g. ``train={"steps": 2}``)."""
    return load_params(ROOT / "params.yaml").merged(sections)


def make_clip(
    root: Path,
    name: str,
    frames: int = 10,
    size: int = 32,
    static_frames: int = 5,
    seed: int = 0,
    camera_path: str = "dolly",
    factor: int = 4,
    render: tuple[int, int] | None = None,
) -> dict:
    """One clip's stores under ``root/name`` (simulated teacher drawn for ``name``); returns its manifest entry.

    ``render`` = (height, width) renders a non-square source, e.g. (180, 320) for 16:9, which decode maps onto a
    grid with short side ``size`` and the aspect ratio kept (the long side a multiple of ``factor``)."""
    d = root / name
    height, width = render or (size, size)
    clip = render_clip(frames, height, width, 70.0, 0.063, static_frames, seed, camera_path=camera_path)
    write_clip(clip, d / "synth", fps=10, crf=0, baseline_m=0.063)
    ingest_video(
        d / "synth/clip.mp4",
        d / "synth/camera.json",
        d / "decoded.zarr",
        size,
        gt=d / "synth/gt.zarr",
        progress=False,
        multiple=factor,
    )
    teacher = tiny_params(teacher={"low_res_factor": factor}).teacher
    write_teacher_store(d / "decoded.zarr", d / "teacher.zarr", teacher, name, progress=False)
    write_guidance(d / "decoded.zarr", d / "teacher.zarr", d / "guidance.zarr", progress=False)
    return clip_entry(name, str(d / "decoded.zarr"), str(d / "teacher.zarr"), str(d / "guidance.zarr"))


def make_corpus(
    root: Path,
    frames: int = 10,
    size: int = 32,
    static_frames: int = 5,
    factor: int = 4,
    render: tuple[int, int] | None = None,
    clips_dir: str = "clips",
) -> Path:
    """A manifest of two train clips, one val and one test clip (``render``: see :func:`make_clip`), the clips in
    ``root/clips_dir``; returns the manifest folder."""
    plan = {
        "train": [("tr_a", 1, "dolly"), ("tr_b", 2, "pan")],
        "val": [("va", 3, "forward")],
        "test": [("te", 4, "orbit")],
    }

    def clips(c: list) -> list[dict]:
        at = root / clips_dir
        return [make_clip(at, n, frames, size, static_frames, seed, p, factor, render) for n, seed, p in c]

    splits = {s: clips(c) for s, c in plan.items()}
    write_manifest(root / "manifest", *calibrate(splits, 10, "self"))
    return root / "manifest"


def open_entry(entry: dict, calibration: dict | None = None) -> Clip:
    return Clip(entry["decoded"], entry["teacher"], calibration, entry["guidance"])

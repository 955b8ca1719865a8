"""What refiner-video runs with: the params.yaml sections it reads, and the command line's changes to them.

Windows, infer, teacher, decode and stereo settings come from ``--params``, else the repository's params.yaml
next to this package, else the packaged ``refiner/app/defaults.yaml``; the model's own params and low-res factor come
from the checkpoint. ``--adapt`` also needs the train, loss and adapt sections, so it reads a whole params.yaml.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from refiner.app import FAST_OVERLAP
from refiner.core.config import (
    DecodeParams,
    InferParams,
    ModelParams,
    Params,
    StereoParams,
    TeacherParams,
    WindowParams,
    load_params,
)
from refiner.core.plugins import is_teacher_name, unknown_teacher
from refiner.geometry.vr_stereo import StereoSettings

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
DEFAULTS = Path(__file__).with_name("defaults.yaml")
SECTIONS = {
    "decode": DecodeParams,
    "windows": WindowParams,
    "infer": InferParams,
    "teacher": TeacherParams,
    "stereo": StereoParams,
}


@dataclass(frozen=True)
class Settings:
    """The params.yaml sections the command reads (``run_infer`` takes it as its params), and where from."""

    decode: DecodeParams
    windows: WindowParams
    infer: InferParams
    teacher: TeacherParams
    stereo: StereoParams
    source: str


def params_path(path: Path | None) -> Path:
    """``--params``, else the repository's params.yaml, else the packaged defaults."""
    return path or (REPO_PARAMS if REPO_PARAMS.is_file() else DEFAULTS)


def load_settings(path: Path | None) -> Settings:
    """The sections from :func:`params_path` (validated)."""
    path = params_path(path)
    if path == DEFAULTS:
        raw = yaml.safe_load(DEFAULTS.read_text())
        return Settings(**{k: cls(**raw[k]) for k, cls in SECTIONS.items()}, source=str(path))
    params = load_params(path)
    return Settings(**{k: getattr(params, k) for k in SECTIONS}, source=str(path))


def with_overrides(s: Settings, args: argparse.Namespace) -> Settings:
    """The command line's decode options, per-frame exports (``--export npy,png16``) and ``--fast``."""
    decode = s.decode.replace(size=args.size or s.decode.size, crop=args.crop or s.decode.crop)
    infer = s.infer.replace(export_npy="npy" in args.export, export_png16="png16" in args.export)
    fast = min(FAST_OVERLAP, s.windows.inference_overlap)
    windows = s.windows.replace(inference_overlap=fast) if args.fast else s.windows
    return Settings(decode, windows, infer, s.teacher, s.stereo, s.source)


def teacher_params(args: argparse.Namespace, s: Settings, factor: int) -> TeacherParams:
    """The teacher to run (its low-res factor is the model's, its seed ``--seed``); an unknown name fails here,
    before decoding."""
    if not (is_teacher_name(args.teacher) or args.teacher in s.teacher.profiles):
        raise ValueError(f"--teacher: {unknown_teacher(args.teacher)}")
    p = s.teacher.resolve(args.teacher).replace(low_res_factor=factor)
    if args.unidepth_weights is not None:
        p = p.replace(unidepth_weights=str(args.unidepth_weights))
    return p if args.seed is None else p.replace(seed=args.seed)


def adapt_params(args: argparse.Namespace, s: Settings, model_params: ModelParams) -> Params:
    """The whole params for ``--adapt`` (its train, loss and adapt sections), with the command line's windows and
    the checkpoint's model params; one line when only the packaged defaults are at hand."""
    path = params_path(args.params)
    if path == DEFAULTS:
        raise ValueError(
            "--adapt needs the train, loss and adapt sections of a params.yaml, and none was found next to the "
            "package; pass --params path/to/params.yaml (the repository's)"
        )
    windows, model = s.windows.model_dump(mode="json"), model_params.model_dump(mode="json")
    return load_params(path).merged({"windows": windows, "model": model})


def stereo_settings(args: argparse.Namespace) -> StereoSettings:
    """``--stereo-format``, ``--ipd-mm`` (default 63), ``--convergence-m``, ``--max-disparity``."""
    ipd_m = 0.063 if args.ipd_mm is None else args.ipd_mm / 1000
    return StereoSettings(args.stereo_format, ipd_m, args.convergence_m, args.max_disparity)

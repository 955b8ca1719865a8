"""refiner-video: refine any video into temporally stable metric depth, and stereo for VR, in one command.

    refiner-video VIDEO --out DIR (--intrinsics cam.json | --hfov-deg 70) [--stereo] [--export zarr,ffv1,...]

Only the command line is read here (argparse, no torch or Zarr, so ``--help`` answers at once); the run itself is
:func:`refiner.app.video_run.refine_video`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from refiner.app import FAST_OVERLAP
from refiner.core.plugins import registered

DEFAULT_TEACHER = "learned"  # runs on any video with no other file (refiner/teachers/learned.py)
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models/pretrained/refiner.safetensors"
EXPORTS = {
    "zarr": "depth.zarr: the whole clip at source resolution, float32 metres, with K",
    "ffv1": "depth_16bit.mkv: 16-bit lossless depth video (FFV1 gray16, log encoding)",
    "npy": "frames/depth_*.npy: float32 metres per frame",
    "png16": "frames/depth_*.png: 16-bit PNG per frame (log encoding)",
    "review": "reports/side_by_side.mp4: teacher | refined (| GT) depth, coloured",
    "canonical": "refined_canonical.zarr: refined depth on the canonical grid (what evaluate reads)",
}
DEFAULT_EXPORT = "zarr"
STEREO_FORMATS = ("full-sbs", "half-sbs", "tb")  # refiner.geometry.vr_stereo.FORMATS
THREADS = 1  # torch threads of the refiner (README, "Threads"): steady under load; writers use the other cores


class CommandLineError(ValueError):
    """A wrong command line, reported as one line like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage and exits 2; we raise one line instead
        raise CommandLineError(f"{message}; see refiner-video --help")


def _exports(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: use a comma-separated list of {', '.join(EXPORTS)}")
    return list(dict.fromkeys(names))


def _convergence(text: str) -> float | None:
    if text == "auto":
        return None
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, inf or a distance in metres > 0")
    return value


def _fraction(text: str) -> float | None:
    if text == "none":
        return None
    value = float(text)
    if not 0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"{text!r}: use none or a fraction of the width in (0, 0.5], e.g. 0.03")
    return value


def _required(ap: argparse.ArgumentParser) -> None:
    req = ap.add_argument_group("required")
    req.add_argument("video", type=Path, help="any video FFmpeg reads")
    req.add_argument("--out", type=Path, required=True, help="output folder (holds exactly this run's outputs)")
    cam = req.add_mutually_exclusive_group(required=True)
    cam.add_argument("--intrinsics", type=Path, help="the camera: JSON/YAML with fx, fy, cx, cy in pixels of the video")
    cam.add_argument("--hfov-deg", type=float, help="or the horizontal field of view in degrees (centred pinhole)")


def _model_options(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("model and teacher")
    g.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="refiner checkpoint (default: the packaged one)")
    g.add_argument(
        "--teacher",
        default=DEFAULT_TEACHER,
        help=f"a registered teacher ({', '.join(registered())}), a teacher.profiles entry of the params, or "
        f"module:attr of a teacher factory (default: {DEFAULT_TEACHER})",
    )
    g.add_argument("--gt", type=Path, help="ground-truth Zarr store (the simulated teacher needs one; README)")
    g.add_argument("--unidepth-weights", type=Path, help="UniDepthV2 folder (config.json + model.safetensors)")
    g.add_argument("--seed", type=int, help="the simulated teacher's seed (default teacher.seed); see README")
    g.add_argument(
        "--adapt",
        type=int,
        metavar="STEPS",
        help="first fine-tune a copy of the model GT-free on this "
        "video's own teacher outputs for STEPS steps (the model file is never written)",
    )
    g.add_argument("--calibration", type=Path, help="calibration.json of a train split (default: the fallback)")


def _output_options(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("outputs and stereo for VR")
    g.add_argument(
        "--export",
        type=_exports,
        default=_exports(DEFAULT_EXPORT),
        help="comma-separated, any of: "
        + "; ".join(f"{k} ({v})" for k, v in EXPORTS.items())
        + f" (default: {DEFAULT_EXPORT})",
    )
    g.add_argument("--stereo", action="store_true", help="write the stereo video for VR players")
    g.add_argument(
        "--stereo-format",
        choices=STEREO_FORMATS,
        help="full-sbs (default), half-sbs or tb; implies "
        "--stereo; the file name ends in _LRF_Full_SBS, _Half_SBS or _TB",
    )
    g.add_argument("--ipd-mm", type=float, help="eye separation in millimetres (default 63)")
    g.add_argument(
        "--convergence-m",
        type=_convergence,
        default=None,
        metavar="M|auto|inf",
        help="zero-parallax distance in metres (default auto: the smoothed central depth)",
    )
    g.add_argument(
        "--max-disparity",
        type=_fraction,
        default=0.03,
        metavar="FRACTION|none",
        help="comfort limit on disparity as a fraction of the width, compressed smoothly (default 0.03)",
    )


def _run_options(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("processing")
    g.add_argument("--size", type=int, help="canonical short side S (default: decode.size)")
    g.add_argument("--crop", action="store_true", help="S x S centre crop instead of the whole frame")
    g.add_argument("--stride", type=int, default=1, help="keep every k-th frame")
    g.add_argument("--fast", action="store_true", help=f"windows overlap by {FAST_OVERLAP} frames (faster, more TAE)")
    g.add_argument("--no-cuts", action="store_true", help="do not detect scene cuts (one scene)")
    g.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    g.add_argument("--name", help="clip name in file names (default: the video's file name without extension)")
    g.add_argument("--params", type=Path, help="params.yaml to read (default: the repository's, else defaults)")
    g.add_argument("--cache", type=Path, help="cache folder (default: $REFINER_CACHE or ~/.cache/refiner)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; one line (:class:`CommandLineError`) naming the option at fault."""
    ap = _Parser(prog="refiner-video", description=__doc__.split("\n\n")[0])
    for add in (_required, _model_options, _output_options, _run_options):
        add(ap)
    args = ap.parse_args(argv)
    args.name = args.name or args.video.stem
    stereo_only = [o for o, v in (("--ipd-mm", args.ipd_mm), ("--convergence-m", args.convergence_m)) if v is not None]
    args.stereo = args.stereo or args.stereo_format is not None
    if stereo_only and not args.stereo:
        raise CommandLineError(f"{stereo_only[0]} shapes the stereo video only; add --stereo")
    args.stereo_format = args.stereo_format or "full-sbs"
    checks = [
        ("--stride", args.stride, args.stride >= 1, "an integer >= 1 (keep every k-th frame)"),
        (
            "--size",
            args.size,
            args.size is None or (16 <= args.size <= 4096 and args.size % 2 == 0),
            "an even integer in [16, 4096] (the canonical short side, pixels)",
        ),
        ("--ipd-mm", args.ipd_mm, args.ipd_mm is None or 0 < args.ipd_mm <= 1000, "millimetres in (0, 1000]"),
        ("--adapt", args.adapt, args.adapt is None or args.adapt >= 1, "an integer >= 1 (steps)"),
        ("--threads", args.threads, args.threads >= 1, "an integer >= 1"),
        ("--hfov-deg", args.hfov_deg, args.hfov_deg is None or 0 < args.hfov_deg < 180, "degrees in (0, 180)"),
    ]
    for option, value, ok, allowed in checks:
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise CommandLineError(f"{option} {value} is invalid; allowed: {allowed}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``refiner-video``: one line ``error: ...`` and exit status 1 on any failure."""
    from refiner.core.errors import run_stage

    def run() -> None:
        from refiner.core.progress import Progress

        args = parse_args(argv)
        starting = Progress(None, "starting: torch, the model, the cache key", lambda: 0, not args.quiet)
        with starting:  # a second or more of imports and hashing: the heartbeat shows it is alive
            from refiner.app.video_run import refine_video, report  # torch, Zarr: only once the command line is right

            summary = refine_video(args, started=starting.finish)
        print(report(summary))

    run_stage(run)


if __name__ == "__main__":
    main()

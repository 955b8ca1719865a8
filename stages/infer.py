"""Stage infer (per test clip): windowed refinement into a Zarr store, exports, side-by-side video, drift."""

import sys

import torch

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.data.clip import open_clip
from refiner.inference.infer import run_infer
from refiner.training.checkpoint import load_refiner


def main() -> None:
    name, manifest, model_path, out, frames_dir, reports = sys.argv[1:7]
    clip, _ = open_clip(manifest, name)
    model, _ = load_refiner(model_path, "cuda" if torch.cuda.is_available() else "cpu")
    stats = run_infer(model, clip, load_params(), out, frames_dir, reports)
    print(f"{name}: refined {stats['frames']} frames in {stats['windows']} windows; drift {stats['drift_rel']:+.2%}")


if __name__ == "__main__":
    run_stage(main)

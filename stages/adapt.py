"""Stage adapt (per test clip): a clip listed in adapt.clips is refined a second time, by a copy of the trained
refiner fine-tuned on that clip's own teacher outputs (GT-free test-time adaptation, refiner/inference/adapt.py); its
figures are reported as the method refiner_adapt. A clip not listed gets a note saying so."""

import sys
from pathlib import Path

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.core.store import atomic_path, write_json


def main() -> None:
    name, manifest, model_path, out, metrics_path = sys.argv[1:6]
    params = load_params()
    if name not in params.adapt.clips or params.adapt.steps == 0:
        with atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / "NOT_ADAPTED").write_text(f"{name} is not in adapt.clips (or adapt.steps is 0)\n")
        write_json(metrics_path, {"adapted": False})
        return
    from refiner.inference.adapt import adapt_and_refine  # torch only where a clip is adapted

    summary = adapt_and_refine(name, manifest, model_path, Path(out), params)
    write_json(metrics_path, {"adapted": True, **summary})
    print(f"{name}: adapted for {summary['steps']} steps in {summary['seconds']:.1f} s (GT-free), refined again")


if __name__ == "__main__":
    run_stage(main)

"""Stage synth (per clip): render a synthetic clip (a stand-in with ground truth) into OUT_DIR, or, for a clip
of real data, record where its source lives (OUT_DIR/source.json): decode reads it from there."""

import sys

from refiner.config import load_params
from refiner.errors import run_stage
from refiner.store import write_json
from refiner.synth import render_to


def main() -> None:
    name, out_dir = sys.argv[1:3]
    corpus = load_params().corpus
    spec = corpus.clips[name]
    if spec.kind != "synthetic":
        write_json(f"{out_dir}/source.json", {"kind": spec.kind, "source": spec.source, "synthetic": False})
        print(f"{name}: {spec.kind} clip read from {spec.source} (nothing to render)")
        return
    s = corpus.synthetic_spec(name)
    render_to(out_dir, s, spec.seed, progress=True)
    write_json(f"{out_dir}/source.json", {"kind": "synthetic", "seed": spec.seed, "synthetic": True})


if __name__ == "__main__":
    run_stage(main)

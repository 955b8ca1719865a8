"""Stage manifest: one JSON per split of the corpus (train, val, test), each clip with the calibration table it
uses, and the per-teacher tables fitted on the train split."""

import sys

from refiner.core.config import load_params
from refiner.core.errors import run_stage
from refiner.data.manifest import SPLITS, calibrate, clip_entry, write_manifest
from refiner.data.shards import read_prepared


def main() -> None:
    prepared_dir, out_dir = sys.argv[1:3]
    params = load_params()
    corpus = params.corpus
    stores = read_prepared(prepared_dir, list(corpus.clips), len(params.prepare.shards))

    def entry(name: str) -> dict:
        s = stores[name]
        return clip_entry(name, s["decoded"], s["teacher"], s["guidance"], s["digest"])

    splits = {split: [entry(n) for n in corpus.names(split)] for split in SPLITS}
    tp = params.teacher
    write_manifest(out_dir, *calibrate(splits, tp.calibration_bins, tp.calibration_fallback))
    for split, clips in splits.items():
        print(f"{split}: {len(clips)} clips, {sum(c['frames'] for c in clips)} frames")


if __name__ == "__main__":
    run_stage(main)

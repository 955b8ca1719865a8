"""Stage decode (per clip): the clip's video or data set → canonical frames in a Zarr store, intrinsics and GT alike."""

import sys

from refiner.adapters import ingest
from refiner.config import load_params
from refiner.errors import run_stage


def main() -> None:
    name, synth_dir, out = sys.argv[1:4]
    params = load_params()
    spec = params.corpus.clips[name]
    if spec.kind == "synthetic":
        source, kind = f"{synth_dir}/clip.mp4", "video"
        options = {
            "intrinsics": f"{synth_dir}/camera.json",
            "gt": f"{synth_dir}/gt.zarr",
            "dataset_name": "synthetic",
            "scene_id": name,
        }
    elif spec.kind == "video":
        source, kind, options = spec.source, "video", {"intrinsics": spec.intrinsics, "gt": spec.gt, "scene_id": name}
    else:
        source, kind, options = spec.source, spec.kind, {"intrinsics": spec.camera}
    grid = {"multiple": params.teacher.low_res_factor, "crop": params.decode.crop}
    n = ingest(kind, source, out, params.decode.size, stride=spec.stride, **grid, **options)
    print(f"{name}: decoded {n} frames of {source} to {out}")


if __name__ == "__main__":
    run_stage(main)

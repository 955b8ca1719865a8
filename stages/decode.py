"""Stage decode: a video or data set -> canonical S x S frames in a Zarr store, intrinsics and GT alike."""

from refiner.adapters import ingest
from refiner.config import load_params

OUT = "data/decoded/clip.zarr"


def main() -> None:
    p = load_params().decode
    if p.source_kind == "video":
        options = {"intrinsics": p.intrinsics, "gt": p.gt}
    else:
        options = {"intrinsics": p.camera}
        print(f"source_kind={p.source_kind}: camera and ground truth come from {p.video}; decode.intrinsics/gt unused")
    n = ingest(p.source_kind, p.video, OUT, p.size, stride=p.stride, **options)
    print(f"decoded {n} frames to {OUT}")


if __name__ == "__main__":
    main()

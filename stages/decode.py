"""Stage decode: video -> canonical S x S frames in a Zarr store, intrinsics and GT following the resize/pad."""

from refiner.config import load_params
from refiner.ingest import ingest_video


def main() -> None:
    p = load_params().decode
    n = ingest_video(p.video, p.intrinsics, "data/decoded/clip.zarr", size=p.size, stride=p.stride, gt=p.gt)
    print(f"decoded {n} frames to data/decoded/clip.zarr")


if __name__ == "__main__":
    main()

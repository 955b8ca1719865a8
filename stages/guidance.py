"""Stage guidance: RGB/depth/uncertainty edge and gradient maps per frame into Zarr."""

from refiner.guidance import write_guidance


def main() -> None:
    n = write_guidance("data/decoded/clip.zarr", "data/teacher/clip.zarr", "data/guidance/clip.zarr")
    print(f"guidance maps for {n} frames in data/guidance/clip.zarr")


if __name__ == "__main__":
    main()

"""Stage guidance (per clip): RGB/depth/uncertainty edge and gradient maps per frame into Zarr."""

import sys

from refiner.errors import run_stage
from refiner.guidance import write_guidance


def main() -> None:
    decoded, teacher, out = sys.argv[1:4]
    n = write_guidance(decoded, teacher, out)
    print(f"guidance maps for {n} frames in {out}")


if __name__ == "__main__":
    run_stage(main)

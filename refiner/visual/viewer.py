"""Look at a clip: a PNG grid of RGB / teacher depth / uncertainty (/ GT) for chosen frames, with colour bars.

    python -m refiner.visual.viewer --decoded data/clips/0/room_a/decoded.zarr \
        --teacher data/clips/0/room_a/teacher.zarr --frames 0 16 32 --out view.png [--video view.mp4]

Depth panels share one log-scaled colour range (near = red) so teacher and GT compare directly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402

from refiner.core.store import atomic_path, open_group  # noqa: E402
from refiner.visual.export import log_depth_range  # noqa: E402
from refiner.visual.videos import write_teacher_video  # noqa: E402


def view_grid(decoded: str | Path, teacher: str | Path, frames: list[int], out: str | Path) -> None:
    """Write the PNG grid (one row per frame) atomically."""
    dec, tea = open_group(decoded, ("rgb",), "decoded clip store"), open_group(teacher, ("depth",), "teacher store")
    total = dec["rgb"].shape[0]
    frames = [t for t in frames if 0 <= t < total] or [0]
    has_gt = "depth_gt" in dec
    cols = ["RGB", "teacher depth (m)", "teacher uncertainty"] + (["GT depth (m)"] if has_gt else [])
    depth0 = np.asarray(tea["depth"][frames[0]])
    lo, hi = np.exp(log_depth_range(depth0))
    fig, axes = plt.subplots(len(frames), len(cols), figsize=(3.2 * len(cols), 3 * len(frames)), squeeze=False)
    for r, t in enumerate(frames):
        panels = [np.asarray(dec["rgb"][t]), np.asarray(tea["depth"][t]), np.asarray(tea["uncertainty"][t])]
        if has_gt:
            panels.append(np.asarray(dec["depth_gt"][t]))
        for c, (title, img) in enumerate(zip(cols, panels, strict=True)):
            ax = axes[r][c]
            ax.set_axis_off()
            ax.set_title(f"{title}, frame {t}", fontsize=9)
            if c == 0:
                ax.imshow(img)
                continue
            masked = np.ma.masked_less_equal(img, 0)
            if "uncertainty" in title:
                im = ax.imshow(masked, cmap="magma", norm=LogNorm(*np.percentile(img[img > 0], [2, 98])))
            else:
                im = ax.imshow(masked, cmap="turbo_r", norm=LogNorm(lo, hi))
            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 2, 3, 0.01: not 2x10^0
            if "uncertainty" not in title:  # depth spans about a decade: label the minor ticks too
                bar.ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    fig.suptitle(str(tea.attrs.get("teacher_label", tea.attrs.get("teacher"))))
    fig.subplots_adjust(left=0.01, right=0.95, bottom=0.02, top=0.9, wspace=0.3, hspace=0.25)  # tight_layout: 1 s more
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PNG grid (and optional mp4) of RGB, teacher depth, uncertainty, GT")
    parser.add_argument("--decoded", required=True, help="e.g. data/clips/0/room_a/decoded.zarr")
    parser.add_argument("--teacher", required=True, help="e.g. data/clips/0/room_a/teacher.zarr")
    parser.add_argument("--frames", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="reports/teacher/view.png")
    parser.add_argument("--video", default=None, help="also write this mp4")
    args = parser.parse_args(argv)
    view_grid(args.decoded, args.teacher, args.frames, args.out)
    if args.video:
        write_teacher_video(args.decoded, args.teacher, args.video)
    print(f"wrote {args.out}" + (f" and {args.video}" if args.video else ""))


if __name__ == "__main__":
    main()

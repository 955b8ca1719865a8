"""Stage synth: render the embedded default clip (a synthetic stand-in with ground truth)."""

from refiner.config import load_params
from refiner.synth import render_clip, write_clip


def main() -> None:
    p = load_params().synth
    clip = render_clip(p.frames, p.height, p.width, p.fov_deg, p.baseline_m, p.static_frames, p.seed, progress=True)
    write_clip(clip, "data/synth", fps=p.fps, crf=p.crf, baseline_m=p.baseline_m)


if __name__ == "__main__":
    main()

"""Stage stereo: right-eye rendering checks per depth source, and a side-by-side VR mp4 of the refined depth."""

from refiner.config import load_params
from refiner.stereo import sbs_video, stereo_report, stereo_sources
from refiner.store import write_csv, write_json


def main() -> None:
    params = load_params()
    decoded = "data/decoded/clip.zarr"
    sources = stereo_sources(decoded, "data/teacher/clip.zarr", "data/infer/clip.zarr", params.evaluate)
    metrics, rows = stereo_report(decoded, sources, params.stereo)
    write_json("reports/stereo/metrics.json", metrics)
    write_csv("reports/stereo/disparity.csv", rows)
    sbs_video(decoded, sources["refiner"], "reports/stereo/stereo_sbs.mp4", params.stereo)
    for name in sources:
        m = metrics[name]
        print(f"{name:10s} jitter {m.get('disparity_jitter_px', float('nan')):.4f} px, pops {m.get('temporal_pops')}")


if __name__ == "__main__":
    main()

"""Stage manifest: data/manifest.json listing the clip's stores and arrays."""

from refiner.manifest import clip_entry, write_manifest


def main() -> None:
    clip = clip_entry("data/decoded/clip.zarr", "data/teacher/clip.zarr", "data/guidance/clip.zarr")
    write_manifest("data/manifest.json", [clip])
    print(f"manifest: {clip['dataset_name']}/{clip['scene_id']}, {clip['frames']} frames, has_gt={clip['has_gt']}")


if __name__ == "__main__":
    main()

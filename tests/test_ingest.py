import json

import numpy as np
import pytest
import zarr

from refiner.ingest import ingest_video, load_intrinsics
from refiner.store import StoreError
from refiner.synth import render_clip, write_clip
from refiner.video import VideoError, decode_frames, encode_mp4


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    clip = render_clip(6, 48, 64, 70.0, 0.063, 3, seed=1)
    write_clip(clip, out, fps=12, crf=0, baseline_m=0.063)
    return out, clip


def test_mp4_round_trip_within_codec_tolerance(synth_dir):
    src, clip = synth_dir  # written with crf=0; 4:2:0 chroma subsampling is the only loss
    back = np.stack(list(decode_frames(src / "clip.mp4")))
    assert back.shape == clip.rgb.shape and back.dtype == np.uint8
    err = np.abs(back.astype(int) - clip.rgb.astype(int))
    assert err.mean() < 4.0 and np.percentile(err, 99) < 30
    assert len(list(decode_frames(src / "clip.mp4", stride=4))) == 2


def test_ingest_synth_clip_keeps_metric_depth_and_intrinsics(synth_dir, tmp_path):
    src, clip = synth_dir
    n = ingest_video(src / "clip.mp4", src / "camera.json", tmp_path / "c.zarr", 32, gt=src / "gt.zarr", progress=False)
    assert n == 6
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert g["rgb"].shape == (6, 32, 32, 3) and g["rgb"].chunks == (1, 32, 32, 3)
    assert g["depth_gt"].shape == (6, 32, 32)
    # 48x64 -> 43x32 -> centre crop of 11 px: 6 on the left, 5 on the right
    m = g.attrs["canonical_map"]
    assert (m["scaled_width"], m["offset_x"]) == (43, -6)
    K = g["K"][0]
    K0 = clip.K
    assert K[0, 0] == pytest.approx(K0[0, 0] * 43 / 64)
    assert K[0, 2] == pytest.approx(43 / 64 * (K0[0, 2] + 0.5) - 0.5 - 6)
    # depth values are copied from the source (nearest), never blended
    assert np.isin(g["depth_gt"][2], clip.depth[2]).all()
    assert g["poses"].shape == (6, 4, 4)


def test_ingest_stride_and_frame_mismatch(synth_dir, tmp_path):
    src, _ = synth_dir
    n = ingest_video(
        src / "clip.mp4", src / "camera.json", tmp_path / "s.zarr", 32, 2, gt=src / "gt.zarr", progress=False
    )
    assert n == 3
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["depth_gt"].shape[0] == 3
    short = tmp_path / "short.mp4"
    encode_mp4(np.zeros((4, 48, 64, 3), np.uint8), short, fps=12)
    with pytest.raises(StoreError, match="6 frames"):
        ingest_video(short, src / "camera.json", tmp_path / "bad.zarr", size=32, gt=src / "gt.zarr", progress=False)
    assert not (tmp_path / "bad.zarr").exists()  # nothing half-written


def test_bad_inputs_fail_clearly(tmp_path, synth_dir):
    src, _ = synth_dir
    with pytest.raises(VideoError, match="not found"):
        list(decode_frames(tmp_path / "missing.mp4"))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 not a video" * 100)
    with pytest.raises(VideoError, match="corrupt.mp4"):
        ingest_video(corrupt, src / "camera.json", tmp_path / "x.zarr", size=32, progress=False)
    bad_k = tmp_path / "k.json"
    bad_k.write_text(json.dumps({"fx": 10}))
    with pytest.raises(ValueError, match="hfov_deg"):
        load_intrinsics(bad_k, 64, 48)
    bad_k.write_text(json.dumps({"fx": 10, "fy": 10, "cx": 5, "cy": 5, "width": 32, "height": 24}))
    with pytest.raises(ValueError, match="32x24"):
        load_intrinsics(bad_k, 64, 48)
    fov = tmp_path / "fov.yaml"
    fov.write_text("hfov_deg: 90\n")
    assert load_intrinsics(fov, 64, 48)[0, 0] == pytest.approx(32.0)

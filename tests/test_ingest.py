import json
import re

import numpy as np
import pytest
import zarr

from refiner.core.store import StoreError
from refiner.core.video import VideoError, decode_frames, encode_mp4
from refiner.data.ingest import ingest_video, load_intrinsics, resolve_intrinsics
from refiner.data.synth.clips import render_clip, write_clip


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
    # 48x64 -> the whole frame, short side 32: 32 x 42.7 -> 43 (multiple 1), nothing cropped
    assert g["rgb"].shape == (6, 32, 43, 3) and g["rgb"].chunks == (1, 32, 43, 3)
    assert g["depth_gt"].shape == (6, 32, 43)
    m = g.attrs["canonical_map"]
    assert (m["scaled_width"], m["offset_x"], m["width"], m["height"]) == (43, 0, 43, 32)
    K = g["K"][0]
    K0 = clip.K
    assert K[0, 0] == pytest.approx(K0[0, 0] * 43 / 64) and K[1, 1] == pytest.approx(K0[1, 1] * 32 / 48)
    assert K[0, 2] == pytest.approx(43 / 64 * (K0[0, 2] + 0.5) - 0.5)
    # depth values are copied from the source (nearest), never blended
    assert np.isin(g["depth_gt"][2], clip.depth[2]).all()
    assert g["poses"].shape == (6, 4, 4)


def test_ingest_crop_and_multiple(synth_dir, tmp_path):
    src, clip = synth_dir
    ingest_video(src / "clip.mp4", {"hfov_deg": 70}, tmp_path / "m.zarr", 32, multiple=4, progress=False)
    assert zarr.open_group(str(tmp_path / "m.zarr"), mode="r")["rgb"].shape == (6, 32, 44, 3)
    ingest_video(
        src / "clip.mp4", src / "camera.json", tmp_path / "c.zarr", 32, gt=src / "gt.zarr", crop=True, progress=False
    )
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert g["rgb"].shape == (6, 32, 32, 3) and g["depth_gt"].shape == (6, 32, 32)
    # 48x64 -> 43x32 -> centre crop of 11 px: 6 on the left, 5 on the right
    m = g.attrs["canonical_map"]
    assert (m["scaled_width"], m["offset_x"]) == (43, -6)
    assert g["K"][0][0, 2] == pytest.approx(43 / 64 * (clip.K[0, 2] + 0.5) - 0.5 - 6)


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


GOOD_K = {"fx": 300.0, "fy": 300.0, "cx": 160.0, "cy": 120.0}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"hfov_deg": 179.999}, r"hfov_deg = 179\.999 is invalid; allowed: degrees in \(1, 170\)"),
        ({"hfov_deg": 180}, r"hfov_deg = 180 is invalid"),
        ({"hfov_deg": 1}, r"hfov_deg = 1 is invalid"),
        ({"hfov_deg": "wide"}, r"hfov_deg = 'wide' is not a finite number; write it in degrees"),
        ({**GOOD_K, "fx": True}, r"fx = True is not a finite number"),
        ({**GOOD_K, "fx": "abc"}, r"fx = 'abc' is not a finite number; write it in pixels"),
        ({**GOOD_K, "fy": None}, r"fy = None is not a finite number"),
        ({**GOOD_K, "fx": float("nan")}, r"fx = 'NaN' is not a finite number"),  # JSON NaN: text to YAML
        ({**GOOD_K, "fx": 0}, r"focal lengths must be finite and positive \(pixels\), got fx = 0$"),
        ({**GOOD_K, "fy": -300}, r"focal lengths must be finite and positive \(pixels\), got fy = -300"),
        ({**GOOD_K, "cx": 5000}, r"cx = 5000 is invalid; allowed: \[0, 320\] \(the principal point lies inside"),
        ({**GOOD_K, "cy": -1}, r"cy = -1 is invalid; allowed: \[0, 240\]"),
        ({**GOOD_K, "fx": 1e12}, r"fx / fy = 3\.33333e\+09 is invalid; allowed: \[0\.05, 20\]"),
        ({**GOOD_K, "fy": 1e12}, r"fx / fy = 3e-10 is invalid"),
        ({**GOOD_K, "width": 320}, r"width is given without height; give both"),
        ({**GOOD_K, "height": 240}, r"height is given without width"),
        ({**GOOD_K, "width": 320.0, "height": 240}, r"width = 320\.0, height = 240 is invalid; allowed: positive int"),
        ({**GOOD_K, "width": 640, "height": 480}, r"intrinsics are for 640x480 but the images are 320x240; scale fx"),
        ({"fx": 300, "fy": 300}, r"intrinsics lack cx, cy; give fx, fy, cx, cy \(pixels\) or hfov_deg"),
        ({**GOOD_K, "hfov_deg": 60}, r"give either fx, fy, cx, cy or hfov_deg, not both"),
        ([1, 2, 3], r"intrinsics must be a mapping"),
    ],
)
def test_intrinsics_are_strict_and_name_file_and_key(tmp_path, data, match):
    f = tmp_path / "camera.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(f))}: {match}"):
        load_intrinsics(f, 320, 240)


def test_good_intrinsics(tmp_path):
    f = tmp_path / "camera.yaml"
    f.write_text("fx: 3e2\nfy: 300\ncx: 160\ncy: 120\nwidth: 320\nheight: 240\n")  # YAML 1.1 reads 3e2 as text
    K = load_intrinsics(f, 320, 240)
    assert K.tolist() == [[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]]
    f.write_text("hfov_deg: 169.9\n")
    assert 0 < load_intrinsics(f, 320, 240)[0, 0] < 15
    assert resolve_intrinsics({**GOOD_K, "cx": 0, "cy": 240}, 320, 240, "override")[1, 2] == 240
    with pytest.raises(ValueError, match=r"^decode override: cx = -5 is invalid"):
        resolve_intrinsics({**GOOD_K, "cx": -5}, 320, 240, "decode override")


def test_a_clip_camera_from_params_is_an_intrinsics_override():
    from refiner.core.params_corpus import CameraSpec

    K = resolve_intrinsics(CameraSpec(fx=300, fy=310, cx=160, cy=120), 320, 240, "corpus.clips.x.camera")
    assert K[0, 0] == 300 and K[1, 1] == 310

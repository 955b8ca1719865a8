"""Bad input fails with a clear error naming the file and the fix, and never leaves a half-written output."""

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import zarr
from PIL import Image

from refiner.core.config import ConfigError, load_params, params_from_dict
from refiner.core.store import StoreError, open_group
from refiner.core.video import VideoError
from refiner.data.adapters import ingest
from refiner.data.ingest import ingest_video
from refiner.data.prepare import ClipPaths, run_steps
from refiner.data.shards import plan_of
from refiner.data.synth.clips import render_clip, write_clip
from tests.adapter_fixtures import write_h5, write_hypersim, write_tum

CAM = {"fx": 30.0, "fy": 30.0, "cx": 15.5, "cy": 11.5}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_clip(render_clip(4, 24, 32, 70.0, 0.063, 2, seed=3), out, fps=8, crf=0, baseline_m=0.063)
    return out


def _fails(out, exc, match, fn, *args, **kwargs):
    """``fn`` raises ``exc`` matching ``match`` and leaves neither ``out`` nor a temporary sibling."""
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
    assert not out.exists()
    assert not out.parent.exists() or not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# --- video (decode stage, source_kind video) ---


def test_missing_garbage_and_empty_video(tmp_path, synth):
    out = tmp_path / "c.zarr"
    cam = synth / "camera.json"
    _fails(
        out,
        VideoError,
        r"missing\.mp4: video not found; check corpus\.clips\.<name>\.source",
        ingest_video,
        tmp_path / "missing.mp4",
        cam,
        out,
        16,
    )
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    _fails(out, VideoError, r"garbage\.mp4: not a readable video .*re-encode", ingest_video, garbage, cam, out, 16)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((synth / "clip.mp4").read_bytes()[:600])
    _fails(out, VideoError, r"truncated\.mp4", ingest_video, truncated, cam, out, 16)
    empty = tmp_path / "empty.mp4"  # a container with a video stream but zero frames
    with av.open(str(empty), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(8))
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        c.start_encoding()
    _fails(out, VideoError, r"empty\.mp4: holds no video stream \(no frames\)", ingest_video, empty, cam, out, 16)


def test_bad_intrinsics_file(tmp_path, synth):
    out = tmp_path / "c.zarr"
    bad = tmp_path / "cam.yaml"
    bad.write_text("fx: [1, 2\n")
    _fails(
        out,
        ValueError,
        r"cam\.yaml: intrinsics file is not valid JSON/YAML",
        ingest_video,
        synth / "clip.mp4",
        bad,
        out,
        16,
    )
    bad.write_text(json.dumps({"fx": -3, "fy": 3, "cx": 1, "cy": 1}))
    _fails(
        out,
        ValueError,
        r"cam\.yaml: focal lengths must be finite and positive",
        ingest_video,
        synth / "clip.mp4",
        bad,
        out,
        16,
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_nan_inf_negative_gt_depth(tmp_path, synth, bad):
    gt = tmp_path / "gt.zarr"
    shutil.copytree(synth / "gt.zarr", gt)
    g = zarr.open_group(str(gt), mode="r+")
    g["depth"][2, 5, 7] = bad
    out = tmp_path / "c.zarr"
    _fails(
        out,
        ValueError,
        r"gt\.zarr/depth\[2\]: depth holds NaN, inf or negative values; mark invalid pixels with 0",
        ingest_video,
        synth / "clip.mp4",
        synth / "camera.json",
        out,
        16,
        gt=gt,
    )


def test_gt_size_differs_from_video(tmp_path, synth):
    other = tmp_path / "other"
    write_clip(render_clip(4, 16, 32, 70.0, 0.063, 2, seed=3), other, fps=8, crf=0, baseline_m=0.063)
    out = tmp_path / "c.zarr"
    _fails(
        out,
        StoreError,
        r"GT depth is \(16, 32\) but video frames are \(24, 32\)",
        ingest_video,
        synth / "clip.mp4",
        synth / "camera.json",
        out,
        16,
        gt=other / "gt.zarr",
    )


def test_failure_keeps_the_previous_output(tmp_path, synth):
    out = tmp_path / "c.zarr"
    ingest_video(synth / "clip.mp4", synth / "camera.json", out, 16, progress=False)
    before = zarr.open_group(str(out), mode="r")["rgb"][...]
    with pytest.raises(VideoError):
        ingest_video(tmp_path / "gone.mp4", synth / "camera.json", out, 16)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["rgb"][...], before)


# --- truncated Zarr stores ---


@pytest.fixture
def store(tmp_path, synth):
    out = tmp_path / "c.zarr"
    ingest_video(synth / "clip.mp4", synth / "camera.json", out, 16, gt=synth / "gt.zarr", progress=False)
    return out


def test_store_missing_chunk(store):
    assert open_group(store, ("rgb", "depth_gt", "K"))["rgb"].nchunks_initialized == 4
    (store / "depth_gt/c.2.0.0").unlink()
    with pytest.raises(StoreError, match=r"c\.zarr/depth_gt: decoded store has 3 of 4 chunks on disk; .*re-run"):
        open_group(store, ("rgb", "depth_gt"), "decoded store")


def test_store_missing_or_corrupt_metadata(store):
    (store / "K/zarr.json").unlink()
    with pytest.raises(StoreError, match=r"c\.zarr: decoded store lacks array\(s\) \['K'\]; .*re-run"):
        open_group(store, ("rgb", "K"), "decoded store")
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"c\.zarr: decoded store has corrupt metadata"):
        open_group(store, ("rgb",), "decoded store")
    (store / "zarr.json").unlink()
    with pytest.raises(StoreError, match=r"c\.zarr: decoded store not found or not a Zarr v3 store; run"):
        open_group(store, ("rgb",), "decoded store")


def test_truncated_gt_store_is_rejected_before_writing(tmp_path, synth):
    gt = tmp_path / "gt.zarr"
    shutil.copytree(synth / "gt.zarr", gt)
    (gt / "depth/c.1.0.0").unlink()
    out = tmp_path / "c.zarr"
    _fails(
        out,
        StoreError,
        r"gt\.zarr/depth: ground-truth store has 3 of 4 chunks",
        ingest_video,
        synth / "clip.mp4",
        synth / "camera.json",
        out,
        16,
        gt=gt,
    )


# --- adapters ---


def test_tum_bad_inputs(tmp_path):
    out = tmp_path / "c.zarr"
    _fails(
        out, FileNotFoundError, r"nowhere: TUM sequence folder not found", ingest, "tum", tmp_path / "nowhere", out, 16
    )
    seq, _ = write_tum(tmp_path / "a", frames=3)
    _fails(
        out,
        ValueError,
        r"images are 32x24 but the Freiburg intrinsics are for 640x480; for resized images give the clip.s camera",
        ingest,
        "tum",
        seq,
        out,
        16,
    )
    seq, _ = write_tum(tmp_path / "b", "rgbd_dataset_kinect_xyz", frames=3, h=480, w=640)
    _fails(
        out,
        ValueError,
        r"rgbd_dataset_kinect_xyz: cannot tell the camera .*corpus\.clips\.<name>\.camera",
        ingest,
        "tum",
        seq,
        out,
        16,
    )
    seq, _ = write_tum(tmp_path / "c", frames=3, depth_hw=(12, 16))
    _fails(
        out,
        ValueError,
        r"depth is \(12, 16\) \(H, W\) but RGB is \(24, 32\); depth must be registered",
        ingest,
        "tum",
        seq,
        out,
        16,
        intrinsics=CAM,
    )
    seq, _ = write_tum(tmp_path / "d", frames=3)
    png = sorted((seq / "depth").iterdir())[1]
    png.write_bytes(b"\x89PNG truncated")
    _fails(
        out,
        ValueError,
        rf"{png.name}: TUM depth PNG is corrupt or not an image",
        ingest,
        "tum",
        seq,
        out,
        16,
        intrinsics=CAM,
    )
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(png, format="PNG")
    _fails(
        out, ValueError, r"TUM depth must be a 16-bit single-channel PNG", ingest, "tum", seq, out, 16, intrinsics=CAM
    )
    (seq / "rgb.txt").write_text("# nothing listed\n")
    _fails(
        out,
        ValueError,
        r"no RGB frame has a depth \(and pose\) within 0\.02 s",
        ingest,
        "tum",
        seq,
        out,
        16,
        intrinsics=CAM,
    )
    (seq / "rgb.txt").write_text("1305031102.0\n")
    _fails(
        out, ValueError, r"rgb\.txt:1: expected a timestamp and 1 field", ingest, "tum", seq, out, 16, intrinsics=CAM
    )
    (seq / "rgb.txt").write_text("1305031102.0 rgb/1305031102.000000.png\n")
    (seq / "depth.txt").unlink()
    _fails(out, FileNotFoundError, r"depth\.txt: TUM list file not found", ingest, "tum", seq, out, 16, intrinsics=CAM)


@pytest.mark.parametrize("bad", [np.inf, -2.0])
def test_hypersim_inf_or_negative_distance(tmp_path, bad):
    scene, _ = write_hypersim(tmp_path, frames=2, poses=False)
    f = scene / "images/scene_cam_00_geometry_hdf5/frame.0001.depth_meters.hdf5"
    d = np.ones((24, 32), np.float32)
    d[3, 4] = bad
    write_h5(f, d)
    out = tmp_path / "c.zarr"
    _fails(
        out,
        ValueError,
        r"frame\.0001\.depth_meters\.hdf5: distances hold inf or negative values",
        ingest,
        "hypersim",
        scene,
        out,
        16,
    )


def test_hypersim_bad_inputs(tmp_path):
    out = tmp_path / "c.zarr"
    _fails(
        out,
        FileNotFoundError,
        r"images: not found; point corpus\.clips\.<name>\.source at a Hypersim scene",
        ingest,
        "hypersim",
        tmp_path,
        out,
        16,
    )
    scene, _ = write_hypersim(tmp_path, frames=2)
    _fails(
        out,
        FileNotFoundError,
        r"scene_cam_07_geometry_hdf5: not found; cameras with depth in this scene: \['cam_00'\]",
        ingest,
        "hypersim",
        scene,
        out,
        16,
        cam="cam_07",
    )
    write_h5(scene / "images/scene_cam_00_geometry_hdf5/frame.0001.depth_meters.hdf5", np.ones((12, 16)))
    _fails(out, ValueError, r"depth is \(12, 16\) \(H, W\) but RGB is \(24, 32\)", ingest, "hypersim", scene, out, 16)
    (scene / "_detail/metadata_scene.csv").unlink()
    _fails(
        out,
        FileNotFoundError,
        r"metadata_scene\.csv: Hypersim scene metadata .* not found",
        ingest,
        "hypersim",
        scene,
        out,
        16,
    )
    (scene / "images/scene_cam_00_final_preview/frame.0000.tonemap.jpg").unlink()
    shutil.rmtree(scene / "_detail")
    _fails(
        out,
        FileNotFoundError,
        r"frame\.0000\.tonemap\.jpg: Hypersim tonemapped RGB not found",
        ingest,
        "hypersim",
        scene,
        out,
        16,
    )
    for p in (scene / "images/scene_cam_00_geometry_hdf5").iterdir():
        p.unlink()
    _fails(out, ValueError, r"no frame\.XXXX\.depth_meters\.hdf5 files", ingest, "hypersim", scene, out, 16)


def test_ingest_entry_rejects_unknown_kind_and_options(tmp_path):
    out = tmp_path / "c.zarr"
    _fails(
        out,
        ValueError,
        r"unknown source kind 'kitti'; use one of video, tum, hypersim",
        ingest,
        "kitti",
        tmp_path,
        out,
        16,
    )
    _fails(
        out, ValueError, r"source kind 'tum' takes no option\(s\) \['gt'\]", ingest, "tum", tmp_path, out, 16, gt="x"
    )
    _fails(out, ValueError, r"a video needs intrinsics", ingest, "video", tmp_path / "v.mp4", out, 16)


# --- params and the stages ---


TEST_CLIPS = load_params(Path(__file__).resolve().parents[1] / "params.yaml").corpus.test


def _with(**changes):
    """params.yaml as a dict with dotted keys changed (a value None deletes nothing: it sets null)."""
    raw = load_params(Path(__file__).resolve().parents[1] / "params.yaml").model_dump(mode="json")
    for key, value in changes.items():
        node, *path, last = key.split(".")
        target = raw[node]
        for part in path:
            target = target[part]
        target[last] = value
    return raw


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"corpus.clips.room_a.kind": "kitti"}, r"corpus\.clips\.room_a\.kind = 'kitti' is invalid"),
        ({"corpus.clips.tum_a": {"kind": "tum", "source": "x", "camera": {"fx": 1}}}, r"corpus\.clips\.tum_a\.camera"),
        ({"corpus.clips.room_a.camera": CAM}, r"corpus\.clips\.room_a\.camera"),
        (
            {
                "corpus.clips.vid": {"kind": "video", "source": "v.mp4", "intrinsics": "c.json", "teacher": "midas"},
                "corpus.test": [*TEST_CLIPS, "vid"],
            },
            r"corpus\.clips\.vid\.teacher = 'midas' is invalid; allowed: a registered teacher",
        ),
        ({"decode.size": 258}, r"decode\.size = 258 is invalid.*low_res_factor"),
        ({"corpus.clips.room_a.stride": 0}, r"corpus\.clips\.room_a\.stride = 0 is invalid"),
        ({"corpus.synthetic.frames": 1}, r"corpus\.synthetic\.frames = 1 is invalid"),
        ({"corpus.synthetic.width": 33}, r"corpus\.synthetic\.width = 33 is invalid"),
        ({"corpus.clips.room_a.static_frames": 99}, r"corpus\.clips\.room_a\.static_frames"),
        ({"corpus.test": ["room_t1", "room_a"]}, r"room_a is also in corpus\.train"),
        ({"corpus.val": ["room_vall"]}, r"corpus\.val\[0\].*room_vall"),
    ],
)
def test_invalid_params_name_the_key(changes, match):
    with pytest.raises(ConfigError, match=match):
        params_from_dict(_with(**changes))


def test_a_tum_folder_is_a_clip_by_one_params_entry(tmp_path, monkeypatch):
    """The prepare stage's synth and decode steps on a TUM clip named by one params entry."""
    seq, _ = write_tum(tmp_path, frames=3)
    raw = _with(
        **{
            "corpus.clips.kinect": {"kind": "tum", "source": str(seq), "camera": CAM, "teacher": "unidepth"},
            "corpus.test": [*TEST_CLIPS, "kinect"],
            "decode.size": 16,
            "train.crop": 16,
        }
    )
    monkeypatch.chdir(tmp_path)
    paths = ClipPaths(Path("data/clips/0/kinect"), Path("views/kinect"))
    run_steps(("synth", "decode"), plan_of(params_from_dict(raw), "kinect"), paths, {})
    g = zarr.open_group("data/clips/0/kinect/decoded.zarr", mode="r")
    assert g.attrs["dataset_name"] == "tum" and g["depth_gt"].shape == (2, 16, 20)  # 24x32: 16 x 21.3 -> 20 (x4)
    shutil.rmtree("data")
    raw["corpus"]["clips"]["kinect"]["source"] = str(tmp_path / "rgbd_dataset_freiburg1_missing")
    _fails(
        tmp_path / "data/clips/0/kinect/decoded.zarr",
        FileNotFoundError,
        r"freiburg1_missing: TUM sequence folder not found",
        run_steps,
        ("synth", "decode"),
        plan_of(params_from_dict(raw), "kinect"),
        paths,
        {},
    )

"""refiner-video as a VR tool: scene cuts reset every temporal state, --export picks the outputs, --out holds exactly
the last run's outputs, a failed run leaves nothing behind, the teacher's seed does not depend on the file name, a GT
store needs only depth, --adapt reports an adapted model and leaves the file alone, and --help imports no torch."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
import zarr

from refiner.app.cli import DEFAULT_MODEL, main
from refiner.core.video import decode_frames, encode_mp4
from refiner.data.synth.clips import render_clip, write_clip
from refiner.inference.depth_video import read_depth_video
from refiner.visual.export import png16_precision

from .clip_fixtures import ROOT

H, W, A, B = 48, 80, 10, 14  # source size; frames of the first and the second scene
COLOUR_TEACHER = '''
"""A stateless test teacher: depth from each frame's own colours (no GT, nothing carried between frames)."""
import numpy as np
from refiner.teachers.base import TeacherFrame

class ColourTeacher:
    name, label, batch_size = "colour", "colour: a test teacher, not a depth model", 4

    def __init__(self, ctx):
        pass

    def identity(self):
        return {"name": self.name}

    def predict(self, batch):
        grey = batch.rgb.astype(np.float32).mean(-1) / 255
        return [TeacherFrame(1.0 + 3.0 * g, None, k) for g, k in zip(grey, batch.K)]
'''


def _gt_store(path, depth):
    """A user-made GT store: only ``depth`` (no poses, no moving mask)."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("depth", data=depth.astype(np.float32), chunks=(1, *depth.shape[1:]))


def _gt_with_empty_mask(path):
    """A GT store whose all-zero moving mask Zarr left unwritten (its default drops empty chunks)."""
    _gt_store(path, np.ones((B, H, W), np.float32))
    g = zarr.open_group(str(path), mode="a", zarr_format=3)
    g.create_array("moving_mask", data=np.zeros((B, H, W), np.uint8), chunks=(1, H, W))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Scene a (a dolly), scene b (an orbit in another room), and the two cut together, encoded losslessly."""
    root = tmp_path_factory.mktemp("vr")
    a = render_clip(A, H, W, 70.0, 0.063, 3, seed=5, camera_path="dolly")
    b = render_clip(B, H, W, 70.0, 0.063, 3, seed=8, camera_path="orbit")
    write_clip(a, root / "a", fps=10, crf=0, baseline_m=0.063)
    write_clip(b, root / "b", fps=10, crf=0, baseline_m=0.063)
    encode_mp4(np.concatenate([a.rgb, b.rgb]), root / "cut.mp4", fps=10, crf=0)
    _gt_store(root / "b_gt.zarr", b.depth)
    (root / "plugins").mkdir()
    (root / "plugins/colour_teacher.py").write_text(textwrap.dedent(COLOUR_TEACHER))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["teacher"]["calibration_fallback"] = "rank"  # a table of the clip's own: the same for a scene and its cut
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def _run(root, video, out, *extra):
    argv = [str(video), "--intrinsics", str(root / "a/camera.json"), "--out", str(root / out), "--size", "32"]
    main([*argv, "--cache", str(root / "cache"), "--quiet", *extra])
    return json.loads((root / out / "outputs.json").read_text())


def _colour(root, video, out, *extra):
    sys.path.insert(0, str(root / "plugins"))
    try:
        return _run(
            root, video, out, "--teacher", "colour_teacher:ColourTeacher", "--params", str(root / "params.yaml"), *extra
        )
    finally:
        sys.path.remove(str(root / "plugins"))


def _depth(root, out):
    return zarr.open_group(str(root / out / "depth.zarr"), mode="r")["depth"][...]


@pytest.fixture(scope="module")
def cut_runs(videos):
    """The packaged model on each scene alone, on the two cut together, and on those without cut detection."""
    runs = {name: _colour(videos, videos / f"{name}/clip.mp4", f"out_{name}") for name in ("a", "b")}
    runs["cut"] = _colour(videos, videos / "cut.mp4", "cut")
    runs["no_cuts"] = _colour(videos, videos / "cut.mp4", "no_cuts", "--no-cuts")
    return runs


def test_the_cut_is_found_and_each_scene_equals_a_fresh_run_on_it_alone(videos, cut_runs):
    assert cut_runs["cut"]["scene_cuts"] == [A] and cut_runs["b"]["scene_cuts"] == []
    assert cut_runs["cut"]["model"]["path"] == str(DEFAULT_MODEL)  # the packaged model by default
    cut, alone_a, alone_b = _depth(videos, "cut"), _depth(videos, "out_a"), _depth(videos, "out_b")
    np.testing.assert_allclose(cut[A:], alone_b, rtol=1e-5, atol=1e-6)  # state, blending, EMA all started afresh
    np.testing.assert_allclose(cut[:A], alone_a, rtol=1e-5, atol=1e-6)  # no window reached across the cut
    carried = _depth(videos, "no_cuts")  # without the reset the Mamba state and window blending carry over
    assert np.abs(carried[A:] / alone_b - 1).max() > 1e-3
    worst = max((cut_runs[s]["drift_rel"] for s in ("a", "b")), key=abs)  # the drift monitor restarted too
    assert cut_runs["cut"]["drift_rel"] == pytest.approx(worst, abs=1e-6)


def test_export_writes_exactly_the_chosen_outputs(videos, cut_runs):
    s = _colour(videos, videos / "b/clip.mp4", "ex", "--export", "ffv1,png16")
    out = videos / "ex"
    assert sorted(p.name for p in out.iterdir()) == sorted(s["outputs"])
    assert sorted(s["outputs"]) == ["depth_16bit.mkv", "frames", "intrinsics.json", "outputs.json", "reports"]
    assert not list((out / "frames").glob("*.npy")) and len(list((out / "frames").glob("*.png"))) == B
    assert not (out / "reports/side_by_side.mp4").exists()  # the review video is an export of its own
    video = np.stack(list(read_depth_video(out / "depth_16bit.mkv")))
    reference = _depth(videos, "out_b")  # the same video and settings, as float32 metres
    assert video.shape == (B, H, W) and np.abs(video / reference - 1).max() <= png16_precision() + 1e-6


def test_out_holds_only_the_last_runs_outputs_and_a_failed_run_changes_nothing(videos, cut_runs, capsys):
    first = _colour(videos, videos / "b/clip.mp4", "again", "--stereo-format", "tb", "--ipd-mm", "65")
    sbs = list(decode_frames(videos / "again/clip_TB.mp4"))
    assert len(sbs) == B and sbs[0].shape == (2 * H, W, 3) and first["stereo"]["ipd_m"] == 0.065
    second = _colour(videos, videos / "b/clip.mp4", "again")
    assert sorted(p.name for p in (videos / "again").iterdir()) == sorted(second["outputs"])
    assert not (videos / "again/clip_TB.mp4").exists() and second["stereo"] is None
    listing = sorted(p.name for p in (videos / "again").iterdir())
    with pytest.raises(SystemExit):  # the simulated teacher without GT fails after the cache step began
        _run(videos, videos / "a/clip.mp4", "again", "--teacher", "simulated", "--cache", str(videos / "c2"))
    assert "the simulated teacher needs ground-truth depth" in capsys.readouterr().err
    assert sorted(p.name for p in (videos / "again").iterdir()) == listing  # the previous run's outputs, intact
    assert not (videos / "c2").exists() or not list((videos / "c2").iterdir())  # no empty cache entry
    assert sorted(p.name for p in videos.iterdir() if p.name.startswith(".")) == []  # no temporaries


def test_out_that_holds_other_files_is_refused(videos, capsys):
    (videos / "mine").mkdir()
    (videos / "mine/notes.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        _colour(videos, videos / "b/clip.mp4", "mine")
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out ") and "did not write" in err and "\n" not in err
    assert (videos / "mine/notes.txt").read_text() == "keep me"


def test_the_simulated_teachers_figures_depend_on_seed_and_content_never_the_file_name(videos):
    shutil.copy(videos / "b/clip.mp4", videos / "renamed.mp4")
    gt = ["--teacher", "simulated", "--gt", str(videos / "b_gt.zarr")]  # depth only: no poses, no moving mask
    first = _run(videos, videos / "b/clip.mp4", "sim1", *gt)
    renamed = _run(videos, videos / "renamed.mp4", "sim2", *gt)
    np.testing.assert_array_equal(_depth(videos, "sim1"), _depth(videos, "sim2"))
    assert renamed["teacher_cache_reused"] and first["teacher_seed"] == 0
    _run(videos, videos / "b/clip.mp4", "sim3", *gt, "--seed", "7")
    assert not np.array_equal(_depth(videos, "sim1"), _depth(videos, "sim3"))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.mkdir(), "not a Zarr v3 store (no zarr.json there)"),
        (
            lambda p: zarr.open_group(str(p), mode="w", zarr_format=3).create_array("d", data=np.ones((2, 3))),
            "no array 'depth'",
        ),
        (lambda p: _gt_store(p, np.ones((B, H), np.float32)), "depth of shape (14, 48)"),
        (_gt_with_empty_mask, "moving_mask lacks 14 of its 14 chunks"),
    ],
)
def test_a_wrong_gt_store_is_one_line_with_its_format_and_no_dvc(videos, capsys, tmp_path, make, says):
    make(tmp_path / "gt.zarr")
    with pytest.raises(SystemExit):
        _run(videos, videos / "b/clip.mp4", "bad_gt", "--teacher", "simulated", "--gt", str(tmp_path / "gt.zarr"))
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --gt {tmp_path / 'gt.zarr'}: ") and says in err and "\n" not in err
    assert ("depth (T, H, W) float32 metres" in err or "write_empty_chunks" in err) and "dvc" not in err


def test_adapt_fine_tunes_a_copy_and_says_so(videos, cut_runs, capsys):
    digest = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    s = _colour(videos, videos / "b/clip.mp4", "adapted", "--adapt", "2")
    assert s["model"]["adapted"]["steps"] == 2 and s["model"]["adapted"]["seconds"] > 0
    assert s["model"]["adapted"]["gt_read"] is False
    assert hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest() == digest  # the model file is never written
    assert "adapted GT-free to this video for 2 steps" in capsys.readouterr().out


def test_help_marks_what_is_required_and_imports_no_torch():
    code = textwrap.dedent(
        """
        import sys
        from refiner.app.cli import parse_args
        try:
            parse_args(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "zarr", "refiner.app.video_run") if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip().endswith("[]")
    assert "required:" in done.stdout and "(--intrinsics INTRINSICS | --hfov-deg HFOV_DEG)" in done.stdout

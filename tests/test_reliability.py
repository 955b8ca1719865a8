"""Reliability, third round (issue 33): each case attacked for real (real files and folders, a truncated chunk on
disk, a checkpoint mixed from two models, kill -9, a full disk) and each report checked for what it says about a
real clip beside rendered ones."""

import contextlib
import csv
import importlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
import zarr
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from refiner.app.cli import main as refiner_video
from refiner.core.config import ConfigError, ModelParams
from refiner.core.video import decode_frames
from refiner.data.adapters import ingest
from refiner.data.clip import Clip
from refiner.data.guidance import write_guidance
from refiner.data.ingest import ingest_video
from refiner.data.synth.clips import render_clip, write_clip
from refiner.evaluation.evaluate import evaluate_clip
from refiner.evaluation.method_depths import write_method_depths
from refiner.evaluation.stereo_metrics import stereo_metrics
from refiner.geometry.camera import image_to_source
from refiner.inference.infer import run_infer
from refiner.inference.source_res import source_rgb, store_map
from refiner.model.refiner import Refiner
from refiner.teachers.cache import write_teacher_store
from refiner.teachers.simulated import SimulatedTeacher
from refiner.training.checkpoint import CheckpointError, load_refiner, save_refiner

from .adapter_fixtures import write_tum
from .clip_fixtures import ROOT, make_clip, make_corpus, tiny_params

TINY_MODEL = ModelParams.from_file(ROOT / "params.yaml", channels=4, ssm_hidden=4, d_state=2)
P = tiny_params(
    windows={"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
    evaluate={"bilateral_radius": 1},
)
CAM = {"fx": 60.0, "fy": 60.0, "cx": 31.5, "cy": 23.5}  # the camera of the 64x48 TUM folders below


def _model(path: Path, params: ModelParams = TINY_MODEL) -> Path:
    save_refiner(path, Refiner(params, 4), params, 4, {})
    return path


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), DVC_NO_ANALYTICS="1")


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if re.search(r"\.(tmp|old)\d+", p.name))


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    """The one error line of a failed script (exit status 1), besides its progress bars."""
    lines = [x for x in done.stderr.strip().splitlines() if "%|" not in x]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# --- 1. one-frame clips ---


def test_one_frame_video_runs_through_refiner_video(tmp_path, capsys):
    """A one-frame video whose ground truth has no moving-object mask (an optional array): the refiner runs on its
    one frame (the static gate of a one-frame window crashed with 'amin(): Expected reduction dim 0')."""
    write_clip(render_clip(1, 32, 48, 70.0, 0.063, 0, seed=5), tmp_path / "src", fps=10, crf=0, baseline_m=0.063)
    shutil.rmtree(tmp_path / "src/gt.zarr/moving_mask")
    argv = [str(tmp_path / "src/clip.mp4"), "--intrinsics", str(tmp_path / "src/camera.json")]
    argv += [
        "--teacher",
        "simulated",
        "--gt",
        str(tmp_path / "src/gt.zarr"),
        "--model",
        str(_model(tmp_path / "m.safetensors")),
    ]
    refiner_video(
        [*argv, "--out", str(tmp_path / "out"), "--size", "32", "--quiet", "--stereo", "--cache", str(tmp_path)]
    )
    depth = zarr.open_group(str(tmp_path / "out/depth.zarr"), mode="r")["depth"][...]
    assert depth.shape == (1, 32, 48) and (depth > 0).all()
    assert len(list(decode_frames(tmp_path / "out/clip_LRF_Full_SBS.mp4"))) == 1


def test_one_frame_tum_clip_refines_and_its_temporal_metrics_say_why_not(tmp_path):
    """A real TUM folder whose second RGB frame has no depth partner: a one-frame clip through infer, evaluate and
    the stereo checks. Per-frame figures exist; every temporal one is skipped with 'needs ≥ 2 frames'."""
    seq, _ = write_tum(tmp_path, frames=2, h=48, w=64)
    ingest("tum", seq, tmp_path / "dec.zarr", 32, intrinsics=CAM, multiple=4, progress=False)
    write_teacher_store(tmp_path / "dec.zarr", tmp_path / "tea.zarr", P.teacher, "kin", progress=False)
    write_guidance(tmp_path / "dec.zarr", tmp_path / "tea.zarr", tmp_path / "g.zarr", progress=False)
    clip = Clip(tmp_path / "dec.zarr", tmp_path / "tea.zarr", None, tmp_path / "g.zarr")
    assert clip.frames == 1 and "moving_mask" not in clip.dec
    model, _ = load_refiner(_model(tmp_path / "m.safetensors"))
    stats = run_infer(model, clip, P, tmp_path / "ref.zarr", tmp_path / "frames", tmp_path / "rep", progress=False)
    refined = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["depth"][...]
    assert stats["frames"] == 1 and refined.shape == (1, *clip.dec["rgb"].shape[1:3]) and (refined > 0).any()
    result = evaluate_clip(clip, str(tmp_path / "ref.zarr"), P.evaluate, P.windows.length, P.stereo.baseline_m)
    metrics = result["metrics"]
    assert {"absrel", "rmse", "d1"} <= set(metrics["methods"]["refiner"])
    assert not {"tae", "tae_vda", "opw_nvds", "scale_ratio_std", "flicker_std_rel"} & set(metrics["methods"]["refiner"])
    assert metrics["skipped"]["temporal"].startswith("skipped: needs ≥ 2 frames (the clip has 1)")
    left = write_method_depths(clip, str(tmp_path / "ref.zarr"), P.evaluate, tmp_path / "left.zarr")
    stereo, _ = stereo_metrics(clip, left, {}, P.stereo)
    assert stereo["skipped"]["still"].startswith("skipped: needs ≥ 2 frames")


# --- 2. TUM lists out of time order ---


def _shuffle_rgb_list(seq: Path, order: list[int]) -> None:
    lines = (seq / "rgb.txt").read_text().splitlines()
    comments, entries = [x for x in lines if x.startswith("#")], [x for x in lines if not x.startswith("#")]
    (seq / "rgb.txt").write_text("\n".join(comments + [entries[i] for i in order]) + "\n")


def test_tum_rgb_list_out_of_time_order_is_read_in_time_order(tmp_path):
    seq, truth = write_tum(tmp_path / "a", frames=6, hz=15)
    ingest("tum", seq, tmp_path / "in_order.zarr", 16, intrinsics={**CAM, "cx": 15.5, "cy": 11.5}, progress=False)
    _shuffle_rgb_list(seq, [3, 0, 5, 1, 4, 2])
    with pytest.warns(UserWarning, match=r"rgb\.txt: lines are not in time order; they are read sorted by timestamp"):
        ingest("tum", seq, tmp_path / "shuffled.zarr", 16, intrinsics={**CAM, "cx": 15.5, "cy": 11.5}, progress=False)
    a, b = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("in_order.zarr", "shuffled.zarr"))
    np.testing.assert_array_equal(a["rgb"][...], b["rgb"][...])
    np.testing.assert_array_equal(a["depth_gt"][...], b["depth_gt"][...])
    assert b.attrs["fps"] == pytest.approx(15, rel=1e-4)  # was 0.0: negative time steps


def test_tum_repeated_timestamp_is_an_error_naming_both_lines(tmp_path):
    seq, _ = write_tum(tmp_path, frames=4)
    lines = (seq / "rgb.txt").read_text().splitlines()  # 2 comments, then frames 0..3
    lines[4] = lines[2].split()[0] + " " + lines[4].split()[1]  # frame 2 gets frame 0's timestamp
    (seq / "rgb.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "c.zarr"
    with pytest.raises(ValueError, match=r"rgb\.txt:5: timestamp 1305031102\.000000 repeats line 3; every frame"):
        ingest("tum", seq, out, 16, intrinsics={**CAM, "cx": 15.5, "cy": 11.5}, progress=False)
    assert not out.exists()


# --- 3. temporaries a kill leaves ---

KILL_INFER = """
import os, signal, sys
from refiner.inference import infer
from refiner.training.checkpoint import load_refiner
from refiner.data.clip import open_clip
from tests.test_reliability import P
manifest, model, out = sys.argv[1:4]
real, calls = infer._window_delta, []
def dying(*args, **kwargs):  # kill -9 inside refine_clip, after its first window
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
infer._window_delta = dying
clip, _ = open_clip(manifest, "te")
run = load_refiner(model)[0], clip, P, f"{out}/te.zarr", f"{out}/te_frames", f"{out}/reports"
infer.run_infer(*run, progress=False)
"""

KILL_TEACHER = """
import os, signal, sys
from refiner.teachers import cache
from tests.test_reliability import P
clip = sys.argv[1]
real = cache.make_teacher
def dying_teacher(name, ctx):  # kill -9 while the teacher store is half written
    teacher = real(name, ctx)
    predict = teacher.predict
    def predict_or_die(batch):
        if 3 in batch.index:
            os.kill(os.getpid(), signal.SIGKILL)
        return predict(batch)
    teacher.predict = predict_or_die
    return teacher
cache.make_teacher = dying_teacher
cache.write_teacher_store(f"{clip}/decoded.zarr", f"{clip}/teacher.zarr", P.teacher, "c", progress=False)
"""


def _killed(script: str, *args) -> None:
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=_env(), cwd=ROOT, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def test_kill_inside_refine_clip_leaves_no_nested_temp_and_the_next_run_removes_all(tmp_path):
    manifest = make_corpus(tmp_path / "corpus", frames=10, size=32, static_frames=5)
    model, out = _model(tmp_path / "m.safetensors"), tmp_path / "infer"
    _killed(KILL_INFER, manifest, model, out)
    left = _temps(out)
    assert left and not [n for n in left if n.startswith("..")], left  # killed mid-write; temps never nest
    clip = Clip(*(str(tmp_path / f"corpus/clips/te/{s}.zarr") for s in ("decoded", "teacher")), None)
    run_infer(load_refiner(model)[0], clip, P, out / "te.zarr", out / "te_frames", out / "reports", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["reports", "te.zarr", "te_frames"]


def test_killed_teacher_temp_goes_at_the_next_write_in_its_folder_and_git_and_dvc_ignore_it(tmp_path):
    make_clip(tmp_path, "c", frames=8, size=32, static_frames=4)
    before = zarr.open_group(str(tmp_path / "c/teacher.zarr"), mode="r")["depth"][...]
    _killed(KILL_TEACHER, tmp_path / "c")
    left = _temps(tmp_path / "c")
    assert len(left) == 1 and left[0].startswith(".teacher.zarr.tmp"), left
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "c/teacher.zarr"))["depth"][...], before)
    repo = tmp_path / "repo"  # the project's ignore files, in a fresh git + DVC repository holding such leftovers
    (repo / "data/infer").mkdir(parents=True)
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for leftover in (f"data/{left[0]}", "data/infer/..te.zarr.tmp77.tmp77", "data/.clip.mp4.tmp77.mp4"):
        (repo / leftover).write_bytes(b"half written")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    shown = subprocess.run(["git", "status", "--porcelain", "-uall"], cwd=repo, capture_output=True, text=True)
    assert shown.stdout.split() == ["??", ".dvcignore", "??", ".gitignore"], shown.stdout
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, env=_env(), check=True)
    ignored = subprocess.run(
        [sys.executable, "-m", "dvc", "check-ignore", f"data/{left[0]}", "data/infer/..te.zarr.tmp77.tmp77"],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert ignored.returncode == 0 and len(ignored.stdout.split()) == 2, ignored.stdout + ignored.stderr
    write_guidance(tmp_path / "c/decoded.zarr", tmp_path / "c/teacher.zarr", tmp_path / "c/guidance.zarr", False)
    assert _temps(tmp_path / "c") == []  # another stage writing in the folder removed the dead writer's temp


# --- 4. refiner-video options ---


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    write_clip(render_clip(6, 32, 48, 70.0, 0.063, 3, seed=2), root / "src", fps=10, crf=0, baseline_m=0.063)
    return root, _model(root / "m.safetensors")


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--stride", "0", r"an integer >= 1"),
        ("--stride", "-2", r"an integer >= 1"),
        ("--size", "0", r"an even integer in \[16, 4096\]"),
        ("--size", "-8", r"an even integer in \[16, 4096\]"),
    ],
)
def test_refiner_video_option_out_of_range_is_one_line_naming_it(video, tmp_path, capsys, option, value, allowed):
    root, model = video
    argv = [
        str(root / "src/clip.mp4"),
        "--intrinsics",
        str(root / "src/camera.json"),
        "--gt",
        str(root / "src/gt.zarr"),
    ]
    argv += ["--model", str(model), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"]
    with pytest.raises(SystemExit) as stop:
        refiner_video([*argv, option, value])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 1 and len(err.splitlines()) == 1 and "params.yaml" not in err
    assert re.fullmatch(rf"error: {option} {value} is invalid; allowed: {allowed}.*", err), err


# --- 5. intrinsics files ---


def test_intrinsics_file_with_an_unknown_or_a_repeated_key_is_rejected(video, tmp_path):
    root, _ = video
    cam = json.loads((root / "src/camera.json").read_text())
    unknown = tmp_path / "cam.yaml"
    unknown.write_text(yaml.safe_dump({**cam, "skew": 0.1}))
    with pytest.raises(ValueError, match=r"cam\.yaml: unknown key 'skew' in the intrinsics; allowed: fx, fy, cx"):
        ingest_video(root / "src/clip.mp4", unknown, tmp_path / "a.zarr", 32, progress=False)
    repeated = tmp_path / "cam.json"
    text = json.dumps(cam, indent=1)
    repeated.write_text(text.replace("\n}", f',\n "fx": {cam["fx"] * 2}\n}}'))
    with pytest.raises(ConfigError, match=r"cam\.json: line 8: duplicate key 'fx' \(first at line 4\)"):
        ingest_video(root / "src/clip.mp4", repeated, tmp_path / "b.zarr", 32, progress=False)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


# --- 6. a truncated Zarr chunk ---


def test_truncated_chunk_names_store_array_frame_and_the_stage_to_re_run(tmp_path):
    """The test stage's script on a pipeline whose teacher store has a chunk cut in half on disk."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    clips = {n: {"kind": "synthetic", "seed": i} for i, n in enumerate(("tr_a", "tr_b", "va", "te"))}  # make_corpus's
    params["corpus"].update(clips=clips, train=["tr_a", "tr_b"], val=["va"], test=["te"])
    params["adapt"].update(clips=[])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    make_corpus(tmp_path / "data", frames=10, size=32, static_frames=5, clips_dir="clips/0")  # shard 0's layout
    chunk = tmp_path / "data/clips/0/te/teacher.zarr/depth/c.3.0.0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    _model(tmp_path / "m.safetensors")
    args = ["0", "data/manifest", "m.safetensors", "data/test/0", "reports/clips/0", "reports/clips/0.json"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages/test.py"), *args], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert re.fullmatch(
        r"error: test clip te: \S*/data/clips/0/te/teacher\.zarr/depth: frame 3 cannot be decoded \(.*\): its chunk "
        r"file c\.3\.0\.0 is truncated or corrupt; re-run the stage that writes it: "
        r"dvc repro -f -s pipelines/prepare/dvc\.yaml:prepare@0 \(1 of 1 clips failed; .*\)",
        _one_line_error(done),
    )
    assert not (tmp_path / "data/test/0/te").exists() and not (tmp_path / "reports/clips/0/te").exists()


# --- 7. a checkpoint whose tensors have other shapes ---


def test_checkpoint_with_other_tensor_shapes_names_the_file_and_the_tensor(tmp_path):
    """The weights of a model with 8 channels under the metadata (model params) of one with 4."""
    four, eight = (
        _model(tmp_path / "four.safetensors"),
        _model(tmp_path / "eight.safetensors", TINY_MODEL.replace(channels=8)),
    )
    with safe_open(str(four), "pt") as f:
        meta = f.metadata()
    save_file(load_file(eight), tmp_path / "mixed.safetensors", metadata=meta)
    with pytest.raises(CheckpointError) as e:
        load_refiner(tmp_path / "mixed.safetensors")
    assert re.fullmatch(
        r".*mixed\.safetensors: tensor '[\w.]+' has shape \[8(, \d+)*\] in the checkpoint but \[4(, \d+)*\] in the "
        r"model: .*; retrain with the current code \(dvc repro train\) or pass the checkpoint these weights came from",
        str(e.value),
    )
    assert "\n" not in str(e.value)


# --- 8. a full disk ---

WRITE = """
import sys
import numpy as np
from refiner.core.errors import run_stage
from refiner.data.ingest import ingest_video
from refiner.core.video import encode_mp4
src, out, what = sys.argv[1:4]
frames = (np.random.default_rng(t).integers(0, 256, (64, 96, 3), dtype=np.uint8) for t in range(30))
def store():
    ingest_video(f"{src}/clip.mp4", f"{src}/camera.json", out, 32, gt=f"{src}/gt.zarr", progress=False)
run_stage(store if what == "store" else lambda: encode_mp4(frames, out, 10, crf=0))
"""


def _small_disk_run(folder: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run WRITE with its output on a 64 KiB tmpfs mounted at ``folder`` in a user namespace (a real full disk:
    ENOSPC); where user namespaces are not allowed, under a 2 KiB file size limit instead (RLIMIT_FSIZE: EFBIG).
    Returns the run and what ``folder`` held afterwards."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode == 0:
        shell = 'mount -t tmpfs -o size=64k tmpfs "$0" && "$@"; rc=$?; echo held:; ls -A "$0"; exit $rc'
        cmd = [unshare, "-rm", "sh", "-c", shell, str(folder), sys.executable, "-c", WRITE, *args]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        return done, done.stdout.split("held:")[-1].split()

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    cmd = [sys.executable, "-c", WRITE, *args]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, preexec_fn=limit)
    return done, sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("what", "name"), [("store", "decoded.zarr"), ("mp4", "side_by_side.mp4")])
def test_full_disk_is_one_line_naming_the_output_and_the_fix(tmp_path, what, name):
    """A real full disk (a 64 KiB tmpfs; or the file size limit, see :func:`_small_disk_run`) under the decode stage's
    store writer and the mp4 writer: one line naming the output being written and the fix; no temporary is left."""
    src = tmp_path / "src"
    write_clip(render_clip(12, 64, 96, 70.0, 0.063, 3, seed=1), src, fps=10, crf=0, baseline_m=0.063)
    folder = tmp_path / "disk"
    folder.mkdir()
    done, held = _small_disk_run(folder, [str(src), str(folder / name), what])
    line = _one_line_error(done)
    assert re.fullmatch(
        rf"error: {re.escape(str(folder / name))}: cannot be written: (No space left on device \(errno 28\)|File too "
        r"large \(errno 27\)); free space on that disk \(or raise the quota or file size limit\), or write the output "
        r"to another disk \(another folder, --out\)",
        line,
    ), line
    assert held == [], held  # neither the output nor a temporary of it


# --- 9-12. a real TUM clip beside rendered ones, through the pipeline's own stage scripts ---

CLIPS = {
    "tr": {"kind": "synthetic", "seed": 1, "camera_path": "dolly"},
    "va": {"kind": "synthetic", "seed": 3, "camera_path": "forward"},
    "te": {"kind": "synthetic", "seed": 4, "camera_path": "orbit"},
}
ORDER = ("shards", "prepare", "manifest", "test", "report")
TUM_LABEL = SimulatedTeacher.label  # what the teacher stage records in the store


def _stage_commands(stage: str, params: dict) -> list[list[str]]:
    """The stage's command lines from its dvc.yaml, one per item of its foreach (the pipeline's own arguments)."""
    path = ROOT / "dvc.yaml" if stage in ("shards", "manifest", "report") else ROOT / f"pipelines/{stage}/dvc.yaml"
    body = yaml.safe_load(path.read_text())["stages"][stage]
    if "foreach" not in body:
        return [body["cmd"].split()]
    section, key = body["foreach"][2:-1].split(".")  # ${prepare.shards}
    cmd = body["do"]["cmd"]
    return [cmd.replace("${key}", str(n)).replace("${item}", str(n)).split() for n in params[section][key]]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """Every stage but train (a tiny untrained model instead) on three rendered clips and a real 15 Hz TUM folder
    (64x48, no still-camera segment) in the test split, in a scratch copy of the repository's layout."""
    root = tmp_path_factory.mktemp("mini")
    seq, _ = write_tum(root / "tum", frames=10, h=48, w=64, hz=15)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"].update(clips={**CLIPS, "kin": {"kind": "tum", "source": str(seq), "camera": CAM}})
    params["corpus"].update(train=["tr"], val=["va"], test=["kin", "te"])  # the clip lacking figures first
    params["adapt"].update(clips=[])
    params["corpus"]["synthetic"].update(width=40, height=32, frames=8, static_frames=5, fps=6)
    params.update(decode={**params["decode"], "size": 32})
    params["windows"].update(length=4, overlap=2, keyframes=[0, 2])
    params["train"].update(crop=16)
    params["evaluate"].update(bilateral_radius=1)
    params["test"].update(workers=1)  # in this process (tests/test_pipeline_dvc.py runs the worker pool)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data/train").mkdir(parents=True)
    _model(root / "data/train/model.safetensors")
    argv = sys.argv
    with contextlib.chdir(root):
        try:
            for stage in ORDER:
                module = importlib.import_module(f"stages.{stage}")
                for cmd in _stage_commands(stage, params):
                    sys.argv = cmd[1:]
                    module.main()
        finally:
            sys.argv = argv
    return root


def _json(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


def test_reports_say_what_is_rendered_real_or_simulated_per_clip_and_in_all(mini):
    kin, te = (_json(mini, f"reports/clips/0/{n}/metrics.json")["clip"]["provenance"] for n in ("kin", "te"))
    assert kin == {
        "dataset": "tum",
        "frames": "real",
        "depth_gt": "real",
        "teacher": {"name": "simulated", "label": TUM_LABEL},
    }
    assert (te["frames"], te["depth_gt"], te["teacher"]) == (
        "rendered",
        "rendered",
        {"name": "simulated", "label": TUM_LABEL},
    )
    agg = _json(mini, "reports/metrics.json")
    assert agg["provenance"] == (
        "1 real TUM clip (real depth GT) with the simulated teacher, "
        "1 rendered synthetic clip (rendered depth GT) with the simulated teacher"
    )
    every = [mini / "reports/metrics.json", mini / "reports/evaluation.md", *(mini / "reports/clips").rglob("*")]
    assert not [p for p in every if p.suffix in (".json", ".md") and "synthetic_stand_in" in p.read_text()]
    md = (mini / "reports/clips/0/kin/evaluation.md").read_text()
    assert f"a real TUM clip (real depth GT) with the simulated teacher: {TUM_LABEL}." in md
    rendered = (mini / "reports/clips/0/te/evaluation.md").read_text()
    assert "stand-in" not in md and "Rendered clips are stand-ins" in rendered
    assert _json(mini, "reports/clips/0/kin/stereo/metrics.json")["provenance"] == kin
    assert _json(mini, "reports/clips/0/kin/infer/metrics.json")["provenance"] == kin


def test_a_clip_without_a_still_segment_keeps_the_figure_for_the_others_and_says_why(mini):
    agg = _json(mini, "reports/metrics.json")
    per = {n: _json(mini, f"reports/clips/0/{n}/metrics.json")["methods"] for n in ("te", "kin")}
    for figure in ("flicker_std_rel", "disparity_jitter_px"):
        assert figure not in per["kin"]["refiner"]
        assert agg["methods"]["refiner"][figure] == pytest.approx(per["te"]["refiner"][figure])
        assert agg["n_clips"][figure] == 1
    assert agg["n_clips"]["absrel"] == 2
    assert agg["methods"]["refiner"]["absrel"] == pytest.approx(
        (per["te"]["refiner"]["absrel"] + per["kin"]["refiner"]["absrel"]) / 2
    )
    stereo = _json(mini, "reports/clips/0/kin/stereo/metrics.json")
    assert set(stereo["skipped"]) == {"both_eyes", "still"} and stereo["refiner"] == {}
    assert "still-camera segment" in agg["skipped"]["kin"]["flicker"]
    assert "right eye" in agg["skipped"]["kin"]["stereo.both_eyes"] and "stereo.still" in agg["skipped"]["kin"]
    assert agg["stereo_n_clips"]["disparity_jitter_px"] == 1
    md = (mini / "reports/evaluation.md").read_text()
    assert "| flicker_std_rel (1 of 2 clips) |" in md and "- `kin` flicker: the clip has no still-camera segment" in md
    rows = list(csv.DictReader((mini / "reports/per_clip.csv").open()))
    assert [(r["clip"], r["flicker_std_rel"] != "") for r in rows if r["method"] == "refiner"] == [
        ("kin", False),
        ("te", True),
    ]


def test_stereo_video_of_a_tum_clip_has_its_source_resolution_and_its_left_eye_is_the_source_image(mini):
    frames = list(decode_frames(mini / "data/test/0/kin/stereo_sbs.mp4"))
    assert len(frames) == 9 and frames[0].shape == (48, 128, 3)  # 2 x 64 wide, 48 high (canonical: 44 x 32)
    source = Image.open(sorted((mini / "tum/rgbd_dataset_freiburg1_xyz/rgb").iterdir())[0]).convert("RGB")
    dec = zarr.open_group(str(mini / "data/clips/0/kin/decoded.zarr"), mode="r")
    canonical = image_to_source(torch.from_numpy(dec["rgb"][0]).permute(2, 0, 1), store_map(dec)).permute(1, 2, 0)

    def luma_error(image) -> float:  # H.264 keeps luma, not the chroma of per-pixel noise
        weights = [0.299, 0.587, 0.114]
        return float(
            np.abs(frames[0][:, :64].astype(float) @ weights - np.asarray(image, dtype=float) @ weights).mean()
        )

    assert luma_error(source) < 0.5 * luma_error(canonical.numpy())  # the source image, not the canonical upsampled
    infer = next(decode_frames(mini / "data/test/0/kin/side_by_side.mp4"))
    assert infer.shape == (48, 3 * 64, 3)


def test_frames_of_a_clip_whose_source_is_gone_come_back_at_the_source_resolution(tmp_path):
    """A TUM clip decoded from a folder that is no longer there: its canonical frames mapped back onto the source
    grid, still 64x48 (what the stereo video then shows)."""
    seq, _ = write_tum(tmp_path, frames=3, h=48, w=64)
    ingest("tum", seq, tmp_path / "dec.zarr", 32, intrinsics=CAM, multiple=4, progress=False)
    dec = zarr.open_group(str(tmp_path / "dec.zarr"), mode="r")
    there = list(source_rgb(dec))
    shutil.rmtree(seq)
    gone = list(source_rgb(dec))
    assert len(gone) == 2 and gone[0].shape == there[0].shape == (48, 64, 3) and gone[0].dtype == np.uint8
    assert np.abs(gone[0].astype(float) - there[0]).mean() < np.abs(gone[0].astype(float) - there[1]).mean()


def test_a_15_hz_clip_writes_15_fps_videos(mini):
    assert _json(mini, "reports/clips/0/kin/metrics.json")["clip"]["frames"] == 9
    decoded = zarr.open_group(str(mini / "data/clips/0/kin/decoded.zarr"), mode="r")
    assert decoded.attrs["fps"] == pytest.approx(15, 1e-4)
    for video in ("side_by_side.mp4", "stereo_sbs.mp4"):
        with av.open(str(mini / "data/test/0/kin" / video)) as c:
            assert c.streams.video[0].average_rate == 15, video  # 14.99992 was truncated to 14


# --- 13. figures across machines ---

TRAIN_AND_SCORE = """
import json, sys
import torch
from refiner.training.checkpoint import load_refiner
from refiner.data.clip import open_clip
from refiner.evaluation.evaluate import evaluate_clip
from refiner.inference.infer import run_infer
from refiner.training.train import train
from tests.clip_fixtures import tiny_params
root, out = sys.argv[1:3]
p = tiny_params(
    windows={"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
    train={"steps": 6, "eval_every": 6, "crop": 16, "warmup_steps": 1, "batch_size": 2, "init": None},
    model={"channels": 8, "ssm_hidden": 8, "d_state": 4},
)
train(p, f"{root}/manifest", f"{out}/model.safetensors", f"{out}/state", f"{out}/train", progress=False)
clip, _ = open_clip(f"{root}/manifest", "te")
model = load_refiner(f"{out}/model.safetensors")[0]
run_infer(model, clip, p, f"{out}/te.zarr", f"{out}/frames", f"{out}/reports", progress=False)
figures = evaluate_clip(clip, f"{out}/te.zarr", p.evaluate, p.windows.length, p.stereo.baseline_m)["metrics"]["methods"]
print(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "methods": figures}))
"""


def test_figures_agree_within_the_stated_tolerance_when_the_cpu_kernels_differ(tmp_path):
    """Another machine sums in another order: ATen's scalar kernels (ATEN_CPU_CAPABILITY=default) against this
    CPU's vector kernels give a model with other bytes; training, inference and evaluation must still give every
    figure within the tolerance the README states."""
    readme = (ROOT / "README.md").read_text()  # its Reliability section states the tolerance
    stated = re.search(r"relative\s+tolerance of ([0-9.e-]+)\.", readme[readme.index("## Reliability") :])
    assert stated, "README, Reliability: state the tolerance the figures agree within across machines"
    rtol = float(stated[1])
    make_corpus(tmp_path, frames=10, size=32, static_frames=5)
    runs = []
    for capability in ("default", None):
        env = _env() | ({"ATEN_CPU_CAPABILITY": capability} if capability else {})
        out = tmp_path / (capability or "native")
        done = subprocess.run(
            [sys.executable, "-c", TRAIN_AND_SCORE, str(tmp_path), str(out)], cwd=ROOT, env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        runs.append((json.loads(done.stdout.decode().splitlines()[-1]), (out / "model.safetensors").read_bytes()))
    (a, model_a), (b, model_b) = runs
    if a["cpu"] != b["cpu"]:
        assert model_a != model_b  # the kernels did sum in another order
    for method, figures in a["methods"].items():
        for key, value in figures.items():
            assert b["methods"][method][key] == pytest.approx(value, rel=rtol, abs=1e-12), (method, key)

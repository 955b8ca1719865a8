"""Teachers as plug-ins: a teacher from a package outside refiner/, found through its entry point, runs through the
prepare stage (in a Ray worker) and refiner-video with no code change; calibration tables belong to one teacher only."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from refiner.core.config import ModelParams
from refiner.data.manifest import calibrate, calibration_for, clip_entry, fit_calibration
from refiner.data.synth.clips import render_clip, write_clip
from refiner.model.refiner import Refiner
from refiner.teachers import TeacherBatch, TeacherContext, make_teacher, teacher_id
from refiner.teachers.cache import write_teacher_store
from refiner.training.checkpoint import save_refiner

from .clip_fixtures import ROOT, make_clip, tiny_params

PLUGIN = '''
"""A third-party teacher: depth 2 m plus a ramp that moves with the frame number; no uncertainty."""
import numpy as np
from refiner.teachers.base import TeacherFrame

class RampTeacher:
    name = "ramp"
    label = "ramp: a test plug-in, not a depth model"
    batch_size = 3

    def __init__(self, ctx):
        self.offset = float(ctx.options.get("offset", 0.0))
        self.calls = []

    def identity(self):
        return {"name": self.name, "offset": self.offset}

    def predict(self, batch):
        self.calls.append(len(batch))
        h, w = batch.rgb.shape[1:3]
        ramp = np.linspace(0, 1, w, dtype=np.float32)[None].repeat(h, 0)
        return [TeacherFrame(2.0 + self.offset + 0.01 * t + ramp, None, k) for t, k in zip(batch.index, batch.K)]
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A folder holding an installed-looking distribution ``ramp-teacher`` whose entry point registers ``ramp``."""
    site = tmp_path_factory.mktemp("site")
    (site / "ramp_teacher.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "ramp_teacher-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ramp-teacher\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[refiner.teachers]\nramp = ramp_teacher:RampTeacher\n")
    return site


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "DVC_NO_ANALYTICS": "1"}


def _run(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=_env(site), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_an_entry_point_teacher_runs_through_the_prepare_stage_on_ray(plugin_site, tmp_path):
    """The shards and prepare stages' scripts on three tiny clips, one taught by the plug-in in a Ray worker."""
    raw = tiny_params().model_dump(mode="json")
    clips = {n: {"kind": "synthetic", "seed": s} for n, s in (("tr", 1), ("va", 2), ("te", 3))}
    clips["te"]["teacher"] = "ramp"  # a clip names the plug-in, as users do
    raw["corpus"].update(clips=clips, train=["tr"], val=["va"], test=["te"])
    raw["corpus"]["synthetic"].update(width=32, height=32, frames=7, static_frames=5)
    raw["decode"]["size"], raw["train"]["crop"], raw["adapt"]["crop"] = 32, 16, 16
    raw["adapt"]["clips"] = []  # the default adapts clips this corpus lacks
    raw["teacher"]["options"] = {"ramp": {"offset": 0.5}}
    raw["prepare"].update(shards=[0], local_cpus=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    _run([sys.executable, str(ROOT / "stages/shards.py"), "data/shards"], tmp_path, plugin_site)
    args = ["data/shards/0.json", "data/clips/0", "views", "index.json", "metrics.json", "cache"]
    _run([sys.executable, str(ROOT / "stages/prepare.py"), *args], tmp_path, plugin_site)
    g = zarr.open_group(str(tmp_path / "data/clips/0/te/teacher.zarr"), mode="r")
    assert (g.attrs["teacher"], g.attrs["teacher_plugin"], g.attrs["has_uncertainty"]) == ("ramp", "ramp", False)
    assert g.attrs["teacher_label"].startswith("ramp: a test plug-in")
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None].repeat(32, 0)
    for t in (0, 4, 6):  # batches of 3: frames 0-2, 3-5, 6 in order, each with its own index
        np.testing.assert_allclose(g["depth"][t], 2.5 + 0.01 * t + ramp, rtol=1e-6)
    assert np.all(g["uncertainty"][...] == 1) and np.allclose(g["rank"][3], 0.5)  # none given: every rank ties
    decoded = zarr.open_group(str(tmp_path / "data/clips/0/te/decoded.zarr"), mode="r")
    np.testing.assert_array_equal(g["K_prompt"][...], decoded["K"][...])
    assert np.isnan(g["K_predicted"][...]).all()  # it predicts no camera
    assert json.loads((tmp_path / "metrics.json").read_text())["te"]["teacher_id"] == g.attrs["teacher_id"]


def test_an_entry_point_teacher_runs_through_refiner_video(plugin_site, tmp_path):
    clip = render_clip(6, 48, 64, 70.0, 0.063, 3, seed=9)
    write_clip(clip, tmp_path / "src", fps=10, crf=0, baseline_m=0.063)
    tiny = ModelParams.from_file(channels=4, ssm_hidden=4, d_state=2)
    save_refiner(tmp_path / "m.safetensors", Refiner(tiny, 4), tiny, 4, {})
    argv = [str(tmp_path / "src/clip.mp4"), "--hfov-deg", "70", "--model", str(tmp_path / "m.safetensors")]
    argv += ["--out", str(tmp_path / "out"), "--teacher", "ramp", "--size", "32", "--quiet"]
    argv += ["--cache", str(tmp_path / "cache")]
    _run([sys.executable, "-m", "refiner.app.cli", *argv], tmp_path, plugin_site)
    summary = json.loads((tmp_path / "out/outputs.json").read_text())
    assert summary["teacher"] == "ramp" and summary["teacher_id"].startswith("ramp:")
    assert summary["calibration"]["source"].startswith("self:")  # no table fitted for it: the stated fallback
    depth = zarr.open_group(str(tmp_path / "out/depth.zarr"), mode="r")["depth"][...]
    assert depth.shape == (6, 48, 64) and (depth >= 2).all()  # at source resolution; untrained = the teacher


def test_a_module_attr_teacher_and_its_batches(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    teacher = make_teacher("ramp_teacher:RampTeacher", TeacherContext(clip="c", options={"offset": 1.0}))
    batch = TeacherBatch(np.zeros((2, 4, 5, 3), np.uint8), np.stack([np.eye(3)] * 2), np.array([7, 8]))
    frames = teacher.predict(batch)
    assert [f.depth[0, 0] for f in frames] == pytest.approx([3.07, 3.08]) and teacher.calls == [2]
    other = make_teacher("ramp_teacher:RampTeacher", TeacherContext(clip="c", options={"offset": 2.0}))
    assert teacher_id(teacher) != teacher_id(other)  # other settings: another teacher for calibration


def test_a_teacher_without_a_fitted_table_gets_the_fallback_never_another_teachers(tmp_path):
    """Two teachers: the simulated one with the corpus ranges (which trains) and the same code with other ranges
    (a profile; on the test clip only). The test clip must get its own fallback, named, not the trained table."""
    entries = [make_clip(tmp_path, n, frames=6, size=32, seed=s) for n, s in (("tr_a", 1), ("tr_b", 2))]
    params = tiny_params(teacher={"profiles": {"wide": {"name": "simulated", "noise_rel": [0.05, 0.08]}}})
    wide = params.teacher.resolve("wide")
    test = tmp_path / "te"
    test_entry = make_clip(tmp_path, "te", frames=6, size=32, seed=3)
    write_teacher_store(test / "decoded.zarr", test / "wide.zarr", wide, "te", progress=False, group="wide")
    test_entry = clip_entry("te", test_entry["decoded"], str(test / "wide.zarr"), test_entry["guidance"])
    splits, tables = calibrate({"train": entries, "val": [], "test": [test_entry]}, 10, "self")
    (trained,) = tables.values()
    assert trained["fitted_on"] == ["tr_a", "tr_b"] and test_entry["teacher_id"] not in tables
    got = splits["test"][0]["calibration"]
    assert got["teacher_id"] == test_entry["teacher_id"] != trained["teacher_id"]
    assert got["source"].startswith("self:") and got["fitted_on"] == ["te"]
    assert got["reliability"] != trained["reliability"]
    rank = calibration_for(tables, test / "wide.zarr", "rank")
    assert rank["reliability"] == [1.0, 0.0] and rank["fitted_on"] == [] and rank["source"].startswith("rank")
    assert calibration_for(tables, entries[0]["teacher"], "rank") == trained  # its own teacher: its own table
    # GT sums of a clip taught by another teacher never enter a teacher's table
    assert fit_calibration([*entries, test_entry], 10)[trained["teacher_id"]] == trained


def test_the_learned_teacher_needs_no_ground_truth(tmp_path):
    """A video without GT, taught by the shipped learned teacher: the store is written, the clip's manifest entry
    has no GT and gets the GT-free fallback table fitted on the clip itself, named as such."""
    clip = render_clip(6, 64, 80, 70.0, 0.063, 3, seed=8)
    write_clip(clip, tmp_path / "src", fps=10, crf=0, baseline_m=0.063)
    from refiner.data.ingest import ingest_video

    ingest_video(tmp_path / "src/clip.mp4", {"hfov_deg": 70}, tmp_path / "dec.zarr", 32, progress=False, multiple=4)
    assert "depth_gt" not in zarr.open_group(str(tmp_path / "dec.zarr"), mode="r")  # nothing to read, nothing read
    p = tiny_params().teacher.resolve("learned")
    metrics = write_teacher_store(tmp_path / "dec.zarr", tmp_path / "tea.zarr", p, "mine", progress=False)
    assert metrics["absrel_vs_gt"] is None and metrics["teacher_plugin"] == "learned"
    g = zarr.open_group(str(tmp_path / "tea.zarr"), mode="r")
    depth = g["depth"][...]
    assert depth.shape == (6, 32, 40) and (depth > 0).all() and np.isfinite(depth).all()
    assert g.attrs["has_uncertainty"] and g.attrs["teacher_label"].startswith("learned")
    from refiner.data.guidance import write_guidance

    write_guidance(tmp_path / "dec.zarr", tmp_path / "tea.zarr", tmp_path / "gui.zarr", progress=False)
    entry = clip_entry("mine", str(tmp_path / "dec.zarr"), str(tmp_path / "tea.zarr"), str(tmp_path / "gui.zarr"))
    (done,) = calibrate({"test": [entry]}, 10, "self")[0]["test"]
    assert not done["has_gt"] and done["calibration"]["fitted_on"] == ["mine"]
    assert done["calibration"]["source"].startswith("self:")

"""The test stage's shard runner on a tiny corpus: a clip runs once, is skipped while its inputs and outputs are
unchanged, runs again when a setting it reads or a file it wrote changes, and stale clips go."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from refiner.core.config import ModelParams, Params, load_params
from refiner.core.store import read_json
from refiner.inference.heldout_shard import ShardFolders, input_digest, recorded, run_shard
from refiner.model.refiner import Refiner
from refiner.training.checkpoint import save_refiner
from tests.clip_fixtures import make_corpus

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {n: {"kind": "synthetic", "seed": i} for i, n in enumerate(("tr_a", "tr_b", "va", "te"))}  # make_corpus's
TINY = {
    "windows": {"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
    "evaluate": {"bilateral_radius": 1},
    "adapt": {"clips": []},
    "test": {"workers": 1},
}


def tiny_corpus_params(folder: Path) -> Params:
    """params.yaml with make_corpus's clips as the whole corpus (merging would keep the default clips)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["corpus"].update(clips=CLIPS, train=["tr_a", "tr_b"], val=["va"], test=["te"])
    for section, values in TINY.items():
        raw[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(folder / "params.yaml")


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    manifest = str(make_corpus(root / "corpus", frames=10, size=32, static_frames=5))
    model = ModelParams.from_file(ROOT / "params.yaml", channels=4, ssm_hidden=4, d_state=2)
    save_refiner(root / "m.safetensors", Refiner(model, 4), model, 4, {})
    folders, params = ShardFolders(root / "data", root / "reports"), tiny_corpus_params(root)
    first = run_shard(["te"], manifest, str(root / "m.safetensors"), params, folders)
    return manifest, str(root / "m.safetensors"), folders, params, first


KILL_IN_STEREO = """
import os, signal, sys
from pathlib import Path
from refiner.core.config import load_params
from refiner.inference import heldout
from refiner.inference.heldout_shard import ShardFolders, run_shard
params_file, manifest, model, data, reports = sys.argv[1:6]
def dying(*args, **kwargs):  # kill -9 in the clip's last step, its first three written into the temporaries
    os.kill(os.getpid(), signal.SIGKILL)
heldout.stereo_step = dying
params = load_params(params_file).merged({"infer": {"noise_ceiling": 0.1}})  # the clip must run again
run_shard(["te"], manifest, model, params, ShardFolders(Path(data), Path(reports)))
"""


def _stamps(folders: ShardFolders) -> dict[str, int]:
    files = [f for d in (folders.data, folders.reports) for f in d.rglob("*") if f.is_file()]
    return {str(f): f.stat().st_mtime_ns for f in files}


@pytest.mark.slow
def test_a_clip_runs_once_then_is_skipped_with_the_same_figures(shard):
    manifest, model, folders, params, first = shard
    assert list(first.ran) == ["te"] and "1 test clips: 1 run, 0 up to date" in first.summary()
    data, reports = folders.outputs("te")
    assert {"refined.zarr", "frames", "adapted", "side_by_side.mp4", "stereo_sbs.mp4"} <= {
        p.name for p in data.iterdir()
    }
    assert (data / "adapted/NOT_ADAPTED").is_file()  # adapt.clips is empty
    methods = read_json(reports / "metrics.json")["methods"]
    assert first.figures["te"]["methods"] == methods and {"teacher", "ema", "bilateral", "refiner"} <= set(methods)
    assert read_json(reports / "stereo/metrics.json")["refiner"] == first.figures["te"]["stereo"]["refiner"]
    before = _stamps(folders)
    again = run_shard(["te"], manifest, model, params, folders)
    assert again.ran == {} and again.figures == first.figures and _stamps(folders) == before
    assert "1 test clips: 0 run, 1 up to date" in again.summary()


@pytest.mark.slow
def test_what_a_clip_reads_decides_whether_it_runs_again(shard):
    manifest, model, folders, params, _ = shard
    digest = input_digest("te", manifest, model, params)
    assert recorded(folders, "te", digest) is not None
    assert input_digest("te", manifest, model, params.merged({"test": {"workers": 3}})) == digest  # how, not what
    assert input_digest("te", manifest, model, params.merged({"infer": {"noise_ceiling": 0.1}})) != digest
    assert input_digest("te", manifest, model, params.merged({"stereo": {"baseline_m": 0.07}})) != digest
    (folders.reports / "te/evaluation.md").write_text("edited by hand\n")  # an output no longer as written
    assert recorded(folders, "te", digest) is None
    rerun = run_shard(["te"], manifest, model, params, folders)
    assert list(rerun.ran) == ["te"] and "edited by hand" not in (folders.reports / "te/evaluation.md").read_text()
    assert recorded(folders, "te", digest) is not None


def test_clips_no_longer_in_the_shard_are_removed_with_their_records(tmp_path):
    folders = ShardFolders(tmp_path / "data", tmp_path / "reports")
    for clip in ("kept", "gone"):
        for d in (folders.data, folders.reports):
            (d / clip).mkdir(parents=True)
            (d / clip / "x").write_text(clip)
        folders.record(clip).parent.mkdir(exist_ok=True)
        folders.record(clip).write_text("{}")
    assert folders.remove_stale({"kept"}) == ["gone"]
    assert sorted(p.name for p in folders.data.iterdir()) == [".records", "kept"]
    assert [p.name for p in folders.reports.iterdir()] == ["kept"]
    assert [p.name for p in (folders.data / ".records").iterdir()] == ["kept.json"]


@pytest.mark.slow
def test_a_kill_inside_a_clip_keeps_its_previous_outputs_and_record(shard):
    manifest, model, folders, params, first = shard
    before, digest = _stamps(folders), input_digest("te", manifest, model, params)
    args = [folders.data.parent / "params.yaml", manifest, model, folders.data, folders.reports]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", KILL_IN_STEREO, *map(str, args)], env=env, cwd=ROOT, capture_output=True
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    temps = [p.name for d in (folders.data, folders.reports) for p in d.iterdir() if ".tmp" in p.name]
    assert sorted(t.split(".tmp")[0] for t in temps) == [".te", ".te"]  # both half-written folders, beside
    kept = {f: t for f, t in _stamps(folders).items() if ".tmp" not in f}
    assert kept == before and recorded(folders, "te", digest) == first.figures["te"]  # the old ones, as they were
    changed = params.merged({"infer": {"noise_ceiling": 0.1}})
    assert list(run_shard(["te"], manifest, model, changed, folders).ran) == ["te"]
    assert not [p for d in (folders.data, folders.reports) for p in d.iterdir() if ".tmp" in p.name]

"""The evaluate and report steps on a tiny corpus clip: complete JSON, no NaN, reports that name the clip."""

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch

from refiner.core.config import EvaluateParams, StereoParams
from refiner.core.store import create_group, frames_array
from refiner.data.clip import full, open_clip
from refiner.evaluation.evaluate import evaluate_clip
from refiner.evaluation.perceptual import lpips_random_backbone
from refiner.evaluation.reports import aggregate, write_aggregate, write_clip_report

from .clip_fixtures import make_clip, make_corpus, open_entry

P = EvaluateParams.from_file(bilateral_radius=1)
B = StereoParams.from_file().baseline_m  # the eye separation of disparity jitter


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    return not isinstance(tree, float) or math.isfinite(tree)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    clip, entry = open_clip(make_corpus(tmp, frames=8, size=32, static_frames=5), "te")
    depth = clip.teacher_depth((slice(None), slice(None), slice(None)))
    refined = tmp / "refined.zarr"
    g = create_group(refined)
    smooth = np.repeat(np.median(depth[:5], 0, keepdims=True), 8, 0)  # a "refiner" that removed the flicker
    frames_array(g, "depth", depth.shape, np.float32)[...] = smooth
    result = evaluate_clip(clip, str(refined), P, 4, B, (lpips_random_backbone(), None))
    info = {
        "name": "te",
        "dataset_name": "synthetic",
        "split": "test",
        "teacher_name": "simulated",
        "provenance": clip.provenance(),
        "scene_id": "te",
        "frames": 8,
    }
    return tmp, result, info


def test_every_method_has_every_figure_and_nothing_is_nan(scored):
    _, result, _ = scored
    metrics = result["metrics"]
    assert set(metrics["methods"]) == {"teacher", "ema", "bilateral", "refiner"}
    need = {
        "absrel",
        "rmse",
        "d1",
        "flicker_std_rel",
        "tae",
        "tae_vda",
        "opw_metric",
        "opw_nvds",
        "t_scin",
        "disparity_jitter_px",
    }
    for m in metrics["methods"].values():
        assert need <= set(m)
    assert _finite(metrics["methods"]) and _finite(metrics["ratios"])
    r, t = metrics["methods"]["refiner"], metrics["methods"]["teacher"]
    assert r["flicker_std_rel"] < 1e-6 < t["flicker_std_rel"]
    assert metrics["ratios"]["refiner_vs_teacher"]["tae"] == pytest.approx(r["tae"] / t["tae"])
    assert metrics["gt_floor"]["tae"] < 0.5 * t["tae"]
    assert {"low", "medium", "high", "moving", "static"} <= set(metrics["stratified"]["teacher"])
    assert metrics["skipped"] == {}


def test_missing_lpips_weights_are_said_in_words(scored, tmp_path):
    tmp, _, _ = scored
    clip, _ = open_clip(tmp / "manifest", "te")
    note = "T-SCIN: LPIPS backbone weights not found at /nowhere"
    result = evaluate_clip(clip, str(tmp / "refined.zarr"), P, 4, B, (None, note))
    assert "t_scin" not in result["metrics"]["methods"]["teacher"] and result["metrics"]["skipped"]["t_scin"] == note


def test_clip_report_names_the_clip_and_the_aggregate_is_the_mean(scored, tmp_path):
    _, result, info = scored
    write_clip_report(tmp_path / "clips/te", result, info)
    md = (tmp_path / "clips/te/evaluation.md").read_text()
    assert "split **test**" in md and "held out" not in md
    assert "a rendered video clip (rendered depth GT) with the simulated teacher" in md and "stand-ins" in md
    assert (tmp_path / "clips/te/figures/strip.png").stat().st_size > 0
    per = json.loads((tmp_path / "clips/te/metrics.json").read_text())
    other = json.loads(json.dumps(per))
    for m in other["methods"].values():
        for k in m:
            m[k] *= 3
    agg = aggregate({"a": per, "b": other})
    assert agg["methods"]["teacher"]["tae"] == pytest.approx(2 * per["methods"]["teacher"]["tae"])
    assert agg["n_clips"]["tae"] == 2 and agg["provenance"].startswith("2 rendered video clips")
    write_aggregate(tmp_path, agg)
    assert json.loads((tmp_path / "metrics.json").read_text())["clips"] == ["a", "b"]
    assert "| tae_vda |" in (tmp_path / "evaluation.md").read_text()


def _close(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12, nan_ok=True), path  # EMA state: float32
    else:
        assert a == b, path


@pytest.mark.parametrize("span_windows", [1, 3])
def test_span_by_span_scoring_equals_one_span_over_the_whole_clip(scored, span_windows):
    """Spans of 2 or 6 frames (pairs across span borders, EMA carried, bilateral margins) give the whole-clip
    figures: every metric, stratum, floor, per-frame row and drift window."""
    tmp, _, _ = scored
    clip, _ = open_clip(tmp / "manifest", "te")
    lpips = (lpips_random_backbone(), None)
    whole = evaluate_clip(clip, str(tmp / "refined.zarr"), P, 2, B, lpips, span_windows=4)  # 8 frames: one span
    spans = evaluate_clip(clip, str(tmp / "refined.zarr"), P, 2, B, lpips, span_windows=span_windows)
    _close(whole["metrics"], spans["metrics"])
    for a, b in zip(whole["per_frame"] + whole["drift"], spans["per_frame"] + spans["drift"], strict=True):
        _close(a, b)
    assert list(spans["snapshots"]) == [0, 4, 7]
    for t, frames in whole["snapshots"].items():
        assert all(torch.equal(frames[k], spans["snapshots"][t][k]) for k in frames)


def test_evaluate_memory_does_not_grow_with_clip_length(tmp_path):
    """Case 8 of the reliability issue: scoring holds one span, not every method's whole clip."""
    peaks = []
    for frames in (16, 64):
        clip = open_entry(make_clip(tmp_path / str(frames), "c", frames=frames, size=64, static_frames=3))
        refined = create_group(tmp_path / f"r{frames}.zarr")
        frames_array(refined, "depth", (frames, 64, 64), np.float32)[...] = clip.teacher_depth(full(slice(None)))
        runs = []
        for _ in range(2):  # the lower of two: a one-off allocation elsewhere in the process is not the clip's
            tracemalloc.start()
            evaluate_clip(clip, str(tmp_path / f"r{frames}.zarr"), P, 4, B)
            runs.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        peaks.append(min(runs))
    assert peaks[1] < 1.2 * peaks[0], peaks  # holding the clip: about 4x

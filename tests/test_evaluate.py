"""The evaluate stage end to end on a tiny clip: valid JSON, expected keys, no NaN, reports written."""

import json
import math

import numpy as np
import pytest
import zarr

from refiner.config import ConfigError, EvaluateParams, params_from_dict
from refiner.evaluate import evaluate_clip, write_reports
from refiner.holdout import evaluate_holdout
from refiner.store import create_group, frames_array

from .clip_fixtures import make_stores


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    return not isinstance(tree, float) or math.isfinite(tree)


def test_evaluate_writes_complete_reports(tmp_path):
    decoded, teacher = make_stores(tmp_path, frames=8, size=32, factor=4, static_frames=5)
    depth = np.asarray(zarr.open_group(str(teacher), mode="r")["depth"][...])
    refined = tmp_path / "refined.zarr"
    g = create_group(refined)
    smooth = np.repeat(np.median(depth[:5], 0, keepdims=True), 8, 0)  # a "refiner" that removed the flicker
    frames_array(g, "depth", depth.shape, np.float32)[...] = smooth
    metrics, per_frame, strat, depths = evaluate_clip(decoded, teacher, refined, EvaluateParams(), holdout_frames=4)
    assert set(metrics["methods"]) == {"teacher", "ema", "bilateral", "refiner"}
    for m in metrics["methods"].values():
        assert {"absrel", "rmse", "d1", "flicker_std_rel", "tae", "opw_metric", "disparity_jitter_px"} <= set(m)
    assert _finite(metrics["methods"]) and _finite(metrics["delta_vs_teacher"])
    r, t = metrics["methods"]["refiner"], metrics["methods"]["teacher"]
    assert r["flicker_std_rel"] < 1e-6 < t["flicker_std_rel"]
    assert metrics["delta_vs_teacher"]["flicker_std_rel"] < 0
    assert metrics["gt_floor"]["tae"] < 0.5 * t["tae"] and metrics["gt_floor"]["opw_metric"] < 0.01
    assert metrics["heldout"]["frames"] == 4 and "t_scin" in metrics["skipped"]
    assert set(metrics["stratified"]["teacher"]) == {"low", "medium", "high"}
    assert len(per_frame) == 8 and {"teacher_absrel", "refiner_scale_ratio", "ema_patch_median_m"} <= set(per_frame[0])
    write_reports(tmp_path / "reports", metrics, per_frame, strat, depths, 5)
    assert json.loads((tmp_path / "reports/metrics.json").read_text())["methods"]["refiner"]["absrel"] > 0
    md = (tmp_path / "reports/evaluation.md").read_text()
    assert "synthetic stand-in" in md and "| flicker_std_rel |" in md
    assert (tmp_path / "reports/figures/scale_drift.png").stat().st_size > 0
    assert (tmp_path / "reports/plots/per_frame.csv").read_text().startswith("frame,teacher_")


def test_holdout_clip_must_be_another_scene(tmp_path):
    params = params_from_dict({"synth": {"seed": 3}, "holdout": {"seed": 3}})
    with pytest.raises(ValueError, match="holdout.seed"):
        evaluate_holdout(params, tmp_path / "m.safetensors", tmp_path / "w", tmp_path / "r")
    with pytest.raises(ConfigError, match="holdout.static_frames"):
        params_from_dict({"holdout": {"frames": 4, "static_frames": 5}})

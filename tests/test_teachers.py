"""Teachers: the simulated stand-in's statistics, confidence conversion, calibration, the UniDepth adapter
contract against a faithful double of its API, and the teacher/guidance/manifest stages on a tiny clip."""

import hashlib
import sys
import types

import numpy as np
import pytest
import torch
import zarr
from scipy.stats import spearmanr

from refiner.data.guidance import edge_map
from refiner.data.manifest import find_clip, fit_calibration, load_calibration, load_split, validate_manifest
from refiner.data.synth.clips import render_clip
from refiner.teachers import TeacherBatch, TeacherContext, make_teacher
from refiner.teachers.calibration import CalibrationAccumulator
from refiner.teachers.confidence import uncertainty_rank, uncertainty_to_confidence
from refiner.teachers.simulated import ERROR_PARAMS, clip_key, draw_errors

from .clip_fixtures import make_corpus, open_entry

_RANGES = {  # params.yaml teacher: ranges
    "scale_std": (0.015, 0.045),
    "scale_corr": (0.3, 0.8),
    "jump_prob": (0.0, 0.08),
    "jump_std": (0.02, 0.06),
    "warp_amp": (0.01, 0.04),
    "warp_drift": (0.05, 0.25),
    "noise_rel": (0.005, 0.02),
    "edge_blur_px": (0.8, 2.0),
    "uncertainty_noise": (0.3, 1.2),
}


def _sim_params(seed=0, **fixed):
    """A stand-in for TeacherParams: the params.yaml ranges, with ``fixed`` values as [v, v] ranges."""
    ranges = {**_RANGES, **{k: (v, v) for k, v in fixed.items()}}
    return types.SimpleNamespace(name="simulated", seed=seed, low_res_factor=4, calibration_bins=10, **ranges)


def _sim(p, clip, gt=None):
    """The simulated teacher of ``clip`` whose frame t has ground truth ``gt(t)`` (default: a constant map)."""
    return make_teacher("simulated", TeacherContext(clip=clip, params=p, gt=gt or (lambda t: np.ones((4, 4)))))


def _predict(teacher, t, K=None, rgb=None):
    """One frame through the teacher interface."""
    rgb = np.zeros((4, 4, 3), np.uint8) if rgb is None else rgb
    K = np.eye(3) if K is None else K
    return teacher.predict(TeacherBatch(rgb[None], np.asarray(K)[None], np.array([t])))[0]


def _fixed_of(p):
    """The low ends of a stand-in's ranges, as fixed values."""
    return {k: getattr(p, k)[0] for k in _RANGES}


def _run_sim(p, frames=200, size=24, clip="clip"):
    gt = np.full((size, size), 3.0, np.float32)
    gt[:, size // 2 :] = 1.5
    teacher = _sim(p, clip, lambda t: gt)
    return [_predict(teacher, t, rgb=np.zeros((size, size, 3), np.uint8)) for t in range(frames)], gt


def test_simulated_scale_error_matches_its_params():
    p = _sim_params(scale_std=0.03, scale_corr=0.5, jump_prob=0.0, warp_amp=0.0, noise_rel=0.0, edge_blur_px=0.0)
    frames, gt = _run_sim(p, frames=400)
    log_s = np.array([np.log(np.median(f.depth / gt)) for f in frames])
    assert log_s.std() == pytest.approx(0.03, rel=0.15)
    assert np.corrcoef(log_s[1:], log_s[:-1])[0, 1] == pytest.approx(0.5, abs=0.12)


def test_simulated_noise_level_and_determinism_by_seed_and_clip():
    p = _sim_params(scale_std=0.0, jump_prob=0.0, warp_amp=0.0, noise_rel=0.02, edge_blur_px=0.0)
    frames, gt = _run_sim(p, frames=5)
    rel = frames[0].depth / gt - 1
    assert rel.std() == pytest.approx(0.02, rel=0.15)
    again, _ = _run_sim(p, frames=5)
    np.testing.assert_array_equal(frames[4].depth, again[4].depth)  # deterministic by (seed, clip name)
    np.testing.assert_array_equal(frames[4].uncertainty, again[4].uncertainty)
    for other in (_run_sim(_sim_params(seed=1, **_fixed_of(p)), frames=5)[0], _run_sim(p, frames=5, clip="b")[0]):
        assert not np.array_equal(frames[4].depth, other[4].depth)
    np.testing.assert_array_equal(frames[0].K_used, np.eye(3))
    np.testing.assert_array_equal(frames[0].K_predicted, frames[0].K_used)  # it takes the camera it is given


def test_each_clip_draws_its_own_error_model_and_sequence():
    p = _sim_params()
    a, b, a2 = (_sim(p, name) for name in ("room_a", "room_b", "room_a"))
    assert a.errors == a2.errors and a.errors != b.errors
    assert set(a.errors) == set(ERROR_PARAMS)
    for teacher in (a, b, _sim(_sim_params(seed=3), "room_a")):
        for name, (low, high) in _RANGES.items():
            assert low <= teacher.errors[name] <= high
    assert _sim(_sim_params(seed=3), "room_a").errors != a.errors
    seq = {k: [t.scale() for _ in range(30)] for k, t in (("a", a), ("b", b), ("a2", a2))}
    assert seq["a"] == seq["a2"] and seq["a"] != seq["b"]
    # the same ranges, fixed to one value, still give two clips two different error sequences
    fixed = _sim_params(**{k: (lo + hi) / 2 for k, (lo, hi) in _RANGES.items()})
    x, y = _sim(fixed, "room_a"), _sim(fixed, "room_b")
    assert x.errors == y.errors and [x.scale() for _ in range(10)] != [y.scale() for _ in range(10)]


def test_clip_key_is_a_stable_hash_of_the_name():
    digest = hashlib.sha256(b"room_t1").digest()
    assert clip_key(5, "room_t1") == [5, int.from_bytes(digest[:8], "little")]
    p = _sim_params()
    p.scale_std = (0.2, 0.1)
    with pytest.raises(ValueError, match="scale_std"):
        draw_errors(p, "x")


_PAIR_SCENES = ((11, "dolly"), (14, "orbit"), (32, "forward"))


@pytest.fixture(scope="module")
def rendered_pairs():
    """Two 256x256 frames (the pipeline's decode size) of three synthetic scenes, one per moving camera kind."""
    return [render_clip(2, 256, 256, 70.0, 0.063, 1, seed, camera_path=path) for seed, path in _PAIR_SCENES]


def _rank_corr(noise: float, clips) -> float:
    """Mean per-frame Spearman corr(uncertainty, |relative error| after median rescaling) at mid-range errors."""
    p = _sim_params(**{**{k: (lo + hi) / 2 for k, (lo, hi) in _RANGES.items()}, "uncertainty_noise": noise})
    corr = []
    for j, name in enumerate(("room_a", "room_b", "room_c", "room_d", "room_e", "room_f")):
        clip = clips[j % len(clips)]  # two clips (two error models) per scene
        teacher = _sim(p, name, lambda t, clip=clip: clip.depth[t])
        for t in range(2):
            fr, gt = _predict(teacher, t, clip.K, clip.rgb[t]), clip.depth[t]
            rel = np.abs(fr.depth * np.median(gt / fr.depth) / gt - 1)
            corr.append(spearmanr(fr.uncertainty.ravel(), rel.ravel())[0])
    return float(np.mean(corr))


def test_uncertainty_ranks_the_error_only_loosely(rendered_pairs):
    low, high = _rank_corr(0.3, rendered_pairs), _rank_corr(1.2, rendered_pairs)
    assert 0.25 < high < low < 0.75


def test_uncertainty_rank_equals_its_definition_with_ties_and_invalid_pixels():
    rng = np.random.default_rng(4)
    u = rng.integers(0, 6, (7, 9)).astype(np.float32)  # long runs of ties
    u[0, 0], u[1, 1] = np.nan, np.inf
    valid = rng.random((7, 9)) > 0.2
    ok = valid & np.isfinite(u)
    v = u[ok]
    below = (v[None, :] < v[:, None]).sum(1)
    at_or_below = (v[None, :] <= v[:, None]).sum(1)
    expected = np.ones(u.shape)
    expected[ok] = (below + at_or_below - 1) / 2 / (v.size - 1)  # mean 0-based position of the value's run
    np.testing.assert_allclose(uncertainty_rank(u, valid), expected, rtol=1e-6)
    assert uncertainty_rank(u, np.zeros_like(valid)).min() == 1  # nothing valid: all least certain


def test_confidence_is_in_unit_range_and_decreases_with_uncertainty():
    u = np.array([[0.1, 0.5], [0.2, 0.5]], np.float32)
    c = uncertainty_to_confidence(u)
    assert c.min() >= 0 and c.max() <= 1
    assert c[0, 0] == 1.0 and c[0, 1] == c[1, 1] < c[1, 0] < c[0, 0]  # ties share a rank
    np.testing.assert_allclose(uncertainty_rank(u), [[0, 5 / 6], [1 / 3, 5 / 6]], rtol=1e-6)
    calib = {"rank": [0.0, 1.0], "reliability": [1.0, 0.2]}
    c2 = uncertainty_to_confidence(u, calib, valid=np.array([[True, True], [True, False]]))
    assert c2[1, 1] == 0 and c2[0, 0] == 1.0 and c2[0, 1] == pytest.approx(0.2)


def test_calibration_is_monotone_and_reports_correlation():
    rng = np.random.default_rng(0)
    acc = CalibrationAccumulator(bins=5)
    for _ in range(3):
        u = rng.uniform(0.01, 1, (16, 16))
        acc.add(u, u * 0.1 + rng.uniform(0, 0.01, u.shape), np.ones_like(u, bool))
    cal = acc.fit("test")
    assert cal["reliability"][0] == 1.0 and bool(np.all(np.diff(cal["reliability"]) <= 0))
    assert cal["corr_uncertainty_error"] > 0.9


class _FakeUniDepthV2:
    """A faithful double of unidepth.models.UniDepthV2: from_pretrained reads a local folder; infer takes uint8
    (3,H,W) or (B,3,H,W), fails on batch > 1 with a camera, edits the camera's K in place, returns (B,1,H,W)
    depth and an exp-like positive uncertainty called 'confidence', and its own predicted intrinsics."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, path):
        from pathlib import Path

        assert (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()
        return cls()

    def to(self, device):
        return self

    def eval(self):
        return self

    def infer(self, rgb, camera=None, normalize=True):
        assert rgb.dtype == torch.uint8
        if rgb.dim() == 3:
            rgb = rgb[None]
        b, _, h, w = rgb.shape
        if camera is not None and b > 1:
            raise ValueError("batch > 1 with a camera is not supported")
        assert self.resolution_level is not None
        K = camera.K
        type(self).calls.append(K.clone())
        K[..., 0, 0] *= 2  # the real model edits the passed K in place
        depth = torch.full((b, 1, h, w), 2.0) + rgb.float().mean(1, keepdim=True) / 255
        return {
            "depth": depth,
            "confidence": torch.exp(torch.randn(b, 1, h, w)),
            "intrinsics": torch.eye(3)[None].repeat(b, 1, 1) * 1.1,
            "points": torch.zeros(b, 3, h, w),
            "rays": torch.zeros(b, 3, h, w),
        }


@pytest.fixture
def fake_unidepth(monkeypatch, tmp_path):
    pkg, models, utils, camera = (
        types.ModuleType(n) for n in ("unidepth", "unidepth.models", "unidepth.utils", "unidepth.utils.camera")
    )
    models.UniDepthV2 = _FakeUniDepthV2
    _FakeUniDepthV2.resolution_level = None

    class Pinhole:
        def __init__(self, K):
            self.K = K

    camera.Pinhole = Pinhole
    for name, mod in (
        ("unidepth", pkg),
        ("unidepth.models", models),
        ("unidepth.utils", utils),
        ("unidepth.utils.camera", camera),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"")
    return weights


def _unidepth(weights, level=9):
    p = types.SimpleNamespace(name="unidepth", unidepth_weights=str(weights), unidepth_resolution_level=level)
    return make_teacher("unidepth", TeacherContext(clip="any clip", device="auto", params=p))


def test_unidepth_adapter_contract(fake_unidepth):
    _FakeUniDepthV2.calls = []
    teacher = _unidepth(fake_unidepth, 3)
    assert teacher.model.resolution_level == 3
    K = np.array([[50.0, 0, 8], [0, 50, 8], [0, 0, 1]])
    frame = _predict(teacher, 0, K, np.full((16, 16, 3), 255, np.uint8))
    assert frame.depth.shape == (16, 16) and frame.depth.dtype == np.float32
    assert np.allclose(frame.depth, 3.0) and (frame.uncertainty > 0).all()
    np.testing.assert_array_equal(frame.K_used, K)  # the K it used: ours, which survived the in-place edit
    assert _FakeUniDepthV2.calls[0][0, 0, 0] == 50.0
    np.testing.assert_allclose(frame.K_predicted, np.eye(3) * 1.1)  # its own prediction, not the prompt


def test_unidepth_missing_package_or_weights_say_how_to_fix(fake_unidepth, monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher.unidepth_weights"):
        _unidepth(tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "unidepth.models", None)
    with pytest.raises(RuntimeError, match="pip install -e UniDepth"):
        _unidepth(fake_unidepth)


def test_teacher_guidance_manifest_on_a_tiny_corpus(tmp_path):
    manifest = make_corpus(tmp_path, frames=6, size=32, static_frames=4)
    train = load_split(manifest, "train")
    entry, split = find_clip(manifest, "te")
    assert split == "test" and entry["has_gt"] and entry["frames"] == 6 and entry["depth_gt_path"].endswith("depth_gt")
    g = zarr.open_group(entry["teacher"], mode="r")
    assert g["depth"].shape == (6, 32, 32) and set(g) >= {"depth", "uncertainty", "rank", "K_prompt", "K_predicted"}
    assert "confidence" not in g and "depth_low" not in g  # c(x) comes from the train-split calibration on load
    np.testing.assert_array_equal(g["K_prompt"][...], zarr.open_group(entry["decoded"], mode="r")["K"][...])
    assert g.attrs["error_model"] != zarr.open_group(train[0]["teacher"], mode="r").attrs["error_model"]
    np.testing.assert_allclose(g["rank"][2], uncertainty_rank(g["uncertainty"][2], g["depth"][2] > 0))
    (calibration,) = load_calibration(manifest).values()
    assert calibration["source"] == "train split (2 clips)" and calibration["fitted_on"] == ["tr_a", "tr_b"]
    assert entry["calibration"] == calibration and entry["teacher_id"] == calibration["teacher_id"]
    c = open_entry(entry, calibration).confidence((slice(None), slice(None), slice(None)))
    assert c.min() >= 0 and c.max() <= 1
    bad = {"version": 3, "clips": [{k: v for k, v in entry.items() if k != "has_gt"}]}
    with pytest.raises(ValueError, match="has_gt"):
        validate_manifest(bad)


def test_calibration_uses_the_train_clips_only(tmp_path):
    manifest = make_corpus(tmp_path, frames=6, size=32, static_frames=4)
    train = load_split(manifest, "train")
    (tid,) = {c["teacher_id"] for c in train}
    alone = fit_calibration(train, 10)[tid]["reliability"]
    with_test = fit_calibration(train + load_split(manifest, "test"), 10)[tid]["reliability"]
    assert load_calibration(manifest)[tid]["reliability"] == alone and alone != with_test


def test_guidance_step_edge_responds_only_at_the_edge():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, 4:] = 255
    g = edge_map(rgb, np.full((8, 8), 2.0, np.float32))
    assert np.nonzero(g.sum(0))[0].tolist() == [3, 4] and g.max() == pytest.approx(1.0)


def test_simulated_teacher_without_gt_says_what_to_do():
    with pytest.raises(ValueError, match="clip x: the simulated teacher needs ground-truth depth.*teacher: learned"):
        make_teacher("simulated", TeacherContext(clip="x", params=_sim_params()))
    with pytest.raises(ValueError, match=r"no teacher named 'midas'; use a registered teacher \(learned, simulated"):
        make_teacher("midas", TeacherContext(clip="x"))

"""Teachers: the simulated stand-in's statistics, confidence conversion, calibration, the UniDepth adapter
contract against a faithful double of its API, and the teacher/guidance/manifest stages on a tiny clip."""

import dataclasses
import json
import sys
import types

import numpy as np
import pytest
import torch
import zarr

from refiner.config import TeacherParams
from refiner.guidance import guidance_maps, write_guidance
from refiner.lowres import downsample_depth
from refiner.manifest import clip_entry, load_manifest, validate_manifest, write_manifest
from refiner.teachers import make_teacher
from refiner.teachers.cache import write_teacher_store
from refiner.teachers.calibration import CalibrationAccumulator
from refiner.teachers.confidence import uncertainty_rank, uncertainty_to_confidence

from .clip_fixtures import make_stores


def _run_sim(p, frames=200, size=24):
    gt = np.full((size, size), 3.0, np.float32)
    gt[:, size // 2 :] = 1.5
    teacher = make_teacher(p)
    return [teacher.predict(t, np.zeros((size, size, 3), np.uint8), np.eye(3), gt) for t in range(frames)], gt


def test_simulated_scale_error_matches_its_params():
    p = TeacherParams(scale_std=0.03, scale_corr=0.5, jump_prob=0.0, warp_amp=0.0, noise_rel=0.0, edge_blur_px=0.0)
    frames, gt = _run_sim(p, frames=400)
    log_s = np.array([np.log(np.median(f.depth / gt)) for f in frames])
    assert log_s.std() == pytest.approx(0.03, rel=0.15)
    assert np.corrcoef(log_s[1:], log_s[:-1])[0, 1] == pytest.approx(0.5, abs=0.12)


def test_simulated_noise_level_determinism_and_uncertainty_correlation():
    p = TeacherParams(scale_std=0.0, jump_prob=0.0, warp_amp=0.0, noise_rel=0.02, edge_blur_px=0.0)
    frames, gt = _run_sim(p, frames=5)
    rel = frames[0].depth / gt - 1
    assert rel.std() == pytest.approx(0.02, rel=0.15)
    again, _ = _run_sim(p, frames=5)
    np.testing.assert_array_equal(frames[4].depth, again[4].depth)  # deterministic by seed
    other, _ = _run_sim(dataclasses.replace(p, seed=1), frames=5)
    assert not np.array_equal(frames[4].depth, other[4].depth)
    err = np.abs(frames[0].depth / gt - 1).ravel()
    corr = np.corrcoef(frames[0].uncertainty.ravel(), err)[0, 1]
    assert 0.2 < corr < 0.99  # follows the error, imperfectly


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


def test_unidepth_adapter_contract(fake_unidepth):
    _FakeUniDepthV2.calls = []
    teacher = make_teacher(
        TeacherParams(name="unidepth", unidepth_weights=str(fake_unidepth), unidepth_resolution_level=3)
    )
    assert teacher.model.resolution_level == 3
    K = np.array([[50.0, 0, 8], [0, 50, 8], [0, 0, 1]])
    frame = teacher.predict(0, np.full((16, 16, 3), 255, np.uint8), K)
    assert frame.depth.shape == (16, 16) and frame.depth.dtype == np.float32
    assert np.allclose(frame.depth, 3.0) and (frame.uncertainty > 0).all()
    np.testing.assert_array_equal(frame.K_prompt, K)  # our K survived UniDepth's in-place edit
    assert _FakeUniDepthV2.calls[0][0, 0, 0] == 50.0
    np.testing.assert_allclose(frame.K_used, np.eye(3) * 1.1)


def test_unidepth_missing_package_or_weights_say_how_to_fix(fake_unidepth, monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher.unidepth_weights"):
        make_teacher(TeacherParams(name="unidepth", unidepth_weights=str(tmp_path / "nowhere")))
    monkeypatch.setitem(sys.modules, "unidepth.models", None)
    with pytest.raises(RuntimeError, match="pip install -e UniDepth"):
        make_teacher(TeacherParams(name="unidepth", unidepth_weights=str(fake_unidepth)))


def test_teacher_guidance_manifest_stages_on_a_tiny_clip(tmp_path):
    decoded, _ = make_stores(tmp_path, frames=6, size=32, factor=4, static_frames=4)
    metrics = write_teacher_store(decoded, tmp_path / "t.zarr", tmp_path / "cal.json", TeacherParams(), progress=False)
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    assert g["depth"].shape == (6, 32, 32) and g["depth_low"].shape == (6, 8, 8)
    np.testing.assert_allclose(g["depth_low"][2], downsample_depth(torch.from_numpy(g["depth"][2]), 4).numpy())
    assert g["low_mapping"][...].tolist() == [4, 4, 0, 0]
    np.testing.assert_array_equal(g["K_in"][...], zarr.open_group(str(decoded), mode="r")["K"][...])
    c = g["confidence"][...]
    assert c.min() >= 0 and c.max() <= 1 and np.isfinite(g["depth"][...]).all()
    assert metrics["corr_uncertainty_abs_error"] > 0 and json.loads((tmp_path / "cal.json").read_text())["rank"]
    assert write_guidance(decoded, tmp_path / "t.zarr", tmp_path / "g.zarr", progress=False) == 6
    entry = clip_entry(str(decoded), str(tmp_path / "t.zarr"), str(tmp_path / "g.zarr"))
    assert entry["has_gt"] and entry["frames"] == 6 and entry["depth_gt_path"].endswith("depth_gt")
    write_manifest(tmp_path / "m.json", [entry])
    assert load_manifest(tmp_path / "m.json")["clips"][0] == entry
    bad = {"version": 1, "clips": [{k: v for k, v in entry.items() if k != "has_gt"}]}
    with pytest.raises(ValueError, match="has_gt"):
        validate_manifest(bad)


def test_guidance_step_edge_responds_only_at_the_edge():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, 4:] = 255
    maps = guidance_maps(rgb, np.full((8, 8), 2.0, np.float32), np.ones((8, 8), np.float32))
    cols = np.nonzero(maps["rgb_edges"].sum(0))[0].tolist()
    assert cols == [3, 4]
    assert not maps["depth_edges"].any() and maps["G"].max() == pytest.approx(1.0)


def test_simulated_teacher_without_gt_says_what_to_do():
    with pytest.raises(ValueError, match="teacher.name: unidepth"):
        make_teacher(TeacherParams()).predict(0, np.zeros((4, 4, 3), np.uint8), np.eye(3), None)

"""The learned teacher (a small network trained here), its training command, and the synth sensor effects."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from refiner.core.config import ConfigError, params_from_dict
from refiner.data.synth.clips import EXPOSURE_CORR, exposure_gains, render_clip
from refiner.data.synth.raycast import render
from refiner.data.synth.scene import camera_poses, make_scene
from refiner.geometry.intrinsics import intrinsics_from_fov
from refiner.teachers.base import Teacher, TeacherBatch, TeacherContext
from refiner.teachers.learned import LearnedDepthNet, LearnedTeacher, LearnedTeacherError, weights_bytes
from refiner.training.teacher_training import TrainSettings, check_seeds, train_learned

ROOT = Path(__file__).resolve().parents[1]
TINY = TrainSettings(
    scenes=2,
    val_scenes=1,
    views=2,
    val_views=1,
    height=32,
    width=40,
    crop=(16, 24),
    steps=3,
    batch=2,
    warmup=1,
    paths=("still", "pan"),
)


def _no_gt(t: int) -> np.ndarray:
    raise AssertionError(f"the learned teacher read GT of frame {t}")


def _weights(path: Path, seed: int) -> Path:
    """A randomly initialised network (its head too, so outputs vary per pixel) written as weights."""
    torch.manual_seed(seed)
    net = LearnedDepthNet()
    torch.nn.init.normal_(net.head.weight, std=0.2)
    path.write_bytes(weights_bytes(net, {}))
    return path


def _teacher(path: Path) -> LearnedTeacher:
    return LearnedTeacher(TeacherContext(clip="c", options={"weights": str(path)}, gt=_no_gt))


def _batch(frames: int, height: int, width: int, seed: int = 0) -> TeacherBatch:
    rng = np.random.default_rng(seed)
    K = np.stack([intrinsics_from_fov(width, height, 60.0 + 5 * i) for i in range(frames)])
    rgb = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return TeacherBatch(rgb, K, np.arange(frames, dtype=np.int64))


def test_network_outputs_match_any_input_size():
    net = LearnedDepthNet().eval()
    with torch.no_grad():
        log_depth, log_unc = net(torch.rand(2, 3, 37, 51), torch.rand(2, 2, 37, 51) - 0.5)
    assert log_depth.shape == log_unc.shape == (2, 1, 37, 51)


def test_teacher_predicts_positive_depth_and_uncertainty_without_gt(tmp_path):
    teacher = _teacher(_weights(tmp_path / "w.safetensors", 0))
    assert isinstance(teacher, Teacher) and teacher.name == "learned" and "not UniDepthV2" in teacher.label
    batch = _batch(3, 45, 70)
    frames = teacher.predict(batch)
    assert len(frames) == 3
    for f, K in zip(frames, batch.K, strict=True):
        assert f.depth.shape == f.uncertainty.shape == (45, 70)
        assert f.depth.dtype == f.uncertainty.dtype == np.float32
        assert np.isfinite(f.depth).all() and (f.depth > 0).all() and (f.uncertainty > 0).all()
        assert f.depth.std() > 0 and f.uncertainty.std() > 0
        np.testing.assert_array_equal(f.K_used, K)
        assert f.K_predicted is None


def test_batch_prediction_equals_frame_by_frame(tmp_path):
    teacher = _teacher(_weights(tmp_path / "w.safetensors", 1))
    batch = _batch(4, 40, 56, seed=2)
    together = teacher.predict(batch)
    for i, f in enumerate(together):
        alone = teacher.predict(TeacherBatch(batch.rgb[i : i + 1], batch.K[i : i + 1], batch.index[i : i + 1]))[0]
        np.testing.assert_allclose(f.depth, alone.depth, rtol=1e-4)
        np.testing.assert_allclose(f.uncertainty, alone.uncertainty, rtol=1e-4)


def test_focal_length_changes_the_prediction(tmp_path):
    teacher = _teacher(_weights(tmp_path / "w.safetensors", 3))
    batch = _batch(1, 32, 48)
    wide = TeacherBatch(batch.rgb, np.stack([intrinsics_from_fov(48, 32, 100.0)]), batch.index)
    assert not np.allclose(teacher.predict(batch)[0].depth, teacher.predict(wide)[0].depth)


def test_identity_follows_the_weights(tmp_path):
    a, b = _weights(tmp_path / "a.safetensors", 0), _weights(tmp_path / "b.safetensors", 1)
    again = _weights(tmp_path / "again.safetensors", 0)
    ids = [_teacher(p).identity() for p in (a, b, again)]
    assert ids[0]["name"] == "learned" and len(ids[0]["weights_sha256"]) == 64
    assert ids[0] != ids[1] and ids[0] == ids[2]  # the same weights give the same bytes


def test_missing_or_foreign_weights_give_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere" / "learned.safetensors"
    with pytest.raises(LearnedTeacherError, match="python -m refiner.training.teacher_training") as e:
        _teacher(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LearnedTeacherError, match="unreadable learned teacher weights"):
        _teacher(junk)


def test_tiny_training_run_writes_weights_and_provenance_that_load(tmp_path):
    p = train_learned(TINY, tmp_path / "a", "tiny")
    again = train_learned(TINY, tmp_path / "b", "tiny")
    saved = json.loads((tmp_path / "a/provenance.json").read_text())
    assert saved == json.loads(json.dumps(p)) and p["weights_sha256"] == again["weights_sha256"]  # deterministic
    assert p["train_seeds"] == [7000, 7001] and p["val_seeds"] == [7002] and p["frames"] == {"train": 8, "val": 2}
    assert set(p["val"]) == {"absrel", "d1", "absrel_median_scaled", "d1_median_scaled", "uncertainty_spearman"}
    assert p["settings"]["steps"] == 3 and p["machine"]["cpu_count"] and p["wall_s"]["total"] > 0
    teacher = _teacher(tmp_path / "a/learned.safetensors")
    assert teacher.identity()["weights_sha256"] == p["weights_sha256"]
    assert (teacher.predict(_batch(1, 32, 40))[0].depth > 0).all()


def test_training_refuses_the_corpus_seeds():
    with pytest.raises(ValueError, match=r"scene seeds \[11\] are used by the corpus"):
        check_seeds([11, 7000])
    check_seeds(TINY.train_seeds + TINY.val_seeds)


def test_sensor_effects_off_leave_the_render_exactly_as_it_was():
    clip = render_clip(3, 24, 32, 70.0, 0.063, 1, seed=4, sensor_noise=0.0, exposure_jitter=0.0)
    scene = make_scene(4, "dolly")
    K = intrinsics_from_fov(32, 24, 70.0)
    for t, pose in enumerate(camera_poses(scene, 3, 1)):
        np.testing.assert_array_equal(clip.rgb[t], render(scene, pose, K, 24, 32, float(t))[0])
    np.testing.assert_array_equal(clip.rgb, render_clip(3, 24, 32, 70.0, 0.063, 1, seed=4).rgb)


def test_sensor_effects_change_consecutive_frames_differently_and_only_the_colour():
    clean = render_clip(4, 24, 32, 70.0, 0.063, 4, seed=4, object_speed=0.0)  # a still camera, a still scene
    noisy = render_clip(4, 24, 32, 70.0, 0.063, 4, seed=4, object_speed=0.0, sensor_noise=0.02, exposure_jitter=0.1)
    same = render_clip(4, 24, 32, 70.0, 0.063, 4, seed=4, object_speed=0.0, sensor_noise=0.02, exposure_jitter=0.1)
    np.testing.assert_array_equal(clean.rgb[0], clean.rgb[3])
    np.testing.assert_array_equal(noisy.rgb, same.rgb)  # seeded by the clip seed
    np.testing.assert_array_equal(noisy.depth, clean.depth)
    delta = noisy.rgb.astype(int) - clean.rgb.astype(int)
    assert all(np.abs(delta[t]).mean() > 1 for t in range(4))
    assert all(not np.array_equal(delta[t], delta[t + 1]) for t in range(3))
    assert not np.array_equal(noisy.rgb_right.astype(int) - clean.rgb_right, delta)  # each eye its own noise
    brightness = noisy.rgb.reshape(4, -1).mean(1) / clean.rgb.reshape(4, -1).mean(1)
    assert np.ptp(brightness) > 0.01  # the exposure moves from frame to frame


def test_exposure_gain_is_a_smooth_ar1_of_the_given_std():
    g = np.log(exposure_gains(20000, 0.1, np.random.default_rng(0)))
    assert g.std() == pytest.approx(0.1, rel=0.05)
    assert np.corrcoef(g[:-1], g[1:])[0, 1] == pytest.approx(EXPOSURE_CORR, abs=0.02)


@pytest.mark.parametrize("key", ["sensor_noise", "exposure_jitter"])
def test_sensor_settings_are_non_negative_and_per_clip(key):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["corpus"]["synthetic"][key] == 0.0
    clip = next(n for n, c in raw["corpus"]["clips"].items() if c["kind"] == "synthetic")
    ok = copy.deepcopy(raw)
    ok["corpus"]["clips"][clip][key] = 0.01
    assert getattr(params_from_dict(ok).corpus.synthetic_spec(clip), key) == 0.01
    bad = copy.deepcopy(raw)
    bad["corpus"]["synthetic"][key] = -0.1
    with pytest.raises(ConfigError, match=rf"corpus\.synthetic\.{key} = -0\.1 is invalid"):
        params_from_dict(bad)

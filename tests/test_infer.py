"""Windowed inference: zero residual reproduces the teacher, odd clip lengths work, memory stays flat."""

import tracemalloc

import numpy as np
import pytest
import torch
import zarr

from refiner.checkpoint import save_refiner
from refiner.config import InferParams, ModelParams, WindowParams, params_from_dict
from refiner.infer import drift_trend, occlusion_weights, refine_clip, run_infer
from refiner.lowres import low_mapping
from refiner.model import Refiner

from .clip_fixtures import make_stores

TINY_MODEL = ModelParams(channels=8, ssm_hidden=8, d_state=4)


def _refine(decoded, teacher, out, windows, model=None, **infer):
    model = model or Refiner(TINY_MODEL).eval()
    mapping = torch.as_tensor(low_mapping(4))
    return refine_clip(model, mapping, decoded, teacher, out, windows, InferParams(**infer), progress=False)


@pytest.mark.parametrize(("frames", "length", "overlap"), [(4, 6, 3), (11, 6, 3), (14, 6, 2)])
def test_zero_residual_reproduces_the_teacher_exactly(tmp_path, frames, length, overlap):
    decoded, teacher = make_stores(tmp_path, frames=frames, size=32, factor=4, static_frames=2)
    stats = _refine(decoded, teacher, tmp_path / "out.zarr", WindowParams(length, overlap, [0, 2]))
    out, tea = zarr.open_group(str(tmp_path / "out.zarr"), mode="r"), zarr.open_group(str(teacher), mode="r")
    assert out["depth"].shape == tea["depth"].shape and stats["frames"] == frames
    np.testing.assert_array_equal(out["depth"][...], tea["depth"][...])
    assert not out["delta"][...].any()


class _ConstantResidual(torch.nn.Module):
    """A stand-in refiner whose residual is a fixed fraction of the teacher: blending must pass it through."""

    def forward(self, depth_low, conf_low, depth_full, conf_full, mapping, rgb_full=None, hard_clamp=False):
        delta = 0.01 * depth_full
        return type("Out", (), {"delta_full": delta, "clamp_hit_rate": torch.tensor(0.0)})()


def test_blending_passes_a_constant_residual_through_unchanged(tmp_path):
    decoded, teacher = make_stores(tmp_path, frames=13, size=32, factor=4, static_frames=2)
    _refine(decoded, teacher, tmp_path / "out.zarr", WindowParams(6, 3, [0]), model=_ConstantResidual())
    out, tea = zarr.open_group(str(tmp_path / "out.zarr"), mode="r"), zarr.open_group(str(teacher), mode="r")
    np.testing.assert_allclose(out["depth"][...], 1.01 * tea["depth"][...], rtol=1e-5)


def test_memory_does_not_grow_with_clip_length(tmp_path):
    peaks = []
    for frames in (24, 72):
        decoded, teacher = make_stores(tmp_path / str(frames), frames=frames, size=16, factor=4, static_frames=2)
        tracemalloc.start()
        _refine(decoded, teacher, tmp_path / f"out{frames}.zarr", WindowParams(6, 3, [0]))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks


def test_drift_trend_of_a_line():
    assert drift_trend(np.array([2.0, 2.1, 2.2, 2.3])) == pytest.approx(0.15)
    assert drift_trend(np.array([3.0])) == 0.0


def test_run_infer_runs_the_teacher_when_its_cache_is_missing(tmp_path):
    decoded, _ = make_stores(tmp_path, frames=6, size=32, factor=4, static_frames=3)
    params = params_from_dict(
        {"windows": {"length": 4, "overlap": 2, "keyframes": [0, 2]}, "model": {"channels": 8, "ssm_hidden": 8}}
    )
    save_refiner(tmp_path / "m.safetensors", Refiner(params.model), params.model, torch.as_tensor(low_mapping(4)), {})
    teacher = tmp_path / "cache" / "teacher.zarr"
    stats = run_infer(
        params,
        decoded,
        teacher,
        tmp_path / "m.safetensors",
        tmp_path / "out.zarr",
        tmp_path / "frames",
        tmp_path / "rep",
        progress=False,
    )
    assert (
        stats["frames"] == 6 and (teacher / "zarr.json").is_file() and (tmp_path / "cache/calibration.json").is_file()
    )
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["depth"][...],
        zarr.open_group(str(teacher), mode="r")["depth"][...],
    )
    assert (tmp_path / "rep/side_by_side.mp4").stat().st_size > 0 and (tmp_path / "rep/drift.csv").is_file()


def test_occlusion_weights_mark_changing_pixels():
    rgb = torch.zeros(3, 3, 16, 16)
    rgb[2, :, :4, :4] = 1.0  # something appears in the corner at frame 2
    w = occlusion_weights(rgb, 4)
    assert w.shape == (3, 16, 16) and w[0].min() == 1.0
    assert w[2, 0, 0] == pytest.approx(0.1) and w[1, 0, 0] == pytest.approx(0.1) and w[2, 15, 15] == 1.0


def test_occlusion_gating_keeps_a_constant_residual(tmp_path):
    decoded, teacher = make_stores(tmp_path, frames=9, size=32, factor=4, static_frames=2)
    _refine(
        decoded, teacher, tmp_path / "o.zarr", WindowParams(6, 3, [0]), model=_ConstantResidual(), occlusion_gating=True
    )
    out, tea = zarr.open_group(str(tmp_path / "o.zarr"), mode="r"), zarr.open_group(str(teacher), mode="r")
    np.testing.assert_allclose(out["depth"][...], 1.01 * tea["depth"][...], rtol=1e-5)

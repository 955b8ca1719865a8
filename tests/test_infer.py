"""Windowed inference: zero residual reproduces the teacher, odd clip lengths work, memory stays flat."""

import tracemalloc

import numpy as np
import pytest
import torch
import zarr

from refiner.core.config import InferParams, ModelParams, WindowParams
from refiner.data.clip import open_clip
from refiner.inference.infer import Refinement, drift_trend, occlusion_weights, refine_clip, run_infer
from refiner.model.refiner import Refiner

from .clip_fixtures import make_clip, make_corpus, open_entry, tiny_params

TINY_MODEL = ModelParams.from_file(channels=8, ssm_hidden=8, d_state=4)


def _windows(length, overlap, keyframes=(0,)):
    return WindowParams(
        length=length, overlap=overlap, keyframes=list(keyframes), inference_length=length, inference_overlap=overlap
    )


def _refine(clip, out, windows, model=None, **infer):
    model = model or Refiner(TINY_MODEL, 4).eval()
    return refine_clip(model, clip, out, windows, InferParams.from_file(**infer), progress=False)


@pytest.mark.parametrize(("frames", "length", "overlap"), [(1, 6, 3), (4, 6, 3), (11, 6, 3), (14, 6, 2)])
def test_zero_residual_reproduces_the_teacher_exactly(tmp_path, frames, length, overlap):
    clip = open_entry(make_clip(tmp_path, "c", frames=frames, size=32, static_frames=min(2, frames)))
    stats = _refine(clip, tmp_path / "out.zarr", _windows(length, overlap, (0, 2)))
    out, tea = zarr.open_group(str(tmp_path / "out.zarr"), mode="r"), zarr.open_group(clip.teacher_path, mode="r")
    assert out["depth"].shape == tea["depth"].shape and stats["frames"] == frames
    np.testing.assert_array_equal(out["depth"][...], tea["depth"][...])
    assert not out["delta"][...].any()


class _ConstantResidual(torch.nn.Module):
    """A stand-in refiner whose residual is a fixed fraction of the teacher: blending must pass it through."""

    p = TINY_MODEL.replace(carry_state=False)

    def forward(self, depth, conf, rgb=None, keyframes=None, hard_clamp=False, state=None, state_index=None):
        delta = 0.01 * depth
        return type("Out", (), {"delta_full": delta, "clamp_hit_rate": {"low": torch.tensor(0.0)}, "state": None})()


def test_blending_passes_a_constant_residual_through_unchanged(tmp_path):
    clip = open_entry(make_clip(tmp_path, "c", frames=13, size=32, static_frames=2))
    _refine(clip, tmp_path / "out.zarr", _windows(6, 3), model=_ConstantResidual())
    out, tea = zarr.open_group(str(tmp_path / "out.zarr"), mode="r"), zarr.open_group(clip.teacher_path, mode="r")
    np.testing.assert_allclose(out["depth"][...], 1.01 * tea["depth"][...], rtol=1e-5)


def test_refinement_slides_the_inference_windows(tmp_path):
    clip = open_entry(make_clip(tmp_path, "c", frames=13, size=32, static_frames=2))
    windows = WindowParams(length=4, overlap=2, keyframes=[0, 2], inference_length=8, inference_overlap=4)
    seen = []

    class _Lengths(_ConstantResidual):
        def forward(self, depth, *args, **kwargs):
            seen.append(depth.shape[1])
            return super().forward(depth, *args, **kwargs)

    frames = [t for t, *_ in Refinement(_Lengths(), clip, windows, InferParams.from_file())]
    assert frames == list(range(13)) and seen == [8, 8, 8]  # 13 frames, stride 4: windows at 0, 4 and 5 (the end)


def test_memory_does_not_grow_with_clip_length(tmp_path):
    peaks = []
    for frames in (24, 72):
        clip = open_entry(make_clip(tmp_path / str(frames), "c", frames=frames, size=16, static_frames=2))
        runs = []
        for _ in range(2):  # the lower of two: a one-off allocation elsewhere in the process is not the clip's
            tracemalloc.start()
            _refine(clip, tmp_path / f"out{frames}.zarr", _windows(6, 3))
            runs.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        peaks.append(min(runs))
    assert peaks[1] < 1.3 * peaks[0], peaks


def test_drift_trend_of_a_line_and_non_finite_input():
    assert drift_trend(np.array([2.0, 2.1, 2.2, 2.3])) == pytest.approx(0.15)
    assert drift_trend(np.array([3.0])) == 0.0
    with pytest.raises(ValueError, match="non-finite"):
        drift_trend(np.array([2.0, np.nan, 2.2]))


def test_run_infer_writes_outputs_and_never_runs_the_teacher(tmp_path):
    manifest = make_corpus(tmp_path, frames=6, size=32, static_frames=3)
    params = tiny_params(
        windows={"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
        model={"channels": 8, "ssm_hidden": 8},
    )
    clip, _ = open_clip(manifest, "te")
    stats = run_infer(
        Refiner(params.model, 4),
        clip,
        params,
        tmp_path / "out.zarr",
        tmp_path / "frames",
        tmp_path / "rep",
        progress=False,
    )
    assert stats["frames"] == 6
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["depth"][...],
        zarr.open_group(clip.teacher_path, mode="r")["depth"][...],
    )
    assert (tmp_path / "rep/side_by_side.mp4").stat().st_size > 0 and (tmp_path / "rep/drift.csv").is_file()
    for f in (tmp_path / "clips/te/teacher.zarr").rglob("*"):
        f.unlink() if f.is_file() else None
    with pytest.raises(FileNotFoundError, match=r"build it with `dvc repro` \(the prepare stage of its shard"):
        open_clip(manifest, "te")


def test_infer_outputs_change_together_or_not_at_all(tmp_path, monkeypatch):
    """Case 9 of the reliability issue: a failure after the refined store is written (here in the video export)
    keeps the previous store, frames and reports; nothing half-new is left beside them."""
    manifest = make_corpus(tmp_path, frames=6, size=32, static_frames=3)
    params = tiny_params(
        windows={"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4}
    )
    clip, _ = open_clip(manifest, "te")
    outs = (tmp_path / "out.zarr", tmp_path / "frames", tmp_path / "rep")
    model = Refiner(params.model, 4)
    run_infer(model, clip, params, *outs, progress=False)
    inodes = [p.stat().st_ino for p in outs]  # a replaced output is a new folder

    def broken_video(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("refiner.visual.videos.encode_mp4", broken_video)  # the review video, on its writer thread
    with pytest.raises(OSError, match="disk full"):
        run_infer(model, clip, params, *outs, progress=False)
    assert [p.stat().st_ino for p in outs] == inodes
    assert (outs[2] / "metrics.json").is_file() and (outs[0] / "depth").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_occlusion_weights_mark_changing_pixels():
    rgb = torch.zeros(3, 3, 16, 16)
    rgb[2, :, :4, :4] = 1.0  # something appears in the corner at frame 2
    w = occlusion_weights(rgb, 4)
    assert w.shape == (3, 16, 16) and w[0].min() == 1.0
    assert w[2, 0, 0] == pytest.approx(0.1) and w[1, 0, 0] == pytest.approx(0.1) and w[2, 15, 15] == 1.0


def test_occlusion_gating_keeps_a_constant_residual(tmp_path):
    clip = open_entry(make_clip(tmp_path, "c", frames=9, size=32, static_frames=2))
    _refine(clip, tmp_path / "o.zarr", _windows(6, 3), model=_ConstantResidual(), occlusion_gating=True)
    out, tea = zarr.open_group(str(tmp_path / "o.zarr"), mode="r"), zarr.open_group(clip.teacher_path, mode="r")
    np.testing.assert_allclose(out["depth"][...], 1.01 * tea["depth"][...], rtol=1e-5)


def test_nan_in_the_teacher_cache_fails_naming_store_and_frame(tmp_path):
    clip = open_entry(make_clip(tmp_path, "c", frames=8, size=32, static_frames=2))
    g = zarr.open_group(clip.teacher_path, mode="r+")
    frame = g["depth"][5]
    frame[:4, :4] = np.nan
    g["depth"][5] = frame
    with pytest.raises(Exception, match=r"teacher.zarr/depth frames .*non-finite"):
        _refine(
            open_entry({"decoded": clip.decoded_path, "teacher": clip.teacher_path, "guidance": None}),
            tmp_path / "o.zarr",
            _windows(6, 3),
        )
    assert not (tmp_path / "o.zarr").exists()  # nothing half-written

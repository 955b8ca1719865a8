"""Whole-frame depth at the video's own resolution, through the one command (refiner-video) on a 16:9 clip."""

import json
import math

import numpy as np
import pytest
import yaml
import zarr

from refiner.app import FAST_OVERLAP
from refiner.app.cli import main, parse_args
from refiner.app.video_settings import DEFAULTS, SECTIONS, load_settings, with_overrides
from refiner.core.config import ModelParams, StereoParams
from refiner.core.video import decode_frames
from refiner.data.clip import open_clip
from refiner.data.synth.clips import render_clip, write_clip
from refiner.data.windows import window_starts
from refiner.evaluation.evaluate import evaluate_clip
from refiner.evaluation.stereo_metrics import stereo_metrics
from refiner.geometry.canonical import CanonicalMap, canonical_map
from refiner.geometry.vr_stereo import StereoSettings, right_eye
from refiner.inference.infer import run_infer
from refiner.inference.source_res import SourceFrames
from refiner.model.refiner import Refiner
from refiner.training.checkpoint import load_refiner, save_refiner
from refiner.training.train import train
from refiner.visual.export import png16_precision, read_png16, write_png16
from refiner.visual.videos import write_stereo_video

from .clip_fixtures import ROOT, make_clip, make_corpus, open_entry, tiny_params

H, W, SIZE, FRAMES = 180, 320, 64, 10  # 16:9 source; canonical 64 x 112 (the long side a multiple of 4)
TINY_MODEL = ModelParams.from_file(channels=4, ssm_hidden=4, d_state=2)


def _model(path):
    save_refiner(path, Refiner(TINY_MODEL, 4), TINY_MODEL, 4, {})
    return path


def _argv(src, model, out, *extra):
    return [
        str(src / "clip.mp4"),
        "--intrinsics",
        str(src / "camera.json"),
        "--teacher",
        "simulated",
        "--gt",
        str(src / "gt.zarr"),
        "--model",
        str(model),
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The command run once on a rendered 320x180 clip with GT, with --stereo."""
    root = tmp_path_factory.mktemp("wf")
    write_clip(render_clip(FRAMES, H, W, 70.0, 0.063, 4, seed=5), root / "src", fps=10, crf=0, baseline_m=0.063)
    model = _model(root / "model.safetensors")
    exports = [
        "--export",
        "zarr,npy,png16,review,canonical",
        "--stereo",
        "--convergence-m",
        "inf",
        "--max-disparity",
        "none",
    ]
    main(_argv(root / "src", model, root / "out", *exports, "--cache", str(root / "cache")))
    return root


def _summary(root, out="out"):
    return json.loads((root / out / "outputs.json").read_text())


def test_every_source_pixel_gets_a_depth_and_the_source_camera(run):
    g = zarr.open_group(str(run / "out/depth.zarr"), mode="r")
    depth = g["depth"][...]
    assert depth.shape == (FRAMES, H, W) and (depth > 0).all() and np.isfinite(depth).all()
    cam = json.loads((run / "src/camera.json").read_text())
    out = json.loads((run / "out/intrinsics.json").read_text())
    assert out == {**{k: pytest.approx(cam[k], abs=1e-9) for k in ("fx", "fy", "cx", "cy")}, "width": W, "height": H}
    np.testing.assert_allclose(g["K"][3], [[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1]])
    s = _summary(run)
    assert s["source_size_wh"] == [W, H] and s["canonical_size_wh"] == [112, SIZE] and s["frames"] == FRAMES


def test_exported_depth_is_the_canonical_depth_mapped_back(run):
    canon = zarr.open_group(str(run / "out/refined_canonical.zarr"), mode="r")["depth"][...]
    exported = zarr.open_group(str(run / "out/depth.zarr"), mode="r")["depth"][...]
    m = CanonicalMap.from_dict(
        dict(zarr.open_group(str(_summary(run)["cache"]) + "/decoded.zarr").attrs)["canonical_map"]
    )
    assert m == canonical_map(H, W, SIZE, multiple=4)
    # independently of the code: each source pixel's canonical position u' = s (u + 0.5) - 0.5 and its neighbours
    cv, cu = m.scale_y * (np.arange(H) + 0.5) - 0.5, m.scale_x * (np.arange(W) + 0.5) - 0.5
    iv, iu = (np.clip(np.round(c), 0, n - 1).astype(int) for c, n in ((cv, m.height), (cu, m.width)))
    nearest = canon[:, iv[:, None], iu[None, :]]
    v0, u0 = (np.clip(np.floor(c), 0, n - 1).astype(int) for c, n in ((cv, m.height), (cu, m.width)))
    v1, u1 = np.minimum(v0 + 1, m.height - 1), np.minimum(u0 + 1, m.width - 1)
    cell = np.stack([canon[:, a[:, None], b[None, :]] for a in (v0, v1) for b in (u0, u1)])  # the 2x2 around u'
    lo, hi = cell.min(0), cell.max(0)
    flat = hi <= 1.05 * lo  # one surface: resampled within the cell's values (bilinear)
    assert 0.3 < flat.mean() < 1.0
    assert ((exported >= lo * (1 - 1e-6)) & (exported <= hi * (1 + 1e-6))).all()  # never outside its neighbours
    np.testing.assert_allclose(exported[flat], nearest[flat], rtol=0.05)
    np.testing.assert_array_equal(exported[~flat], nearest[~flat])  # across an edge: the nearest value, no blend
    frames = run / "out/frames"
    np.testing.assert_array_equal(np.load(frames / "depth_00004.npy"), exported[4])
    back = read_png16(frames / "depth_00004.png")
    assert back.shape == (H, W) and np.abs(back / exported[4] - 1).max() <= png16_precision() + 1e-6


def test_videos_have_the_source_size(run):
    sbs = list(decode_frames(run / "out/clip_LRF_Full_SBS.mp4"))
    assert len(sbs) == FRAMES and sbs[0].shape == (H, 2 * W, 3)
    panels = next(decode_frames(run / "out/reports/side_by_side.mp4"))
    assert panels.shape == (H, 3 * W, 3)  # teacher | refined | GT


def test_sbs_right_eye_matches_the_rendered_right_eye(run):
    """End to end: the right half of the SBS video is the rendered right eye (b = 0.063 m), not the left image."""
    gt = zarr.open_group(str(run / "src/gt.zarr"), mode="r")
    sbs = next(decode_frames(run / "out/clip_LRF_Full_SBS.mp4")).astype(float)
    left, right, truth = sbs[:, :W], sbs[:, W:], np.asarray(gt["rgb_right"][0], dtype=float)
    inner = np.s_[:, 16:-16]  # away from the borders the splat leaves to hole filling
    assert np.abs(right - truth)[inner].mean() < 0.6 * np.abs(left - truth)[inner].mean()


def test_a_point_of_known_depth_lands_at_fx_source_b_over_z(run):
    fx = json.loads((run / "out/intrinsics.json").read_text())["fx"]  # the source camera's, in display pixels
    z, b = 1.6, 0.063
    d = fx * b / z  # 228.5 * 0.063 / 1.6 = 9.0 source pixels
    m = canonical_map(H, W, SIZE, multiple=4)
    depth = SourceFrames(np.full((1, m.height, m.width), z, np.float32), m)  # a canonical plane, mapped back
    left = np.zeros((H, W, 3), np.uint8)
    left[:, 200:202] = 255  # a bright 2-px column at u = 200, 201
    parallel = StereoSettings(ipd_m=b, convergence_m=math.inf, max_disparity=None)
    right = right_eye(left, depth[0], fx, parallel, math.inf)
    assert (np.flatnonzero(right[H // 2, :, 0] == 255) == np.round([200 - d, 201 - d])).all()
    write_stereo_video(run / "plane.mp4", [left], [(0, depth[0])], np.array([fx]), parallel, fps=5)
    frame = next(decode_frames(run / "plane.mp4"))
    assert frame.shape == (H, 2 * W, 3)
    assert abs(frame[H // 2, W:, 0].astype(float).argmax() + 0.5 - (200.5 - d)) <= 1.0


def test_png16_round_trips_5_cm_to_100_m(tmp_path):
    depth = np.geomspace(0.05, 100.0, 4000).astype(np.float32).reshape(40, 100)
    depth[0, :3] = [0.0, np.nan, -1.0]  # invalid stays 0
    write_png16(tmp_path / "d.png", depth)
    back = read_png16(tmp_path / "d.png")
    ok = depth > 0
    assert png16_precision() < 6e-5  # half a log step over 0.05-100 m
    assert np.abs(back[ok] / depth[ok] - 1).max() <= png16_precision() + 1e-6  # + float32 rounding
    assert (back[0, :3] == 0).all() and back.max() == pytest.approx(100.0, rel=1e-6)


def test_the_teacher_cache_is_reused(run):
    main(_argv(run / "src", run / "model.safetensors", run / "out2", "--cache", str(run / "cache")))
    s = _summary(run, "out2")
    assert s["teacher_cache_reused"] and s["stereo"] is None and s["exports"] == ["zarr"]
    np.testing.assert_array_equal(
        zarr.open_group(str(run / "out2/depth.zarr"), mode="r")["depth"][...],
        zarr.open_group(str(run / "out/depth.zarr"), mode="r")["depth"][...],
    )


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag`` and its value."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_fails_clearly_without_intrinsics_model_or_a_runnable_teacher(run, capsys):
    src, model, out = run / "src", run / "model.safetensors", run / "bad"
    argv = _argv(src, model, out)
    no_k = _without(argv, "--intrinsics")
    assert "--intrinsics" in _error(capsys, no_k) and "--hfov-deg" in _error(capsys, no_k)
    assert "--model" in _error(capsys, [a if a != str(model) else str(run / "none.safetensors") for a in argv])
    no_gt = _without(argv, "--gt")
    err = _error(capsys, no_gt)
    assert "the simulated teacher needs ground-truth depth" in err and "teacher: learned" in err
    err = _error(capsys, [*_without(no_gt, "--teacher"), "--teacher", "unidepth"])  # no unidepth package here
    assert "unidepth package is missing" in err and "pip install -e UniDepth" in err
    assert "--teacher: no teacher named 'midas'" in _error(
        capsys, [*_without(no_gt, "--teacher"), "--teacher", "midas"]
    )
    assert not out.exists()


def test_fast_mode_overlaps_windows_less_and_changes_nothing_else():
    base = ["clip.mp4", "--hfov-deg", "70", "--out", "out"]
    settings = load_settings(DEFAULTS)
    plain, fast = (with_overrides(settings, parse_args(base + extra)) for extra in ([], ["--fast"]))
    assert plain.windows.inference_overlap == settings.windows.inference_overlap > FAST_OVERLAP
    assert fast.windows.for_inference().overlap == FAST_OVERLAP
    assert fast.windows.replace(inference_overlap=plain.windows.inference_overlap) == plain.windows
    assert (fast.decode, fast.infer, fast.teacher) == (plain.decode, plain.infer, plain.teacher)
    n = plain.windows.inference_length
    assert len(window_starts(96, n, FAST_OVERLAP)) < len(window_starts(96, n, plain.windows.inference_overlap))


def test_packaged_defaults_validate_and_equal_params_yaml():
    defaults = yaml.safe_load(DEFAULTS.read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teacher"]["profiles"] = {}  # the corpus's test-group profiles are not the tool's business
    for name, cls in SECTIONS.items():
        cls(**defaults[name])
        assert defaults[name] == params[name], f"refiner/app/defaults.yaml section {name} differs from params.yaml"


def test_non_square_windows_train_and_infer(tmp_path):
    manifest = make_corpus(tmp_path, frames=8, size=16, static_frames=4, render=(18, 32))  # 16 x 28 canonical
    params = tiny_params(
        windows={"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
        train={"steps": 2, "eval_every": 2, "crop": 16, "warmup_steps": 1, "batch_size": 2, "init": None},
        model={"channels": 4, "ssm_hidden": 4, "d_state": 2},
        infer={"export_npy": True},
    )
    train(params, manifest, tmp_path / "m.safetensors", tmp_path / "state", tmp_path / "rep", progress=False)
    model, _ = load_refiner(tmp_path / "m.safetensors")
    clip, _ = open_clip(manifest, "te")
    assert (clip.height, clip.width) == (16, 28)
    stats = run_infer(model, clip, params, tmp_path / "o.zarr", tmp_path / "f", tmp_path / "r", progress=False)
    refined = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["depth"][...]
    assert stats["frames"] == 8 and refined.shape == (8, 16, 28) and (refined > 0).all()
    assert np.load(tmp_path / "f/depth_00000.npy").shape == (18, 32)  # exports at the source resolution
    # baselines and metrics
    result = evaluate_clip(clip, str(tmp_path / "o.zarr"), params.evaluate, 4, params.stereo.baseline_m)
    assert {"teacher", "ema", "bilateral", "refiner"} <= set(result["metrics"]["methods"])
    assert np.isfinite(result["metrics"]["methods"]["refiner"]["disparity_jitter_px"])
    metrics, _ = stereo_metrics(clip, {"refiner": refined}, {}, params.stereo)
    assert np.isfinite(metrics["refiner"]["disparity_error_l2r_px"])


def test_stereo_disparities_are_reported_in_display_pixels(tmp_path):
    clip = open_entry(make_clip(tmp_path, "c", frames=4, size=16, static_frames=3, render=(32, 64)))  # half size
    assert (clip.height, clip.width) == (16, 32)
    fx_source = json.loads((tmp_path / "c/synth/camera.json").read_text())["fx"]
    np.testing.assert_allclose(clip.display_fx(), fx_source)
    gt = clip.gt((slice(None), slice(None), slice(None)))
    _, rows = stereo_metrics(clip, {"gt": gt}, {}, StereoParams.from_file())
    b = float(clip.dec.attrs["baseline_m"])
    assert rows[0]["gt_median_disparity_px"] == pytest.approx(np.median(fx_source * b / gt[0][gt[0] > 0]), rel=1e-6)

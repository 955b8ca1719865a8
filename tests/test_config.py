"""params.yaml validation: every problem is one ConfigError line naming the key, the value and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from refiner.core.choices import CAMERA_PATHS
from refiner.core.config import (
    ConfigError,
    ModelParams,
    Params,
    WindowParams,
    load_params,
    params_from_dict,
)
from refiner.core.params_corpus import ClipSpec, SyntheticDefaults

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
CAM = {"fx": 500, "fy": 500, "cx": 320, "cy": 240}


def _with(*changes: tuple[str, object]) -> dict:
    """RAW with ``("a.b.c", value)`` changes applied; value ``...`` deletes the key."""
    raw = copy.deepcopy(RAW)
    for dotted, value in changes:
        *parents, last = dotted.split(".")
        d = raw
        for k in parents:
            d = d[k]
        if value is ...:
            del d[last]
        else:
            d[last] = value
    return raw


def _error(*changes: tuple[str, object]) -> str:
    with pytest.raises(ConfigError) as e:
        params_from_dict(_with(*changes))
    msg = str(e.value)
    assert msg.startswith("params.yaml: ") and "\n" not in msg
    return msg


def test_inference_windows_keep_keyframes_at_their_relative_positions():
    w = params_from_dict(RAW).windows.replace(length=12, overlap=6, keyframes=(0, 4, 8, 11))
    inf = w.replace(inference_length=24, inference_overlap=12).for_inference()
    assert (inf.length, inf.overlap, inf.keyframes) == (24, 12, (0, 8, 16, 22))
    short = w.replace(inference_length=6, inference_overlap=2).for_inference()
    assert (short.length, short.overlap, short.keyframes) == (6, 2, (0, 2, 4, 5))  # 11 → 5.5 → 6, kept inside: 5
    assert w.replace(inference_length=12, inference_overlap=6).for_inference() == w.replace(
        inference_length=12, inference_overlap=6
    ).replace(keyframes=(0, 4, 8, 11))


def test_repo_params_load():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params) and p.windows.length > p.windows.overlap
    assert p.windows.keyframes == tuple(RAW["windows"]["keyframes"])
    assert p.teacher.scale_std == tuple(RAW["teacher"]["scale_std"])
    assert p.corpus.names("train") == RAW["corpus"]["train"]
    assert p.corpus.split_of(RAW["corpus"]["test"][0]) == "test"
    assert p.teacher_of(RAW["corpus"]["val"][0]) == p.teacher.name
    assert params_from_dict(p.model_dump()) == p  # model_dump replaces dataclasses.asdict


def test_models_are_frozen_and_replace_validates():
    p = params_from_dict(RAW)
    with pytest.raises(ValueError, match="frozen"):
        p.train.lr = 0.5
    assert p.model.replace(channels=8).channels == 8 and p.model.channels == RAW["model"]["channels"]
    with pytest.raises(ConfigError, match=r"params\.yaml: model\.channels = 1 is invalid; allowed: integer >= 2"):
        p.model.replace(channels=1)
    with pytest.raises(ConfigError, match=r"windows\.overlap = 4 is invalid; .*\[0, windows\.length=4\)"):
        WindowParams(length=4, overlap=4, keyframes=[0], inference_length=8, inference_overlap=4)


def test_checkpoint_style_round_trip():
    model = params_from_dict(RAW).model
    again = ModelParams(**model.model_dump())
    assert again == model
    with pytest.raises(ConfigError, match=r"unknown key model\.old_flag; known keys: channels, "):
        ModelParams(**model.model_dump(), old_flag=True)


def test_merged_applies_nested_overrides():
    p = params_from_dict(RAW).merged({"train": {"steps": 4, "lr": "2e-3"}, "windows": {"keyframes": [0]}})
    assert (p.train.steps, p.train.lr, p.windows.keyframes) == (4, 0.002, (0,))
    assert p.train.batch_size == RAW["train"]["batch_size"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (("train.lr", "abc"), r"train\.lr = 'abc' is invalid; allowed: number in \(0, 1\)$"),
        (("teacher.scale_corr", "x"), r"teacher\.scale_corr = 'x' is invalid; allowed: \[low, high\] with low <= high"),
        (("infer.max_depth_m", "big"), r"infer\.max_depth_m = 'big' is invalid; allowed: number > 0"),
        (("train.steps", "1e3"), r"train\.steps = '1e3' is invalid; allowed: integer >= 1 \(write a plain integer"),
        (("train.steps", 300.0), r"train\.steps = 300\.0 is invalid; allowed: integer >= 1"),
        (
            ("train.lr", True),
            r"train\.lr = True is invalid; allowed: number in \(0, 1\) \(true/false is not a",
        ),
        (("teacher.seed", True), r"teacher\.seed = True is invalid; allowed: integer >= 0"),
        (("model.bidirectional", "yes"), r"model\.bidirectional = 'yes' is invalid; allowed: true or false"),
        (("infer.export_npy", 1), r"infer\.export_npy = 1 is invalid; allowed: true or false"),
        (("model.temporal_blend", "no"), r"model\.temporal_blend = 'no' is invalid; allowed: true or false"),
        (("train.amp", "fp8"), r"train\.amp = 'fp8' is invalid; allowed: one of none, bf16, fp16"),
        (("train.lr", float("nan")), r"train\.lr = nan is invalid"),
        (("train.grad_clip", ".inf"), r"train\.grad_clip = '\.inf' is invalid; allowed: number >= 0 \(0 or null"),
        (("train.grad_clip", -1), r"train\.grad_clip = -1 is invalid"),
        (("train.jitter_scale", 0.5), r"train\.jitter_scale = 0\.5 is invalid; allowed: number in \[0, 0\.5\)"),
        (("train.init", ""), r"train\.init = '' is invalid; allowed: null or non-empty text"),
        (("evaluate.ema_alpha", 0), r"evaluate\.ema_alpha = 0 is invalid; allowed: number in \(0, 1\]"),
        (("stereo.max_video_frames", 0), r"stereo\.max_video_frames = 0 is invalid; allowed: null or integer >= 1"),
        (("windows.overlap", 12), r"windows\.overlap = 12 is invalid; allowed: integer in \[0, windows\.length=12\)"),
        (("windows.keyframes", [0, 12]), r"windows\.keyframes = \[0, 12\] is invalid; allowed: sorted, distinct"),
        (("windows.keyframes", [4, 0]), r"windows\.keyframes = \[4, 0\] is invalid"),
        (("windows.keyframes", [0, 0]), r"windows\.keyframes = \[0, 0\] is invalid"),
        (("windows.length", 1), r"windows\.length = 1 is invalid; allowed: integer >= 2"),
        (("windows.inference_overlap", 24), r"windows\.inference_overlap = 24 is invalid; .*inference_length=24\)"),
        (("decode.size", 15), r"decode\.size = 15 is invalid; allowed: even integer in \[16, 4096\]"),
        (("decode.size", 250), r"decode\.size = 250 is invalid; .*a multiple of teacher\.low_res_factor=4"),
        (("train.crop", 512), r"train\.crop = 512 is invalid; allowed: integer in \[8, decode\.size=256\]"),
        (("train.crop", 98), r"train\.crop = 98 is invalid; .*multiple of teacher\.low_res_factor=4"),
        (("teacher.low_res_factor", 3), r"teacher\.low_res_factor = 3 is invalid; allowed: one of 1, 2, 4, 8"),
        (("teacher.low_res_factor", True), r"teacher\.low_res_factor = True is invalid"),
        (
            ("teacher.name", "midas"),
            r"teacher\.name = 'midas' is invalid; allowed: a registered teacher \(learned, simulated, unidepth; .*",
        ),
        (("teacher.profiles", {"wide": {"noise_rel": [0, 1]}}), r"teacher\.profiles\.wide needs name: the registered"),
        (
            ("teacher.profiles", {"w": {"name": "simulated", "noise_rel": [2, 1]}}),
            r"teacher\.profiles\.w\.noise_rel = \[2, 1\] is invalid",
        ),
        (("teacher.profiles", {"w": {"name": "simulated", "seeed": 1}}), r"teacher\.profiles\.w\.seeed: not a teacher"),
        (("teacher.calibration_fallback", "other"), r"teacher\.calibration_fallback = 'other' is invalid; .*self"),
        (("teacher.scale_std", 0.03), r"teacher\.scale_std = 0\.03 is invalid; allowed: \[low, high\]"),
        (("teacher.scale_std", [0.05, 0.01]), r"teacher\.scale_std = \[0\.05, 0\.01\] is invalid; .*low <= high"),
        (("teacher.scale_std", [0.01, 0.02, 0.03]), r"teacher\.scale_std = \[0\.01, 0\.02, 0\.03\] is invalid"),
        (("teacher.scale_corr", [0.5, 1.0]), r"teacher\.scale_corr\[1\] = 1\.0 is invalid; .*each number in \[0, 1\)"),
        (("teacher.jump_prob", [-0.1, 0.5]), r"teacher\.jump_prob\[0\] = -0\.1 is invalid; .*each number in \[0, 1\]"),
        (("teacher.edge_blur_px", [0.5, True]), r"teacher\.edge_blur_px\[1\] = True is invalid"),
        (
            ("teacher.unidepth_resolution_level", 10),
            r"teacher\.unidepth_resolution_level = 10 is invalid; .*\[0, 9\]",
        ),
        (("loss.lambda_gt", 0.5), r"loss\.lambda_gt = 0\.5 is invalid; allowed: number > loss\.lambda_teacher=1\.0"),
        (("loss.edge_sigma", 0), r"loss\.edge_sigma = 0 is invalid; allowed: number > 0"),
        (("infer.min_depth_m", 200), r"infer\.min_depth_m = 200\.0 is invalid; .*infer\.max_depth_m=100\.0"),
        (("model.use_mamba_ssm", "always"), r"model\.use_mamba_ssm = 'always' is invalid; allowed: one of auto, never"),
        (("corpus.synthetic.width", 33), r"corpus\.synthetic\.width = 33 is invalid; allowed: even integer"),
        (("corpus.synthetic.frames", 1), r"corpus\.synthetic\.frames = 1 is invalid; allowed: integer >= 2"),
        (("corpus.synthetic.static_frames", 99), r"corpus\.synthetic\.static_frames = 99 is invalid; .*frames=48"),
        (("corpus.synthetic.fov_deg", 170), r"corpus\.synthetic\.fov_deg = 170 is invalid; .*in \(1, 170\)"),
        (("corpus.synthetic.crf", 52), r"corpus\.synthetic\.crf = 52 is invalid; allowed: integer in \[0, 51\]"),
        (
            ("corpus.synthetic.camera_path", "spiral"),
            r"corpus\.synthetic\.camera_path = 'spiral' is invalid; .*one of still",
        ),
    ],
)
def test_invalid_values_name_key_value_and_range(change, match):
    with pytest.raises(ConfigError, match=r"^params\.yaml: " + match):
        params_from_dict(_with(change))


def test_numeric_strings_are_numbers_for_floats():
    p = params_from_dict(_with(("train.lr", "1e-3"), ("teacher.scale_std", ["1e-2", "3e-2"])))
    assert p.train.lr == 0.001 and p.teacher.scale_std == (0.01, 0.03)
    assert params_from_dict(_with(("train.grad_clip", None))).train.grad_clip is None


def test_unknown_and_missing_keys():
    assert "unknown section holdout; known sections: corpus, decode, " in _error(("holdout", {"seed": 1}))
    assert "unknown key train.holdout_frames; known keys: seed, " in _error(("train.holdout_frames", 12))
    assert "unknown key decode.video; known keys: size" in _error(("decode.video", "x.mp4"))
    assert "train.lr is missing; add it (number in (0, 1))" in _error(("train.lr", ...))
    assert "teacher is missing; add it (a mapping with keys name, device, low_res_factor" in _error(("teacher", ...))
    assert "train = 5 is invalid; allowed: a mapping with keys seed, " in _error(("train", 5))
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        params_from_dict([1, 2])


def test_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_params(tmp_path / "nope.yaml")
    f = tmp_path / "params.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not valid YAML \(.*line"):
        load_params(f)
    f.write_text(yaml.safe_dump(_with(("train.steps", 7))))
    assert load_params(f).train.steps == 7
    f.write_text(yaml.safe_dump(_with(("train.steps", 0))))
    with pytest.raises(ConfigError, match=rf"^{f}: train\.steps = 0 is invalid"):
        load_params(f)


def test_duplicate_keys_are_rejected_with_their_line(tmp_path):
    lines = (ROOT / "params.yaml").read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith("room_a:"))
    lines.insert(i + 1, lines[i].replace("seed: 11", "seed: 99"))
    f = tmp_path / "params.yaml"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"line {i + 2}: duplicate key 'room_a' \(first at line {i + 1}\)"):
        load_params(f)


# --- corpus ---


def test_synthetic_spec_merges_overrides():
    p = params_from_dict(_with(("corpus.clips.room_a", {"kind": "synthetic", "seed": 1, "frames": 20})))
    spec = p.corpus.synthetic_spec("room_a")
    assert isinstance(spec, SyntheticDefaults) and spec.frames == 20
    assert spec.width == RAW["corpus"]["synthetic"]["width"] and spec.camera_path in CAMERA_PATHS
    assert p.corpus.clips["room_a"].overrides == {"frames": 20}
    with pytest.raises(ConfigError, match="no clip 'nope'"):
        p.corpus.synthetic_spec("nope")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            ("corpus.test", ["room_t1", "room_a"]),
            r"corpus\.test\[1\]: room_a is also in corpus\.train\[0\]; keep a clip in one split",
        ),
        (("corpus.val", ["room_val", "room_a"]), r"corpus\.val\[1\]: room_a is also in corpus\.train\[0\]"),
        (("corpus.test", ["room_t1", "room_t2", "room_t1"]), r"corpus\.test\[2\]: room_t1 is listed twice"),
        (("corpus.test", ["room_t1", "room_t2", "nope"]), r"corpus\.test\[2\] = 'nope' is invalid; allowed: a clip of"),
        (("corpus.test", ["room_t1", "room_t2"]), r"corpus\.clips\.room_t3 is in no split"),
        (("corpus.val", []), r"corpus\.val is empty"),
        (
            ("corpus.clips.bad name", {"kind": "synthetic", "seed": 1}),
            r"corpus\.clips\.bad name = 'bad name' is",
        ),
        (("corpus.clips.-x", {"kind": "synthetic", "seed": 1}), r"corpus\.clips\.-x = '-x' is invalid"),
        (("corpus.clips.room_a.seed", ...), r"corpus\.clips\.room_a\.seed is missing; a synthetic clip needs seed"),
        (
            ("corpus.clips.room_a.seed", -1),
            r"corpus\.clips\.room_a\.seed = -1 is invalid; .*integer >= 0",
        ),
        (("corpus.clips.room_a.fram", 8), r"unknown key corpus\.clips\.room_a\.fram; known keys: kind, seed"),
        (("corpus.clips.room_a.frames", 8), r"corpus\.clips\.room_a\.static_frames = 16 is invalid; .*frames=8\]"),
        (("corpus.clips.room_a.camera_path", "loop"), r"corpus\.clips\.room_a\.camera_path = 'loop' is invalid"),
        (
            ("corpus.clips.room_a.kind", "kitti"),
            r"corpus\.clips\.room_a\.kind = 'kitti' is invalid; .*one of synth",
        ),
        (("corpus.clips.room_a.gt", "g.zarr"), r"corpus\.clips\.room_a\.gt is only for video clips"),
        (("corpus.clips.room_a.teacher", "midas"), r"corpus\.clips\.room_a\.teacher = 'midas' is invalid"),
        (("corpus.clips.room_a.stride", 0), r"corpus\.clips\.room_a\.stride = 0 is invalid; allowed: integer >= 1"),
        (
            ("corpus.clips.room_a", {"kind": "video", "source": "a.mp4"}),
            r"corpus\.clips\.room_a\.intrinsics is missing; a video clip",
        ),
        (("corpus.clips.room_a", {"kind": "tum"}), r"corpus\.clips\.room_a\.source is missing"),
        (
            ("corpus.clips.room_a", {"kind": "video", "source": "a.mp4", "intrinsics": "k.json", "teacher": "x"}),
            r"corpus\.clips\.room_a\.teacher = 'x' is invalid; allowed: a registered teacher \(learned, simulated",
        ),
        (
            ("corpus.clips.room_a", {"kind": "video", "source": "a.mp4", "intrinsics": "k.json", "frames": 9}),
            r"corpus\.clips\.room_a\.frames is a corpus\.synthetic setting; a video clip cannot take it",
        ),
        (
            ("corpus.clips.room_a", {"kind": "tum", "source": "s", "camera": {"fx": 1, "fy": 1, "cx": 1}}),
            r"corpus\.clips\.room_a\.camera\.cy is missing",
        ),
        (
            (
                "corpus.clips.room_a",
                {"kind": "hypersim", "source": "s", "camera": {**CAM, "cy": "x"}},
            ),
            r"corpus\.clips\.room_a\.camera\.cy = 'x' is invalid; allowed: number > 0",
        ),
        (
            ("corpus.clips.room_a", {"kind": "video", "source": "a.mp4", "intrinsics": "k", "camera": None, "seed": 3}),
            r"corpus\.clips\.room_a\.seed is only for synthetic clips",
        ),
    ],
)
def test_corpus_errors_name_the_key(change, match):
    with pytest.raises(ConfigError, match=r"^params\.yaml: " + match):
        params_from_dict(_with(change))


def test_clip_kinds_and_teacher_override():
    video = {"kind": "video", "source": "a.mp4", "intrinsics": "k.json", "gt": None, "teacher": "unidepth"}
    tum = {"kind": "tum", "source": "data/tum/x", "camera": CAM, "stride": 2}
    p = params_from_dict(_with(("corpus.clips.room_a", video), ("corpus.clips.room_b", tum)))
    assert p.teacher_of("room_a") == "unidepth" and p.teacher_of("room_b") == "simulated"
    assert p.corpus.clips["room_b"].camera.fx == 500.0 and p.corpus.clips["room_b"].stride == 2
    with pytest.raises(ConfigError, match="room_a is a video clip, not synthetic"):
        p.corpus.synthetic_spec("room_a")
    with pytest.raises(ConfigError, match="corpus.clips.<name>.seed is only for synthetic"):
        ClipSpec(kind="tum", source="x", seed=1)
    with pytest.raises(ConfigError, match="unknown split 'holdout'"):
        p.corpus.names("holdout")


def test_from_file_reads_a_section_of_params_yaml_with_changes():
    model = ModelParams.from_file(ROOT / "params.yaml", channels=8, ssm_hidden=8)
    assert (model.channels, model.ssm_hidden, model.d_state) == (8, 8, RAW["model"]["d_state"])
    assert SyntheticDefaults.from_file(ROOT / "params.yaml").frames == RAW["corpus"]["synthetic"]["frames"]
    assert Params.from_file(ROOT / "params.yaml") == load_params(ROOT / "params.yaml")
    with pytest.raises(ConfigError, match="per clip"):
        ClipSpec.from_file(ROOT / "params.yaml")

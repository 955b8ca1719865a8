import pytest
import yaml

from refiner.config import ConfigError, load_params, params_from_dict


def test_repo_params_load_and_match_defaults():
    p = load_params("params.yaml")
    assert p.windows.length > p.windows.overlap
    assert all(0 <= k < p.windows.length for k in p.windows.keyframes)
    assert p.synth.baseline_m == pytest.approx(0.063)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"windows": {"length": 6, "overlap": 6}}, "windows.overlap"),
        ({"windows": {"length": 12, "keyframes": [0, 12]}}, "windows.keyframes"),
        ({"synth": {"width": 99}}, "synth.width"),
        ({"synth": {"frames": 0}}, "synth.frames"),
        ({"synth": {"frames": 10, "static_frames": 11}}, "synth.static_frames"),
        ({"decode": {"size": -4}}, "decode.size"),
        ({"decode": {"stride": 0}}, "decode.stride"),
        ({"synth": {"seed": True}}, "synth.seed"),
    ],
)
def test_invalid_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        params_from_dict(raw)


def test_unknown_keys_and_sections_are_rejected():
    with pytest.raises(ConfigError, match=r"synth\.frame"):
        params_from_dict({"synth": {"frame": 10}})
    with pytest.raises(ConfigError, match="unknown section"):
        params_from_dict({"sinth": {}})


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_round_trip_from_yaml(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"windows": {"length": 8, "overlap": 2, "keyframes": [0, 4]}}))
    p = load_params(f)
    assert (p.windows.length, p.windows.overlap, p.windows.keyframes) == (8, 2, [0, 4])


@pytest.mark.parametrize(
    ("section", "key"), [("model", "bidirectional"), ("infer", "export_npy"), ("evaluate", "align_disparity")]
)
def test_boolean_keys_reject_non_booleans(section, key):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}.*true or false"):
        params_from_dict({section: {key: "yes"}})

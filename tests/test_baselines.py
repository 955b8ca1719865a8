import numpy as np
import pytest

from refiner.evaluation.baselines import ema, temporal_bilateral


def test_constant_clip_passes_unchanged():
    depth = np.full((6, 4, 4), 3.0, np.float32)
    rgb = np.full((6, 4, 4, 3), 100, np.uint8)
    np.testing.assert_allclose(ema(depth, 0.3), depth)
    np.testing.assert_allclose(temporal_bilateral(depth, rgb, 2, 0.05, 0.1), depth, rtol=1e-6)


def test_ema_hand_values_and_invalid_pixels():
    depth = np.array([1.0, 2.0, 2.0], np.float32)[:, None, None] * np.ones((3, 1, 2), np.float32)
    depth[1, 0, 1] = 0
    out = ema(depth, 0.5)
    assert out[:, 0, 0].tolist() == pytest.approx([1.0, 1.5, 1.75])
    assert out[1, 0, 1] == 0 and out[2, 0, 1] == pytest.approx(2.0)  # restarts after an invalid frame
    with pytest.raises(ValueError, match="alpha"):
        ema(depth, 0.0)


def test_filters_reduce_flicker_of_a_noisy_static_clip():
    rng = np.random.default_rng(0)
    depth = (3.0 * (1 + 0.03 * rng.standard_normal((20, 1, 1))) * np.ones((20, 4, 4))).astype(np.float32)
    rgb = np.full((20, 4, 4, 3), 80, np.uint8)
    raw = depth.std(0).mean()
    assert ema(depth, 0.3).std(0).mean() < 0.6 * raw
    assert temporal_bilateral(depth, rgb, 3, 0.05, 0.1).std(0).mean() < 0.8 * raw


def test_bilateral_keeps_a_colour_change_sharp():
    depth = np.concatenate([np.full((3, 2, 2), 2.0), np.full((3, 2, 2), 4.0)]).astype(np.float32)
    rgb = np.concatenate([np.full((3, 2, 2, 3), 0), np.full((3, 2, 2, 3), 255)]).astype(np.uint8)
    out = temporal_bilateral(depth, rgb, 2, 0.05, 0.1)
    np.testing.assert_allclose(out, depth, rtol=1e-4)  # an object change is not smeared across time

import numpy as np
import pytest

from refiner.data.windows import WindowBlender, blend_weights, keyframe_mask, window_starts


@pytest.mark.parametrize(("t", "n", "o"), [(64, 12, 6), (5, 12, 6), (12, 12, 6), (31, 12, 6), (20, 8, 0), (13, 4, 3)])
def test_windows_cover_every_frame_with_fixed_length(t, n, o):
    starts = window_starts(t, n, o)
    covered = np.zeros(t, bool)
    for s in starts:
        covered[s : s + n] = True
        assert s + min(n, t) <= t
    assert covered.all()
    assert starts == sorted(starts) and starts[0] == 0


def test_window_starts_hand_case():
    assert window_starts(64, 12, 6) == [0, 6, 12, 18, 24, 30, 36, 42, 48, 52]
    assert window_starts(5, 12, 6) == [0]


def test_blend_weights_hand_values_and_nonzero():
    w = blend_weights(4)  # p = 1/8, 3/8, 5/8, 7/8
    np.testing.assert_allclose(w, [0.0625, 0.5625, 0.5625, 0.0625])
    assert (blend_weights(1) == 1).all()


def test_keyframes_follow_reversal():
    m = keyframe_mask(12, [0, 4, 8])
    assert np.flatnonzero(m).tolist() == [0, 4, 8]
    assert np.flatnonzero(keyframe_mask(12, [0, 4, 8], reverse=True)).tolist() == [3, 7, 11]


@pytest.mark.parametrize("t", [5, 31, 64])
def test_blender_constant_passes_through_and_weights_normalise(t):
    n, o = 12, 6
    blender = WindowBlender()
    out = {}
    starts = window_starts(t, n, o)
    for k, s in enumerate(starts):
        m = min(n, t)
        blender.add(s, np.full((m, 2, 3), 7.5, np.float32))
        nxt = starts[k + 1] if k + 1 < len(starts) else t
        out.update(blender.pop_ready(nxt))
        assert len(blender) <= n  # memory bounded by one window
    assert sorted(out) == list(range(t))
    for v in out.values():
        np.testing.assert_allclose(v, 7.5, rtol=1e-6)


def test_blender_weighted_mean_of_two_windows():
    b = WindowBlender()
    b.add(0, np.array([[1.0], [1.0], [1.0], [1.0]]))
    b.add(2, np.array([[3.0], [3.0], [3.0], [3.0]]))
    out = dict(b.pop_ready(6))
    # frame 2: weight 0.5625 from window 1 (pos 2), 0.0625 from window 2 (pos 0)
    assert out[2][0] == pytest.approx((0.5625 * 1 + 0.0625 * 3) / 0.625)
    assert out[0][0] == pytest.approx(1.0) and out[5][0] == pytest.approx(3.0)


def test_keyframe_boost_raises_weight_near_keyframes_only():
    base = blend_weights(12)
    boosted = blend_weights(12, [0, 4, 8], keyframe_tau=1.0, keyframe_boost=1.0)
    np.testing.assert_allclose(boosted[4] / base[4], 2.0)
    np.testing.assert_allclose(boosted[6] / base[6], 1 + np.exp(-2.0))
    b = WindowBlender([0, 4, 8], 1.0, 1.0)
    b.add(0, np.full((12, 1), 3.0))
    assert all(v[0] == pytest.approx(3.0) for _, v in b.pop_ready(12))


def test_blender_pixel_weights_gate_one_window_and_keep_normalisation():
    b = WindowBlender()
    b.add(0, np.full((2, 1, 2), 1.0), pixel_weights=np.array([[[1.0, 1.0]], [[1.0, 0.1]]]))
    b.add(1, np.full((2, 1, 2), 3.0))
    out = dict(b.pop_ready(3))
    w0, w1 = blend_weights(2)[1], blend_weights(2)[0]  # frame 1: last of window 0, first of window 1
    assert out[1][0, 0] == pytest.approx((w0 * 1 + w1 * 3) / (w0 + w1))
    assert out[1][0, 1] == pytest.approx((0.1 * w0 * 1 + w1 * 3) / (0.1 * w0 + w1))
    np.testing.assert_allclose(out[2], 3.0)

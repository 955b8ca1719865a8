"""Scene cuts: the colour-histogram and depth-jump rule, and the scenes it splits a clip into."""

import numpy as np
import pytest

from refiner.data.cuts import COLOUR_BINS, colour_histogram, is_cut, median_depth, segments


def test_colour_histogram_by_hand():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, :2] = (255, 0, 0)  # half red, half black
    h = colour_histogram(rgb)
    assert h.shape == (COLOUR_BINS**3,) and h.sum() == pytest.approx(1.0)
    assert h[0] == 0.5 and h[(7 * COLOUR_BINS + 0) * COLOUR_BINS + 0] == 0.5  # bins (0,0,0) and (7,0,0)
    blue = np.zeros_like(rgb)
    blue[...] = (0, 0, 255)
    assert 0.5 * np.abs(colour_histogram(blue) - h).sum() == pytest.approx(1.0)  # nothing shared: distance 1


@pytest.mark.parametrize(
    ("colour", "ratio", "cut"),
    [(0.39, float("nan"), False), (0.4, 1.0, True), (0.25, 1.3, True), (0.25, 1.2, False), (0.1, 5.0, False)],
)
def test_the_cut_rule(colour, ratio, cut):
    assert is_cut(colour, ratio) is cut


def test_scenes_between_cuts():
    assert segments([12, 5, 0, 5, 30], 20) == [(0, 5), (5, 12), (12, 20)]  # 0, repeats and beyond the end ignored
    assert segments([], 7) == [(0, 7)]
    assert np.isnan(median_depth(np.zeros((3, 3)))) and median_depth(np.array([[0, 1.0], [2.0, 4.0]])) == 2.0

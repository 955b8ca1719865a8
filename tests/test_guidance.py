"""The guidance map G: its NumPy Sobel against the model's torch Sobel and a hand-made step edge."""

import numpy as np
import torch

from refiner.data.guidance import edge_map, sobel_magnitude_np
from refiner.geometry.filters import sobel_magnitude


def test_numpy_sobel_equals_the_models_torch_sobel():
    x = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    np.testing.assert_allclose(sobel_magnitude_np(x), sobel_magnitude(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_unit_step_gives_half_on_both_sides_of_the_edge():
    x = np.zeros((5, 6), np.float32)
    x[:, 3:] = 1.0  # a vertical unit step between columns 2 and 3
    g = sobel_magnitude_np(x)
    np.testing.assert_allclose(g[:, 2:4], 0.5)  # (1 − 0)·4/8 on each side
    np.testing.assert_allclose(g[:, [0, 1, 4, 5]], 0.0)


def test_edge_map_marks_a_depth_edge_without_a_colour_edge():
    rgb = np.full((8, 10, 3), 128, np.uint8)  # no colour edge at all
    depth = np.full((8, 10), 2.0, np.float32)
    depth[:, 5:] = 4.0
    depth[0, 0] = 0.0  # one invalid pixel: no depth edge is read from it
    g = edge_map(rgb, depth)
    assert g.dtype == np.float32 and g.min() >= 0 and g.max() <= 1
    assert np.all(g[1:, 4:6] == 1.0)  # the step columns reach the p95 normalisation's ceiling
    assert np.all(g[:, 7:] == 0.0)  # flat far side
    assert np.isfinite(g).all()

"""Stereo for VR players: true-scale disparities with convergence, smooth comfort compression, no holes, the
packing formats players read, and automatic convergence that glides and restarts at cuts."""

import math

import numpy as np
import pytest
import torch

from refiner.geometry.convergence import DEFAULT_M, AutoConvergence, central_depth
from refiner.geometry.vr_stereo import FORMATS, StereoSettings, compress, pack, right_eye, screen_disparity

BACKGROUND, FOREGROUND = (50, 100, 150), (200, 40, 40)


def _square_scene(h=40, w=100, near=1.0, far=10.0):
    """A red square (rows 10-29, columns 40-59) at ``near`` metres before a blue wall at ``far``."""
    left = np.empty((h, w, 3), np.uint8)
    left[:] = BACKGROUND
    left[10:30, 40:60] = FOREGROUND
    depth = np.full((h, w), far, np.float32)
    depth[10:30, 40:60] = near
    return left, depth


def _columns(image, row, colour):
    return np.flatnonzero((image[row] == colour).all(-1))


def test_screen_disparity_is_fx_ipd_times_inverse_depth_minus_inverse_convergence():
    s = StereoSettings(ipd_m=0.063)
    z = torch.tensor([2.0, 4.0, 8.0, 0.0])
    d = screen_disparity(z, 500.0, s, 4.0)  # 500 * 0.063 * (1/z - 1/4)
    assert d[:3].tolist() == pytest.approx([7.875, 0.0, -3.9375], abs=1e-5)
    assert d[3] == pytest.approx(-7.875, abs=1e-3)  # no depth: as far as infinity
    assert screen_disparity(z[:1], 500.0, s, math.inf).item() == pytest.approx(15.75)  # parallel eyes: fx*b/z


def test_comfort_compression_keeps_small_disparities_and_never_reaches_the_limit():
    d = torch.linspace(-200, 200, 4001)
    out = compress(d, 20.0)
    small = d.abs() <= 10
    assert torch.equal(out[small], d[small])  # up to half the budget: untouched
    assert out.abs().max() <= 20 and (out[1:] - out[:-1] >= 0).all()  # within the limit, order kept
    assert compress(torch.tensor([30.0, -30.0]), 20.0).tolist() == pytest.approx([19.6403, -19.6403], abs=1e-4)
    slope = (compress(torch.tensor(10.001), 20.0) - compress(torch.tensor(10.0), 20.0)) / 0.001
    assert slope.item() == pytest.approx(1.0, abs=1e-2)  # smooth at the knee, no kink
    assert torch.equal(compress(d, None), d)


def test_the_right_eye_shifts_by_true_disparity_and_fills_disocclusions_from_the_background():
    left, depth = _square_scene()
    s = StereoSettings(ipd_m=0.063, max_disparity=None)
    right = right_eye(left, depth, 100.0, s, math.inf)  # square d = 6.3 px, wall 0.63 px
    assert _columns(right, 20, FOREGROUND).tolist() == list(range(34, 54))  # round(u - 6.3)
    assert (_columns(right, 20, BACKGROUND) == np.r_[0:34, 54:100]).all()  # the gap behind it: background colour
    unfilled = int((right == 0).all(-1).sum())  # the left image has no black pixel: black = a hole left open
    assert unfilled == 0


def test_at_the_convergence_distance_there_is_no_parallax():
    left, depth = _square_scene()
    right = right_eye(left, depth, 100.0, StereoSettings(max_disparity=None), 1.0)  # screen plane at the square
    assert _columns(right, 20, FOREGROUND).tolist() == list(range(40, 60))
    assert int((right == 0).all(-1).sum()) == 0  # the wall moved right (d = -5.7 px): its left edge filled


def test_no_holes_even_when_every_pixel_leaves_the_picture():
    left, depth = _square_scene(near=0.5, far=0.5)  # d = 1000 * 0.063 / 0.5 = 126 px > width
    right = right_eye(left, depth, 1000.0, StereoSettings(max_disparity=None), math.inf)
    assert int((right == 0).all(-1).sum()) == 0 and np.array_equal(right, left)  # rows nobody reached: the left eye


def test_the_comfort_limit_caps_the_shift_of_a_very_near_object():
    left, depth = _square_scene(near=0.1)  # d = 63 px without a limit
    right = right_eye(left, depth, 100.0, StereoSettings(max_disparity=0.05), math.inf)  # limit 5 px of 100
    cols = _columns(right, 20, FOREGROUND)
    assert 40 - cols.min() <= 5 and len(cols) == 20


@pytest.mark.parametrize(
    ("fmt", "shape"), [("full-sbs", (40, 200, 3)), ("half-sbs", (40, 100, 3)), ("tb", (80, 100, 3))]
)
def test_packing_formats_and_the_names_players_read(fmt, shape):
    left, _ = _square_scene()
    right = np.zeros_like(left)
    frame = pack(left, right, fmt)
    assert frame.shape == shape
    if fmt == "full-sbs":
        assert np.array_equal(frame[:, :100], left) and not frame[:, 100:].any()
    if fmt == "tb":
        assert np.array_equal(frame[:40], left) and not frame[40:].any()
    if fmt == "half-sbs":  # each eye squeezed to half width: a 2-px average of the left eye
        assert tuple(frame[20, 25]) == FOREGROUND and tuple(frame[20, 10]) == BACKGROUND  # columns 50-51, 20-21
        assert not frame[:, 50:].any()
    assert StereoSettings(format=fmt).file_name("holiday") == f"holiday{FORMATS[fmt]}.mp4"
    assert pack(left[:39, :99], right[:39, :99], fmt).shape[0] % 2 == 0  # H.264: even sizes


def test_auto_convergence_glides_and_restarts_at_a_cut():
    frame = np.full((20, 20), 100.0)  # the border never counts: only the central 10 x 10
    auto = AutoConvergence(fps=10, tau_s=1.0)
    alpha = 1 - math.exp(-0.1)
    assert auto.update(np.zeros((20, 20))) == DEFAULT_M  # nothing valid yet
    frame[5:15, 5:15] = 2.0
    assert central_depth(frame) == 2.0 and auto.update(frame) == pytest.approx(2.0)
    frame[5:15, 5:15] = 4.0
    assert auto.update(frame) == pytest.approx(2.0 * 2.0**alpha)  # log-EMA toward 4 m
    assert auto.update(np.zeros((20, 20))) == pytest.approx(2.0 * 2.0**alpha)  # no valid depth: unchanged
    frame[5:15, 5:15] = 8.0
    assert auto.update(frame, cut=True) == pytest.approx(8.0)  # a new scene starts at its own depth

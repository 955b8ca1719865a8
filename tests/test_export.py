import numpy as np
import pytest
from PIL import Image

from refiner.core.video import decode_frames
from refiner.visual.export import (
    LEGACY_PNG_SCALE,
    colorize,
    depth_to_png16,
    export_frames,
    log_depth_range,
    png16_precision,
    read_png16,
)
from refiner.visual.videos import write_panels_video


def test_png16_round_trip_within_its_documented_precision(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.1, 60.0, (6, 8)).astype(np.float32)
    depth[0, 0] = 0.0  # invalid stays 0
    depth[0, 1] = np.nan
    depth[0, 2] = 80.0  # beyond the old millimetre range (65.535 m): kept, not saturated
    assert export_frames([depth, depth * 0.5], tmp_path / "f", npy=True, png=True) == 2
    back = read_png16(tmp_path / "f/depth_00000.png")
    ok = np.isfinite(depth) & (depth > 0)
    assert np.abs(back[ok] / depth[ok] - 1).max() <= png16_precision() + 1e-6
    assert back[0, 0] == 0 and back[0, 1] == 0 and back[0, 2] == pytest.approx(80.0, rel=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "f/depth_00001.npy"), depth * 0.5)
    assert depth_to_png16(np.array([[0.05, 100.0]])).tolist() == [[1, 65535]]
    assert export_frames([depth], tmp_path / "f", npy=False, png=False) == 0  # replaced, not mixed with old frames
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["README.txt"]


def test_png16_clips_out_of_range_depth_with_a_warning_and_reads_old_millimetre_pngs(tmp_path):
    with pytest.warns(UserWarning, match="1 pixel"):
        assert depth_to_png16(np.array([[150.0, 2.0]]))[0, 0] == 65535
    Image.fromarray(np.array([[1234, 0]], dtype=np.uint16)).save(tmp_path / "old.png")  # no encoding chunk
    assert read_png16(tmp_path / "old.png").tolist() == [[pytest.approx(1234 / LEGACY_PNG_SCALE), 0.0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_colorize_gives_the_colour_maps_own_colours(dtype):
    """The uint8 table lookup picks what calling matplotlib's colour map picks, at its bin edges too."""
    from matplotlib import colormaps

    n = colormaps["turbo_r"].N
    x = np.concatenate([np.linspace(0, 1, 4 * n + 1), np.arange(n + 1) / n])  # every bin, each of its edges
    depth = np.exp(x).astype(dtype)[None]
    expected = (colormaps["turbo_r"](np.clip((np.log(depth) - 0.0) / 1.0, 0, 1))[..., :3] * 255).round()
    np.testing.assert_array_equal(colorize(depth, 0.0, 1.0), expected.astype(np.uint8))
    assert (colorize(depth, 0.0, 1.0)[0, 0] != colorize(depth, 0.0, 1.0)[0, -1]).any()


def test_colorize_shared_range_and_invalid_black():
    depth = np.array([[1.0, 10.0], [0.0, 100.0]], dtype=np.float32)
    lo, hi = np.log(1.0), np.log(100.0)
    rgb = colorize(depth, lo, hi)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[1, 0] == 0).all()
    assert not (rgb[0, 0] == rgb[1, 1]).all()  # near and far differ
    np.testing.assert_array_equal(colorize(depth * 1.0, lo, hi), rgb)
    lo2, hi2 = log_depth_range(depth)
    assert lo2 < hi2 and np.log(1.0) <= lo2 and hi2 <= np.log(100.0)


def test_panels_video_keeps_rgb_and_colours_depth_on_one_range(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :, 1] = 200  # a green image passes as it is
    rows = [[rgb, np.full((16, 16), 2.0, np.float32), np.full((16, 16), 4.0, np.float32)]] * 3
    n = write_panels_video(rows, tmp_path / "panels.mp4", fps=5, depth_range=(np.log(1.0), np.log(8.0)))
    frames = list(decode_frames(tmp_path / "panels.mp4"))
    assert n == 3 and len(frames) == 3 and frames[0].shape == (16, 48, 3)
    image, near, far = (frames[0][:, k * 16 : (k + 1) * 16].astype(int) for k in range(3))
    assert np.abs(image - rgb).mean() < 8  # H.264 keeps the image
    expected = [colorize(np.full((16, 16), z, np.float32), np.log(1.0), np.log(8.0))[0, 0] for z in (2.0, 4.0)]
    assert np.abs(near - expected[0]).mean() < 8 and np.abs(far - expected[1]).mean() < 8
    assert np.abs(near - far).mean() > 20  # different depths, different colours

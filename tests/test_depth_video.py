"""The 16-bit lossless depth video (FFV1 gray16 in Matroska): metres back within the log encoding's precision."""

import numpy as np
import pytest

from refiner.core.video import VideoError
from refiner.inference.depth_video import encode_depth_video, read_depth_video
from refiner.visual.export import depth_to_png16, png16_precision, png16_to_depth


def test_depth_video_round_trips_metres_within_the_16_bit_encodings_precision(tmp_path):
    depth = np.geomspace(0.05, 100.0, 3 * 40 * 64).astype(np.float32).reshape(3, 40, 64)
    depth[1, 0, :2] = 0.0  # invalid stays invalid
    n = encode_depth_video(iter(depth), tmp_path / "d.mkv", fps=24)
    back = np.stack(list(read_depth_video(tmp_path / "d.mkv")))
    assert n == 3 and back.shape == depth.shape and back.dtype == np.float32
    ok = depth > 0
    assert (back[~ok] == 0).all() and (back[ok] > 0).all()
    assert np.abs(back[ok] / depth[ok] - 1).max() <= png16_precision() + 1e-6  # 5.8e-5 + float32 rounding
    np.testing.assert_array_equal(back, png16_to_depth(depth_to_png16(depth)))  # lossless: the 16-bit values exactly
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mkv"]  # written atomically, no temporary left


def test_depth_video_keeps_its_own_range_and_refuses_other_videos(tmp_path):
    depth = np.full((1, 8, 8), 3.0, np.float32)
    encode_depth_video(depth, tmp_path / "d.mkv", fps=10, min_m=1.0, max_m=5.0)
    back = next(read_depth_video(tmp_path / "d.mkv"))
    assert np.abs(back / 3.0 - 1).max() <= png16_precision(1.0, 5.0) + 1e-6
    with pytest.raises(VideoError, match="no frames to encode"):
        encode_depth_video([], tmp_path / "e.mkv", fps=10)
    assert not (tmp_path / "e.mkv").exists()

import pytest
import torch

from refiner.geometry.lowres_map import low_mapping
from refiner.geometry.lowres_sampling import downsample, guided_upsample, upsample


@pytest.mark.parametrize("f", [2, 4])
def test_unit_impulse_upsamples_centred_on_its_block(f):
    low = torch.zeros(4, 4)
    low[1, 2] = 1.0
    up = upsample(low, low_mapping(f), (4 * f, 4 * f))
    # the impulse's weight peaks on the full-res pixels of its own f x f block, and is symmetric about its centre
    v, u = torch.meshgrid(torch.arange(4.0 * f), torch.arange(4.0 * f), indexing="ij")
    cv, cu = (up * v).sum() / up.sum(), (up * u).sum() / up.sum()
    assert cv.item() == pytest.approx(f * 1.5 - 0.5, abs=1e-5)
    assert cu.item() == pytest.approx(f * 2.5 - 0.5, abs=1e-5)
    inside = torch.zeros_like(up, dtype=torch.bool)
    inside[f : 2 * f, 2 * f : 3 * f] = True
    assert up[inside].min() > up[~inside].max()  # its own block gets more weight than any other pixel
    assert up.sum().item() == pytest.approx(f * f, rel=1e-5)  # mass preserved away from borders


def test_down_then_up_keeps_constant_and_linear_ramps():
    ramp = torch.arange(16.0)[None].expand(16, 16).clone() * 0.1 + 2.0
    low = downsample(ramp, 4)
    assert low.shape == (4, 4)
    torch.testing.assert_close(low[0], torch.tensor([2.15, 2.55, 2.95, 3.35]))
    up = upsample(low, low_mapping(4), (16, 16))
    torch.testing.assert_close(up[:, 2:-2], ramp[:, 2:-2])  # interior: linear ramps reproduce exactly


def test_mismatched_sizes_fail():
    with pytest.raises(ValueError, match="multiple"):
        downsample(torch.zeros(10, 10), 4)
    with pytest.raises(ValueError, match="does not take"):
        upsample(torch.zeros(4, 4), low_mapping(4), (32, 32))


def test_guided_upsample_keeps_constants_and_respects_guide_edges():
    f = 4
    const = torch.full((2, 4, 4), 3.0)
    guide_low = torch.zeros(4, 4)
    guide_low[:, 2:] = 1.0  # an edge between low-res columns 1 and 2
    guide_full = torch.zeros(16, 16)
    guide_full[:, 8:] = 1.0
    torch.testing.assert_close(
        guided_upsample(const, guide_low.expand(2, 4, 4), guide_full.expand(2, 16, 16), f, 0.1),
        torch.full((2, 16, 16), 3.0),
    )
    x = torch.where(guide_low > 0, 1.0, -1.0)
    up = guided_upsample(x, guide_low, guide_full, f, 0.05)
    assert torch.allclose(up[:, :8], torch.tensor(-1.0), atol=1e-4) and torch.allclose(
        up[:, 8:], torch.tensor(1.0), atol=1e-4
    )
    plain = upsample(x, low_mapping(f), (16, 16))
    assert plain[:, 7].abs().max() < 0.9  # bilinear blends across the edge; guided does not
    assert not guided_upsample(torch.zeros(4, 4), guide_low, guide_full, f, 0.05).any()

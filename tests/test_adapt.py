"""GT-free adaptation (refiner/inference/adapt.py): it reads no ground truth, leaves the trained model alone, and moves
a copy."""

import hashlib

import pytest
import torch

from refiner.core.config import ModelParams
from refiner.data.clip import Clip
from refiner.inference.adapt import adapt, adapt_crop
from refiner.model.refiner import Refiner
from refiner.training.checkpoint import load_refiner, save_refiner

from .clip_fixtures import make_clip, tiny_params

TINY = ModelParams.from_file(channels=4, ssm_hidden=4, d_state=2)


class GroundTruthTrap(Clip):
    """A clip whose ground truth and rendered moving mask raise when read: adaptation must never touch them."""

    def gt(self, win):
        raise AssertionError("adaptation read ground-truth depth")

    def moving(self, win):
        raise AssertionError("adaptation read the rendered moving-object mask")


def _params(steps: int):
    return tiny_params(
        windows={"length": 4, "overlap": 2, "keyframes": [0, 2], "inference_length": 8, "inference_overlap": 4},
        adapt={"steps": steps, "crop": 16, "batch_size": 2, "lr": 0.01},
        model=TINY.model_dump(),
    )


@pytest.fixture(scope="module")
def trap(tmp_path_factory):
    entry = make_clip(tmp_path_factory.mktemp("adapt"), "gtfree", frames=8, size=16, static_frames=4)
    clip = GroundTruthTrap(entry["decoded"], entry["teacher"], None, entry["guidance"])
    assert clip.has_gt  # the clip HAS ground truth: only the code's discipline keeps it unread
    return clip


def test_adaptation_reads_no_ground_truth_and_moves_a_copy(trap, tmp_path):
    torch.manual_seed(0)
    model = Refiner(TINY, 4)
    for p in model.parameters():  # trained-looking weights: the residual heads are not zero
        p.data.normal_(0, 0.1)
    path = tmp_path / "trained.safetensors"
    save_refiner(path, model, TINY, 4, {})
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    trained, _ = load_refiner(path)
    weights = {k: v.clone() for k, v in trained.state_dict().items()}
    adapted, summary = adapt(trained, [trap], _params(4), steps=4, progress=False)
    assert summary["steps"] == 4 and summary["gt_read"] is False
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the train stage's file is never written
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in weights.items())  # nor the model passed in
    assert any(not torch.equal(v, adapted.state_dict()[k]) for k, v in weights.items())  # the copy moved
    assert not adapted.training and not any(p.requires_grad for p in adapted.parameters())


def test_adaptation_crop_fits_the_smallest_clip(trap):
    assert adapt_crop([trap], 96) == 16 and adapt_crop([trap], 8) == 8

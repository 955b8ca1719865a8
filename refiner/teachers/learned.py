"""``learned``: a small single-frame metric depth network trained here, used as a teacher whose errors come out of
a network rather than out of a formula.

:class:`LearnedDepthNet` is a fully-convolutional U-Net: RGB in [0, 1] and the camera ray of every pixel in (so
it knows the focal length, hence metric scale), log depth and a log-uncertainty out (uncertainty = exp of it,
higher = less certain, the scale of a Laplace distribution of the log-depth error, like UniDepthV2's
``confidence``). It was trained on rendered scenes that share no seed with the corpus, each frame on its own,
by :mod:`refiner.training.teacher_training`; rebuild the weights with::

    python -m refiner.training.teacher_training --out models/teacher-learned

:class:`LearnedTeacher` wraps it in the :class:`~refiner.teachers.base.Teacher` protocol. It never reads ground
truth. It is not UniDepthV2 and far less accurate; its purpose is a realistic error structure.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

from refiner.core.tensor_file import read_tensor_file
from refiner.teachers.base import TeacherBatch, TeacherContext, TeacherFrame, torch_device

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models/teacher-learned/learned.safetensors"
FORMAT = "refiner-learned-teacher/1"
CHANNELS = (16, 32, 48, 64, 96)  # encoder widths at strides 2, 4, 8, 16, 32
STEM = 12  # full-resolution stem width
REBUILD = "python -m refiner.training.teacher_training --out models/teacher-learned"


class LearnedTeacherError(RuntimeError):
    """The learned teacher's weights are missing, unreadable or from another architecture."""


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm and SiLU; the first one strided."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1),
        nn.GroupNorm(4, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, 1, 1),
        nn.GroupNorm(4, c_out),
        nn.SiLU(),
    )


class LearnedDepthNet(nn.Module):
    """U-Net: RGB (B, 3, H, W) in [0, 1] and rays (B, 2, H, W) -> log depth and log-uncertainty (B, 1, H, W) each.

    Any H, W: inputs are padded (edge values) to a multiple of the coarsest stride and the outputs cropped back.
    GroupNorm keeps every frame independent of the others in a batch.
    """

    def __init__(self, channels: tuple[int, ...] = CHANNELS, stem: int = STEM) -> None:
        super().__init__()
        self.channels, self.stem_width = tuple(channels), stem
        self.stem = nn.Sequential(nn.Conv2d(5, stem, 3, 1, 1), nn.SiLU())
        widths = (stem, *channels)
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1], 2) for i in range(len(channels)))
        self.context = nn.Linear(channels[-1], channels[-1])  # a whole-image vector added at the coarsest level
        dec = [max(w, 16) for w in widths[:-1]] + [channels[-1]]  # decoder width at each level, coarsest last
        self.up = nn.ModuleList(_block(dec[i + 1] + widths[i], dec[i]) for i in range(len(channels)))
        self.head = nn.Conv2d(dec[0], 2, 1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([1.0, -1.5]))  # about 2.7 m, log-uncertainty -1.5

    @property
    def multiple(self) -> int:
        return 2 ** len(self.channels)

    def forward(self, rgb: torch.Tensor, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = rgb.shape[-2:]
        pad = (0, -w % self.multiple, 0, -h % self.multiple)
        x = F.pad(torch.cat([rgb * 2 - 1, rays], 1), pad, mode="replicate")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips[-1] + self.context(skips[-1].mean((2, 3)))[:, :, None, None]
        for up, skip in zip(reversed(self.up), reversed(skips[:-1]), strict=True):
            y = up(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear"), skip], 1))
        out = self.head(y)[..., :h, :w]
        return out[:, :1], out[:, 1:]


def camera_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rays (B, 2, H, W) ((u - cx) / fx, (v - cy) / fy) of intrinsics K (B, 3, 3). Pixel centres sit at integer
    coordinates in this project (:mod:`refiner.geometry.camera`), so this is the ray through each pixel's centre."""
    K = K.float()
    u = torch.arange(width, dtype=torch.float32, device=K.device)
    v = torch.arange(height, dtype=torch.float32, device=K.device)
    x = (u[None, :] - K[:, 0, 2, None]) / K[:, 0, 0, None]  # (B, W)
    y = (v[None, :] - K[:, 1, 2, None]) / K[:, 1, 1, None]  # (B, H)
    return torch.stack([x[:, None, :].expand(-1, height, -1), y[:, :, None].expand(-1, -1, width)], 1)


def weights_bytes(net: LearnedDepthNet, extra: dict[str, Any]) -> bytes:
    """The weights (float32) and the architecture as the bytes of one safetensors file; the same weights give the
    same bytes (the metadata is one JSON string with sorted keys, so the header's order never varies)."""
    state = {k: v.detach().cpu().float().contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "channels": list(net.channels), "stem": net.stem_width, **extra}
    return save(state, metadata={"learned": json.dumps(meta, sort_keys=True)})


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[LearnedDepthNet, str]:
    """The network of a weights file (eval mode, on ``device``) and the file's sha256."""
    path, fix = Path(path), f"rebuild them with `{REBUILD}`"
    state, header = read_tensor_file(path, "learned teacher weights", fix, LearnedTeacherError)
    try:
        meta = json.loads(header.get("learned", "{}"))
    except json.JSONDecodeError as e:
        raise LearnedTeacherError(f"{path}: unreadable learned teacher weights ({e}); {fix}") from e
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        raise LearnedTeacherError(f"{path}: not learned teacher weights (format {found!r}, expected {FORMAT!r})")
    net = LearnedDepthNet(tuple(meta["channels"]), int(meta["stem"]))
    if set(state) != set(net.state_dict()) or any(state[k].shape != v.shape for k, v in net.state_dict().items()):
        raise LearnedTeacherError(f"{path}: weights do not fit this code's LearnedDepthNet; rebuild with `{REBUILD}`")
    net.load_state_dict(state)
    return net.eval().to(device), hashlib.sha256(path.read_bytes()).hexdigest()


class LearnedTeacher:
    """The :class:`~refiner.teachers.base.Teacher` ``learned``: :class:`LearnedDepthNet` on each frame with its
    camera. ``teacher.options.weights`` overrides the weights file (default :data:`DEFAULT_WEIGHTS`). Batches of 8
    frames on a GPU; 2 on a CPU, where larger batches were slower per frame (30 against 57 ms at 320x256, 2 cores)."""

    name = "learned"
    label = "learned: a small single-frame network trained here on rendered scenes (not UniDepthV2)"

    def __init__(self, ctx: TeacherContext) -> None:
        self.device = torch_device(ctx.device)
        self.batch_size = 8 if self.device.type == "cuda" else 2
        self.weights = Path(ctx.options.get("weights") or DEFAULT_WEIGHTS)
        self.net, self.sha256 = load_weights(self.weights, self.device)

    def predict(self, batch: TeacherBatch) -> list[TeacherFrame]:
        """Depth (metres; 0 only where the network gives a non-finite value) and uncertainty (> 0) per frame."""
        rgb = torch.from_numpy(np.ascontiguousarray(batch.rgb)).to(self.device).permute(0, 3, 1, 2).float() / 255
        K = torch.from_numpy(np.asarray(batch.K, dtype=np.float64)).to(self.device)
        with torch.inference_mode():
            log_depth, log_unc = self.net(rgb, camera_rays(K, *rgb.shape[-2:]))
        log_depth, log_unc = log_depth[:, 0], log_unc[:, 0]
        depth = torch.where(log_depth.isfinite(), log_depth.clamp(-30.0, 30.0).exp(), 0.0)
        unc = log_unc.nan_to_num(0.0).clamp(-30.0, 30.0).exp()
        depth, unc = depth.float().cpu().numpy(), unc.float().cpu().numpy()
        return [
            TeacherFrame(depth[i], unc[i], np.asarray(batch.K[i], dtype=np.float64).copy(), None)
            for i in range(len(batch))
        ]

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.sha256}

"""Stereo for VR players: a true-scale right eye from the left image and its metric depth, packed as players expect.

The left eye is the source frame. The right camera sits ``ipd_m`` to the right of it, and the screen's zero
parallax is at ``convergence_m`` (C): a point at depth z lands ``d = fx·ipd·(1/z − 1/C)`` pixels to the left in
the right eye (d > 0: in front of the screen, 0 at C, < 0 behind it; C = inf gives parallel eyes, d = fx·ipd/z).
With the source camera's fx, metric z and the viewer's own IPD, these are the disparities the viewer's eyes would
see at the scene itself when the player shows the picture at the camera's field of view with its screen at C:
true scale (README, "Stereo for VR players"). Pixels without depth (0) count as infinitely far.

Comfort (``max_disparity``, a fraction of the width, M pixels): |d| up to M/2 is kept as it is; above, it is
compressed smoothly, d' = sign(d)·(M/2 + M/2·tanh((|d| − M/2)/(M/2))), which is continuous with slope 1 at M/2
and never exceeds M: nothing is clipped, far and near layers keep their order.

The right eye is splatted with a z-buffer (the nearest surface wins, :func:`refiner.geometry.warp.forward_warp`) and
every disoccluded pixel is filled from the background side of its row (:func:`refiner.geometry.warp.fill_holes`), the
few that no row neighbour reaches with the left image's pixel, so the result has no holes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from refiner.geometry.warp import fill_holes, forward_warp

FORMATS = {  # --stereo-format: file name suffix players recognise, and the layout
    "full-sbs": "_LRF_Full_SBS",  # left | right, each eye at full size (2W x H)
    "half-sbs": "_Half_SBS",  # left | right, each eye squeezed to half width (W x H)
    "tb": "_TB",  # left over right, each eye at full size (W x 2H)
}
FAR_M = 1e6  # the depth a pixel without depth is drawn at (its disparity is that of infinity)


@dataclass(frozen=True)
class StereoSettings:
    """How the stereo video is made (the ``--stereo-*``, ``--ipd-mm``, ``--convergence-m``, ``--max-disparity``
    options); ``convergence_m`` None = auto (:mod:`refiner.geometry.convergence`), ``max_disparity`` None = no limit."""

    format: str = "full-sbs"
    ipd_m: float = 0.063
    convergence_m: float | None = None
    max_disparity: float | None = 0.03

    def file_name(self, name: str) -> str:
        """``<name><suffix>.mp4`` with the suffix players read the layout from."""
        return f"{name}{FORMATS[self.format]}.mp4"


def compress(d: torch.Tensor, limit: float | None) -> torch.Tensor:
    """Disparities (pixels) with |d| above ``limit``/2 compressed smoothly below ``limit`` (module docstring)."""
    if limit is None:
        return d
    knee = limit / 2
    over = (d.abs() - knee).clamp_min(0)
    return torch.where(d.abs() > knee, d.sign() * (knee + knee * torch.tanh(over / knee)), d)


def screen_disparity(depth: torch.Tensor, fx: float, s: StereoSettings, convergence_m: float) -> torch.Tensor:
    """d = fx·ipd·(1/z − 1/C) in pixels of the image (module docstring), before compression."""
    z = torch.where(depth > 0, depth.double(), FAR_M)
    inv_c = 0.0 if math.isinf(convergence_m) else 1.0 / convergence_m
    return (fx * s.ipd_m * (1.0 / z - inv_c)).float()


def right_eye(left: np.ndarray, depth: np.ndarray, fx: float, s: StereoSettings, convergence_m: float) -> np.ndarray:
    """The right eye (H, W, 3) uint8 from the left RGB (H, W, 3) and its z-depth (H, W), with no holes."""
    image = torch.from_numpy(np.ascontiguousarray(left)).permute(2, 0, 1).float()
    z = torch.from_numpy(np.asarray(depth, dtype=np.float32))
    z = torch.where(z > 0, z, torch.full_like(z, FAR_M))
    limit = None if s.max_disparity is None else s.max_disparity * left.shape[1]
    d = compress(screen_disparity(z, fx, s, convergence_m), limit)
    warped, holes = forward_warp(torch.cat([image, z[None]]), d, z)
    right = fill_holes(warped[:3], holes, warped[3])
    missed = holes & holes.all(1, keepdim=True)  # a row the splat missed entirely (fill_holes has no neighbour)
    right = torch.where(missed[None], image, right)
    return right.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def pack(left: np.ndarray, right: np.ndarray, fmt: str) -> np.ndarray:
    """The two eyes in the layout of ``fmt`` (:data:`FORMATS`), cut to even sizes for H.264."""
    if fmt == "full-sbs":
        frame = np.concatenate([left, right], axis=1)
    elif fmt == "half-sbs":
        frame = np.concatenate([_half_width(left), _half_width(right)], axis=1)
    elif fmt == "tb":
        frame = np.concatenate([left, right], axis=0)
    else:
        raise ValueError(f"--stereo-format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def _half_width(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W // 2, 3): antialiased bilinear, as players stretch it back."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(image.shape[0], image.shape[1] // 2), mode="bilinear", antialias=True)
    return x[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()

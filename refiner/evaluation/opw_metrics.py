"""Optical-flow-based warping error (OPW) of depth, two ways, and the GT flow it uses. Pure functions on
tensors; conventions as in :mod:`refiner.evaluation.depth_metrics`.

- OPW, two ways.
  * ``opw_metric`` (metric, motion compensated; not NVDS's OPW): GT optical flow from GT depth and poses
    (static scene; moving pixels excluded); D_{t−1} and I_{t−1} are sampled bilinearly at the flow target
    x' of each pixel x of frame t, and the point D_{t−1}(x')·K⁻¹[x', 1] is moved into camera t (GT poses),
    giving z'; error = Σ w·|D_t(x) − z'| / D_t / Σ w with w = exp(−50·‖I_t − I_{t−1}(x')‖²) (RGB in 0–1,
    squared norm averaged over channels). Zero for exact depth even while the camera moves; no per-frame
    normalisation, so scale flicker counts.
  * ``opw_nvds`` (NVDS's OPW): disparity normalised per frame by its median and mean absolute deviation,
    so each frame's scale and shift are removed and only relative, local consistency is measured; see
    :func:`opw_nvds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from refiner.geometry.camera import project, relative_pose, sample_at, transform_points, unproject

_EPS = 1e-6


def _flow_targets(gt_t: torch.Tensor, K_t: torch.Tensor, K_s: torch.Tensor, T_ts: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (2, H, W) in frame s of each pixel of frame t (GT flow of a static scene)."""
    pts = transform_points(T_ts[None], unproject(gt_t[None].float(), K_t[None]))
    return project(pts, K_s[None].float())[0][0]


def _sample(img: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear sample of (C, H, W) at pixel coordinates (2, H, W); returns values and an in-bounds mask."""
    _, h, w = img.shape
    grid = torch.stack([(uv[0] + 0.5) / w * 2 - 1, (uv[1] + 0.5) / h * 2 - 1], -1)[None].float()
    out = F.grid_sample(img[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    inside = (uv[0] >= 0) & (uv[0] <= w - 1) & (uv[1] >= 0) & (uv[1] <= h - 1)
    return out, inside


@dataclass(frozen=True)
class OpwPair:
    """The depth-independent part of metric-space OPW (:func:`opw_metric_pairs`) for the pair (t − 1, t): the GT
    flow target x' of each pixel (2, H, W) and whether it lies inside frame t − 1, the photometric weight map w
    (H, W), the rays K_{t−1}⁻¹[x', 1] (3, H, W) and the pose from camera t − 1 to camera t (1, 4, 4)."""

    uv: torch.Tensor
    inside: torch.Tensor
    weight: torch.Tensor
    rays: torch.Tensor
    prev_to_t: torch.Tensor


def opw_geometry(
    rgb: torch.Tensor, K: torch.Tensor, poses: torch.Tensor, gt: torch.Tensor, weight: float = 50.0
) -> list[OpwPair]:
    """:class:`OpwPair` of every pair (t − 1, t) of the frames given: the same for every method scored on them.
    rgb (T, 3, H, W) in [0, 1]; K (T, 3, 3); poses (T, 4, 4) camera-to-world; gt (T, H, W); ``weight``: α of the
    photometric weight exp(−α·mean_c (I_t − I_{t−1}(x'))²)."""
    out = []
    for t in range(1, gt.shape[0]):
        uv = _flow_targets(gt[t], K[t], K[t - 1], relative_pose(poses[t][None], poses[t - 1][None])[0])
        i_prev, inside = _sample(rgb[t - 1], uv)
        homog = torch.cat([uv.double(), torch.ones_like(uv[:1]).double()])  # (3, H, W)
        out.append(
            OpwPair(
                uv=uv,
                inside=inside,
                weight=torch.exp(-weight * (rgb[t].float() - i_prev).square().mean(0)),
                rays=torch.einsum("ij,jhw->ihw", torch.linalg.inv(K[t - 1].double()), homog),
                prev_to_t=relative_pose(poses[t - 1][None], poses[t][None]),
            )
        )
    return out


def opw_metric_pairs(
    depth: torch.Tensor, gt: torch.Tensor, geometry: list[OpwPair], moving: torch.Tensor | None = None
) -> list[float]:
    """Metric-space OPW's error of each pair (t − 1, t) that has a counted pixel: the photometrically weighted
    relative depth error along GT flow (motion compensated); the clip's figure is their mean. depth, gt (T, H, W);
    ``geometry``: :func:`opw_geometry` of these frames (the same for every method scored on them); moving (T, H, W)
    or None."""
    errs = []
    for t, pair in enumerate(geometry, 1):
        d_prev, _ = _sample(depth[t - 1][None], pair.uv)
        ok = pair.inside & (gt[t] > 0) & (depth[t] > 0) & (d_prev[0] > 0)
        if moving is not None:
            ok &= ~moving[t].bool() & ~moving[t - 1].bool()
        if not ok.any():
            continue
        w = pair.weight[ok]
        # the previous frame's depth at x', as a 3D point moved into camera t: its z is what D_t should be
        pts = transform_points(pair.prev_to_t, (pair.rays * d_prev.double()).float()[None])
        z_prev = pts[0, 2].float()
        rel = (depth[t][ok] - z_prev[ok]).abs() / depth[t][ok]
        errs.append(float((w * rel).sum() / w.sum().clamp_min(_EPS)))
    return errs


def flow_to_previous(
    gt: torch.Tensor, K: torch.Tensor, K_prev: torch.Tensor, poses: torch.Tensor, poses_prev: torch.Tensor
) -> torch.Tensor:
    """GT optical flow (P, 2, H, W) from frames t to frames t−1 of a static scene, float64.

    gt (P, H, W) depth of frames t; K, K_prev (P, 3, 3); poses, poses_prev (P, 4, 4) camera-to-world.
    Pixel x of frame t sits at x + flow(x) in frame t−1. NaN where GT ≤ 0 or the point is behind camera t−1.
    """
    p, h, w = gt.shape
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")[::-1]).double()
    homog = torch.cat([grid, torch.ones(1, h, w, dtype=torch.float64)]).reshape(3, -1)
    T = relative_pose(poses, poses_prev)
    pts = T[:, :3, :3] @ (torch.linalg.inv(K.double()) @ homog * gt.double().flatten(1)[:, None]) + T[:, :3, 3:]
    uvw = K_prev.double() @ pts
    flow = uvw[:, :2] / uvw[:, 2:] - homog[:2]
    bad = (gt.flatten(1) <= 0) | (uvw[:, 2] <= 0)
    return flow.masked_fill(bad[:, None], torch.nan).reshape(p, 2, h, w)


def _nvds_normalise(x: torch.Tensor) -> torch.Tensor:
    """NVDS's n(x) per map of (P, H, W): (x − median) / mean |x − median| over the whole map (lower median,
    as torch.median; the scale is clamped at 1e-6 as in their code)."""
    med = x.flatten(1).median(1).values[:, None, None]
    scale = (x - med).abs().flatten(1).mean(1).clamp_min(1e-6)[:, None, None]
    return (x - med) / scale


def _warp_back(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp (P, C, H, W) with a flow (P, 2, H, W) in pixels: out(x) = img(x + flow(x)), bilinear,
    zero padding, pixel centres at integers (as GMFlow's flow_warp, align_corners=True); NaN flow → 0."""
    _, _, h, w = img.shape
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")[::-1]).to(flow)
    return sample_at(img, grid + flow)


def _nvds_image(rgb: torch.Tensor) -> torch.Tensor:
    """RGB (T, 3, H, W), uint8 or float in [0, 1], on NVDS's 0–255 scale in float64."""
    return rgb.double() if rgb.dtype == torch.uint8 else rgb.double() * 255


def _nvds_weight(img: torch.Tensor, t: torch.Tensor, flow: torch.Tensor, alpha: float) -> torch.Tensor:
    """Σ_c exp(−α(I_t − Ĩ_{t−1})²) (P, H, W) for the frames ``t`` of ``img`` and their flows t → t−1."""
    return torch.exp(-alpha * (img[t] - _warp_back(img[t - 1], flow)).square()).sum(1)


def nvds_weights(rgb: torch.Tensor, flow: torch.Tensor, alpha: float = 50.0, chunk: int = 8) -> torch.Tensor:
    """:func:`opw_nvds`' photometric weights (T − 1, H, W) for t = 1..T−1, from RGB (T, 3, H, W) and the flow
    (T − 1, 2, H, W) t → t−1. They depend on neither depth nor method: made once, they serve every method."""
    img = _nvds_image(rgb)
    return torch.cat(
        [_nvds_weight(img, t, flow[t - 1].double(), alpha) for t in torch.arange(1, len(rgb)).split(chunk)]
    )


def gt_flow(gt: torch.Tensor, K: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """GT flow t → t−1 (T − 1, 2, H, W) of every frame after the first of gt (T, H, W), K (T, 3, 3) and poses
    (T, 4, 4) camera-to-world (a static scene, :func:`flow_to_previous`)."""
    return flow_to_previous(gt[1:], K[1:], K[:-1], poses[1:], poses[:-1])


def opw_nvds(depth: torch.Tensor, flow: torch.Tensor, weights: torch.Tensor, chunk: int = 8) -> float:
    """OPW as in NVDS's evaluation code: Σ_{t≥1} 10 · mean_x[Σ_c exp(−α(I_t − Ĩ_{t−1})²) · |n(D̃_{t−1}) − n(D_t)|] / T.

    D = 1/depth (0 where depth ≤ 0) is disparity; ~ is backward warping of frame t−1 into frame t with the
    flow t → t−1 (bilinear, zero padding); n(·) (:func:`_nvds_normalise`) is applied to the *warped*
    previous map and to D_t, each over the whole image (zero-padded and invalid pixels included, as NVDS
    normalises with an all-ones mask); the mean runs over all pixels. T is the number of frames (NVDS
    divides the sum over T − 1 pairs by ``len(frames)``).

    depth (T, H, W); flow (T − 1, 2, H, W) t → t−1 in pixels for t = 1..T−1 (GT flow: :func:`gt_flow`);
    weights: :func:`nvds_weights` of the frames' RGB and this flow, on NVDS's 0–255 colour scale, where
    exp(−50·ΔI²) is ~0 unless the colours agree within ~0.3 levels, so in practice only pixels whose warped colour
    is (almost) identical count — faithful to NVDS, and the reason its absolute values are small. Scale-free: a
    positive per-frame scale of depth (and, where the flow stays inside the image, any per-frame positive affine
    change of disparity) leaves it unchanged. Float64; ``chunk`` pairs at a time.
    """
    frames = depth.shape[0]
    if frames < 2:
        return float("nan")
    disp = torch.where(depth > 0, 1 / depth.double().clamp_min(1e-12), 0.0)
    total = 0.0
    for t in torch.arange(1, frames).split(chunk):
        warped_d = _warp_back(disp[t - 1][:, None], flow[t - 1].double())[:, 0]
        diff = (_nvds_normalise(warped_d) - _nvds_normalise(disp[t])).abs()
        total += float((10 * (weights[t - 1] * diff).flatten(1).mean(1)).sum())
    return total / frames

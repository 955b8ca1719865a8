"""Depth metrics: per-frame accuracy, temporal stability, stereo jitter. Pure functions on tensors.

Conventions: depth maps are (T, H, W) or (H, W) z-depth in metres, 0 = invalid; GT-based metrics
use pixels where GT > 0 and the prediction > 0. Per-frame metrics are averaged per frame, then over
frames. Nothing is scale-aligned unless a function says so (metric depth is scored as is).

- AbsRel = mean |D − G| / G; RMSE = sqrt(mean (D − G)²); log-RMSE = sqrt(mean (log D − log G)²);
  δ_k = share of pixels with max(D/G, G/D) < 1.25^k (strict).
- Flicker on static regions: per pixel, the temporal std (and the median absolute deviation) of depth
  over the still-camera segment divided by the pixel's temporal median; averaged over the static
  mask (pixels never on a moving object there, valid throughout).
- TAE, two ways. They answer different questions; report both, never one instead of the other.
  * ``tae`` (the project's metric variant, masked and z-buffered): no alignment. For consecutive frames
    i → j (both directions), back-project D_i with K_i, move by inv(P_j)·P_i (GT camera-to-world poses),
    project with K_j, round to the nearest pixel, keep points landing inside with z > 0; where several
    land on one pixel the nearest wins; count pixels where GT_j > 0, D_j > 0, GT_i > 0 at the source, and
    neither source nor target is on a moving object; error = mean |D_j − z| / D_j; TAE = 100 · mean over
    pairs that have a counted pixel.
  * ``tae_vda`` (Video Depth Anything's published protocol, benchmark/eval/eval_tae.py): one least-squares
    scale and shift of disparity over the whole clip, fitted where 1e-3 < GT < max_depth, back to depth
    clipped to [1e-3, max_depth]; no z-buffer (the last write wins, in raster order of the source frame),
    no moving-object mask, no GT-validity mask; TAE = 100 · Σ errors / (2(N − 1)), an empty pair adds 0.
  ``tae`` is the stricter one: a per-frame scale error counts in full (``tae_vda`` removes a global scale
  and shift, and only the per-frame part of the scale error remains), and because occlusions, moving
  objects and invalid GT are masked out its floor (GT scored against itself) is much lower. The same
  absolute improvement is therefore a larger *relative* gain under ``tae`` than a peer would measure with
  ``tae_vda``, whose occlusion and moving-object errors form a floor no method removes.
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
- Scale over time: per frame, the median of D/G over valid pixels off moving objects; its std over
  the clip is ``scale_ratio_std``.
- Stereo jitter: mean |disp_t − disp_{t−1}| in pixels on static pixels of the still-camera segment,
  disp = fx · baseline / D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from refiner.geometry.camera import project, relative_pose, transform_points, unproject
from refiner.geometry.scatter import scatter_kept

_EPS = 1e-6


def depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """AbsRel, RMSE, log-RMSE, δ1..3 of one frame (H, W) on pixels valid in both; NaN when none are."""
    ok = (gt > 0) & (pred > 0) & torch.isfinite(pred)
    if not ok.any():
        return dict.fromkeys(("absrel", "rmse", "log_rmse", "d1", "d2", "d3"), float("nan"))
    d, g = pred[ok].double(), gt[ok].double()
    ratio = torch.maximum(d / g, g / d)
    return {
        "absrel": float(((d - g).abs() / g).mean()),
        "rmse": float((d - g).square().mean().sqrt()),
        "log_rmse": float((d.log() - g.log()).square().mean().sqrt()),
        "d1": float((ratio < 1.25).double().mean()),
        "d2": float((ratio < 1.25**2).double().mean()),
        "d3": float((ratio < 1.25**3).double().mean()),
    }


def per_frame_errors(pred: torch.Tensor, gt: torch.Tensor) -> list[dict[str, float]]:
    """:func:`depth_errors` for every frame of (T, H, W)."""
    return [depth_errors(p, g) for p, g in zip(pred, gt, strict=True)]


def mean_errors(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average per-frame metrics over frames (NaN frames skipped)."""
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def flicker(depth: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Relative temporal std and MAD of depth (T, H, W) over the (H, W) mask (see module docstring)."""
    if depth.shape[0] < 2 or not mask.any():
        return {"std_rel": float("nan"), "mad_rel": float("nan")}
    d = depth[:, mask].double()  # (T, P)
    med = d.median(0).values.clamp_min(_EPS)
    return {
        "std_rel": float((d.std(0) / med).mean()),
        "mad_rel": float(((d - med).abs().median(0).values / med).mean()),
    }


def frame_pairs(frames: int) -> torch.Tensor:
    """(2(T − 1), 2) (source, target) frame indices: (0, 1), (1, 0), (1, 2), (2, 1), … — both directions."""
    i = torch.arange(max(frames - 1, 0))
    return torch.stack([torch.stack([i, i + 1], 1), torch.stack([i + 1, i], 1)], 1).reshape(-1, 2)


def reproject_batch(
    depth: torch.Tensor, K_src: torch.Tensor, K_dst: torch.Tensor, T: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-project P source depths (P, H, W) into their targets with a z-buffer (nearest wins).

    K_src, K_dst (P, 3, 3); T (P, 4, 4) source camera → target camera; valid (P, H, W) source pixels.
    Returns z (P, H, W) float64 (0 where nothing lands) and the hit mask (P, H, W). One scatter for all
    pairs: each pair's pixels are offset by p·H·W in one flat buffer.
    """
    p, h, w = depth.shape
    pts = transform_points(T, unproject(depth.float(), K_src))
    uv, z = project(pts, K_dst.float())
    u, v, z = uv[:, 0].round().long().flatten(1), uv[:, 1].round().long().flatten(1), z.flatten(1)
    keep = valid.flatten(1) & (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    target = v * w + u + torch.arange(p)[:, None] * (h * w)
    zbuf = scatter_kept(z.double(), target, keep, p * h * w, "amin", float("inf"))
    hit = torch.isfinite(zbuf)
    return torch.where(hit, zbuf, 0.0).reshape(p, h, w), hit.reshape(p, h, w)


def reproject(
    depth_i: torch.Tensor, K_i: torch.Tensor, K_j: torch.Tensor, T_ij: torch.Tensor, valid_i: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-project frame i's depth into frame j with a z-buffer: (z (H, W), hit mask (H, W))."""
    z, hit = reproject_batch(depth_i[None], K_i[None], K_j[None], T_ij[None], valid_i[None])
    return z[0], hit[0]


def tae_pairs(
    depth: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    moving: torch.Tensor | None = None,
    chunk: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per consecutive pair of (T, H, W), both directions: (Σ |D_j − z| / D_j, counted pixels), each (2(T − 1),).

    The parts of :func:`tae`, so that a clip can be scored span by span (spans sharing one frame).
    """
    static = ~moving.bool() if moving is not None else torch.ones_like(gt, dtype=torch.bool)
    ok_px = (depth > 0) & (gt > 0) & static  # a pixel may be a source and a target
    sums, counts = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.long)]
    for pairs in frame_pairs(depth.shape[0]).split(chunk) if depth.shape[0] >= 2 else ():
        a, b = pairs[:, 0], pairs[:, 1]
        z, hit = reproject_batch(depth[a], K[a], K[b], relative_pose(poses[a], poses[b]), ok_px[a])
        ok = hit & ok_px[b]
        d_b = torch.where(ok, depth[b].double(), 1.0)
        sums.append(torch.where(ok, (d_b - z).abs() / d_b, 0.0).flatten(1).sum(1))
        counts.append(ok.flatten(1).sum(1))
    return torch.cat(sums), torch.cat(counts)


def tae_from_pairs(sums: torch.Tensor, counts: torch.Tensor) -> float:
    """TAE ×100 from :func:`tae_pairs`: the mean over pairs that have a counted pixel; NaN when none does."""
    ok = counts > 0
    return 100 * float((sums[ok] / counts[ok]).mean()) if ok.any() else float("nan")


def tae(
    depth: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    moving: torch.Tensor | None = None,
    chunk: int = 8,
) -> float:
    """Masked, z-buffered metric TAE ×100 over consecutive pairs, both directions (module docstring).

    depth, gt (T, H, W); K (T, 3, 3); poses (T, 4, 4) camera-to-world; moving (T, H, W) or None.
    Pairs are processed ``chunk`` at a time (memory ~ chunk · H · W · 60 bytes). NaN when no pair counts.
    """
    return tae_from_pairs(*tae_pairs(depth, K, poses, gt, moving, chunk))


def _vda_disparity(depth: torch.Tensor) -> torch.Tensor:
    return torch.where(depth > 0, 1 / depth.double().clamp_min(1e-12), 0.0).clamp_min(1e-3)


def vda_fit_sums(depth: torch.Tensor, gt: torch.Tensor, max_depth: float = 10.0) -> torch.Tensor:
    """The least-squares sums (Σx², Σx, n, Σxy, Σy) of :func:`vda_align`'s fit over (T, H, W); they add up
    over spans of a clip."""
    fit = (depth > 0) & (gt > 1e-3) & (gt < max_depth)
    x, y = _vda_disparity(depth)[fit], 1 / (gt[fit].double() + 1e-8)
    return torch.stack([(x * x).sum(), x.sum(), x.new_tensor(x.numel()), (x * y).sum(), y.sum()])


def vda_scale_shift(sums: torch.Tensor) -> tuple[float, float]:
    """The disparity scale and shift (s, b) solving :func:`vda_fit_sums`' normal equations (minimum norm,
    like numpy's lstsq, so a rank-deficient clip such as a constant prediction is handled)."""
    xx, x, n, xy, y = sums
    if n == 0:
        raise ValueError("vda_align: no pixel with 1e-3 < GT < max_depth and a valid prediction")
    gram = torch.stack([torch.stack([xx, x]), torch.stack([x, n])])
    s, b = torch.linalg.lstsq(gram, torch.stack([xy, y])[:, None], rcond=1e-12, driver="gelsd").solution[:, 0]
    return float(s), float(b)


def vda_apply(depth: torch.Tensor, scale_shift: tuple[float, float], max_depth: float = 10.0) -> torch.Tensor:
    """Depth aligned by a disparity scale and shift, clipped to [1e-3, max_depth]; invalid pixels stay 0."""
    s, b = scale_shift
    out = (1 / (s * _vda_disparity(depth) + b).clamp_min(1e-3)).clamp(1e-3, max_depth)
    return torch.where(depth > 0, out, 0.0)


def vda_align(depth: torch.Tensor, gt: torch.Tensor, max_depth: float = 10.0) -> torch.Tensor:
    """Video Depth Anything's alignment: one least-squares scale and shift of disparity over the clip.

    Prediction disparity max(1/D, 1e-3) is fitted to 1/(GT + 1e-8) where 1e-3 < GT < max_depth (and D > 0),
    clipped at 1e-3, turned back into depth and clipped to [1e-3, max_depth]. Returns float64 depth (T, H, W);
    pixels with D ≤ 0 (this project's "invalid") stay 0.
    """
    return vda_apply(depth, vda_scale_shift(vda_fit_sums(depth, gt, max_depth)), max_depth)


def splat_last_write(z: torch.Tensor, uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scatter values z (P, N) to the rounded pixel positions uv (P, 2, N) of P maps (P, H, W) with NO
    z-buffer: where several land on one pixel the last in source order (raster order) wins. Points with a
    non-finite position or outside the image are dropped; pixels nobody lands on are 0."""
    p, n = z.shape
    ok = torch.isfinite(uv).all(1) & torch.isfinite(z)
    u = torch.where(ok, uv[:, 0], -1.0).round().long()
    v = torch.where(ok, uv[:, 1], -1.0).round().long()
    ok &= (u >= 0) & (u < width) & (v >= 0) & (v < height)
    base = torch.arange(p)[:, None]
    target = v * width + u + base * (height * width)
    source = torch.arange(n).expand(p, n) + base * n  # global index, increasing in raster order
    last = scatter_kept(source, target, ok, p * height * width, "amax", -1)
    out = torch.where(last >= 0, z.flatten()[last.clamp_min(0)], 0.0)
    return out.reshape(p, height, width)


def tae_vda_pair_sum(aligned: torch.Tensor, K: torch.Tensor, poses: torch.Tensor, chunk: int = 8) -> float:
    """Σ over consecutive pairs of (T, H, W) VDA-aligned depth, both directions, of the pair's mean error
    (:func:`tae_vda`); an empty pair adds 0. Sums of spans sharing one frame add up to the clip's."""
    frames, h, w = aligned.shape
    total = 0.0
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")[::-1]).double()
    homog = torch.cat([grid, torch.ones(1, h, w, dtype=torch.float64)]).reshape(3, -1)
    for pairs in frame_pairs(frames).split(chunk) if frames >= 2 else ():
        a, b = pairs[:, 0], pairs[:, 1]
        T = relative_pose(poses[a], poses[b])
        pts = torch.linalg.inv(K[a].double()) @ homog * aligned[a].flatten(1)[:, None]  # (P, 3, N)
        pts = T[:, :3, :3] @ pts + T[:, :3, 3:]
        uvw = K[b].double() @ pts
        uv = uvw[:, :2] / uvw[:, 2:]  # z = 0 gives inf/nan: dropped by the splat
        src_ok = (aligned[a] > 0).flatten(1)
        z = splat_last_write(torch.where(src_ok, pts[:, 2], torch.nan), uv, h, w)
        ok = (z > 0) & (aligned[b] > 0)
        d_b = torch.where(ok, aligned[b], 1.0)
        err = torch.where(ok, (d_b - z).abs() / d_b, 0.0).flatten(1).sum(1) / ok.flatten(1).sum(1).clamp_min(1)
        total += float(err.sum())
    return total


def tae_vda(
    depth: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    max_depth: float = 10.0,
    chunk: int = 8,
) -> float:
    """TAE ×100 by Video Depth Anything's protocol (module docstring): align with :func:`vda_align`, then
    for each consecutive pair and both directions project with inv(P_dst)·P_src, round, scatter with the
    last write winning (:func:`splat_last_write`), error = mean |D_dst − z| / D_dst where z > 0 and
    D_dst > 0; sum / (2(N − 1)), an empty pair adds 0.

    max_depth: VDA uses a per-dataset maximum; 10 m is theirs for ScanNet and suits indoor scenes (use
    80 m for driving scenes such as KITTI). Float64 throughout. Differences from the published script,
    none of which changes a result on valid predictions: K_src back-projects and K_dst projects (VDA
    uses K_src for both; identical when K is constant), and pixels with D ≤ 0 (this project's invalid
    marker, never produced by VDA's models) are neither sources nor targets.
    """
    frames = depth.shape[0]
    if frames < 2:
        return float("nan")
    return 100 * tae_vda_pair_sum(vda_align(depth, gt, max_depth), K, poses, chunk) / (2 * (frames - 1))


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
    """The depth-independent part of :func:`opw_metric` for the pair (t − 1, t): the GT flow target x' of each
    pixel (2, H, W) and whether it lies inside frame t − 1, the photometric weight map w (H, W), the rays
    K_{t−1}⁻¹[x', 1] (3, H, W) and the pose from camera t − 1 to camera t (1, 4, 4)."""

    uv: torch.Tensor
    inside: torch.Tensor
    weight: torch.Tensor
    rays: torch.Tensor
    prev_to_t: torch.Tensor


def opw_geometry(
    rgb: torch.Tensor, K: torch.Tensor, poses: torch.Tensor, gt: torch.Tensor, weight: float = 50.0
) -> list[OpwPair]:
    """:class:`OpwPair` of every pair (t − 1, t) of the frames given: the same for every method scored on them."""
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
    depth: torch.Tensor,
    rgb: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    moving: torch.Tensor | None = None,
    weight: float = 50.0,
    geometry: list[OpwPair] | None = None,
) -> list[float]:
    """:func:`opw_metric`'s error of each pair (t − 1, t) that has a counted pixel; ``geometry``: the clip's
    :func:`opw_geometry` when several methods are scored on the same frames (None: computed here)."""
    errs = []
    for t, pair in enumerate(opw_geometry(rgb, K, poses, gt, weight) if geometry is None else geometry, 1):
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


def opw_metric(
    depth: torch.Tensor,
    rgb: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    moving: torch.Tensor | None = None,
    weight: float = 50.0,
) -> float:
    """Metric-space OPW: photometrically weighted relative depth error along GT flow (motion compensated).

    depth, gt (T, H, W); rgb (T, 3, H, W) in [0, 1]; K (T, 3, 3); poses (T, 4, 4) camera-to-world.
    """
    errs = opw_metric_pairs(depth, rgb, K, poses, gt, moving, weight)
    return float(np.mean(errs)) if errs else float("nan")


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
    pos = grid + flow
    norm = torch.stack([2 * pos[:, 0] / max(w - 1, 1) - 1, 2 * pos[:, 1] / max(h - 1, 1) - 1], -1)
    norm = torch.nan_to_num(norm, nan=-3.0, posinf=-3.0, neginf=-3.0)  # far outside → zero padding
    return F.grid_sample(img.to(flow.dtype), norm, mode="bilinear", padding_mode="zeros", align_corners=True)


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


def opw_nvds(
    depth: torch.Tensor,
    rgb: torch.Tensor,
    K: torch.Tensor,
    poses: torch.Tensor,
    gt: torch.Tensor,
    flow: torch.Tensor | None = None,
    alpha: float = 50.0,
    chunk: int = 8,
    weights: torch.Tensor | None = None,
) -> float:
    """OPW as in NVDS's evaluation code: Σ_{t≥1} 10 · mean_x[Σ_c exp(−α(I_t − Ĩ_{t−1})²) · |n(D̃_{t−1}) − n(D_t)|] / T.

    D = 1/depth (0 where depth ≤ 0) is disparity; ~ is backward warping of frame t−1 into frame t with the
    flow t → t−1 (bilinear, zero padding); n(·) (:func:`_nvds_normalise`) is applied to the *warped*
    previous map and to D_t, each over the whole image (zero-padded and invalid pixels included, as NVDS
    normalises with an all-ones mask); the mean runs over all pixels. T is the number of frames (NVDS
    divides the sum over T − 1 pairs by ``len(frames)``).

    depth, gt (T, H, W); rgb (T, 3, H, W), uint8 or float in [0, 1]: it is put on NVDS's 0–255 scale.
    With 0–255 values, exp(−50·ΔI²) is ~0 unless the colours agree within ~0.3 levels, so in practice
    only pixels whose warped colour is (almost) identical count — faithful to NVDS, and the reason its
    absolute values are small. flow: (T − 1, 2, H, W) flow t → t−1 in pixels for t = 1..T−1; None
    computes it from GT depth, K and poses (static scene, :func:`flow_to_previous`). Scale-free: a
    positive per-frame scale of depth (and, where the flow stays inside the image, any per-frame
    positive affine change of disparity) leaves it unchanged. Float64; ``chunk`` pairs at a time.
    weights: :func:`nvds_weights` of these frames and this flow (None: computed here).
    """
    frames = depth.shape[0]
    if frames < 2:
        return float("nan")
    disp = torch.where(depth > 0, 1 / depth.double().clamp_min(1e-12), 0.0)
    img = _nvds_image(rgb) if weights is None else None
    total = 0.0
    for t in torch.arange(1, frames).split(chunk):
        f = (
            flow[t - 1].double()
            if flow is not None
            else flow_to_previous(gt[t], K[t], K[t - 1], poses[t], poses[t - 1])
        )
        warped_d = _warp_back(disp[t - 1][:, None], f)[:, 0]
        weight = _nvds_weight(img, t, f, alpha) if weights is None else weights[t - 1]
        diff = (_nvds_normalise(warped_d) - _nvds_normalise(disp[t])).abs()
        total += float((10 * (weight * diff).flatten(1).mean(1)).sum())
    return total / frames


def scale_ratios(depth: torch.Tensor, gt: torch.Tensor, moving: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame global scale (T,): median of D/G over pixels valid in both and not on moving objects."""
    out = []
    for t in range(depth.shape[0]):
        ok = (depth[t] > 0) & (gt[t] > 0)
        if moving is not None:
            ok &= ~moving[t].bool()
        out.append((depth[t][ok].double() / gt[t][ok].double()).median() if ok.any() else torch.tensor(float("nan")))
    return torch.stack(out).double()


def disparity_jitter(depth: torch.Tensor, fx: torch.Tensor, baseline: float, mask: torch.Tensor) -> torch.Tensor:
    """Per frame pair (T−1,): mean |disp_t − disp_{t−1}| in pixels over the (H, W) mask."""
    disp = fx.reshape(-1, 1, 1).double() * baseline / depth.double().clamp_min(_EPS)
    if not mask.any() or depth.shape[0] < 2:
        return torch.zeros(0, dtype=torch.float64)
    return (disp[1:] - disp[:-1]).abs()[:, mask].mean(1)


STRATA = ("low", "medium", "high")  # teacher-confidence terciles


def confidence_terciles(hist: torch.Tensor) -> tuple[float, float]:
    """Tercile edges of c(x) from its histogram over [0, 1] (a clip's, summed span by span): the upper edge of
    the bin holding each tercile, so the quantiles are exact to one bin."""
    cdf = hist.double().cumsum(0) / hist.sum().clamp_min(1)
    bins = hist.numel()
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    return tuple(float(x) / bins for x in (torch.searchsorted(cdf, q) + 1).clamp_max(bins))


def _strata(conf: torch.Tensor, edges: tuple[float, float]) -> list[torch.Tensor]:
    c = conf.double()
    return [c <= edges[0], (c > edges[0]) & (c <= edges[1]), c > edges[1]]


def strata_sums(
    pred: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor, conf: torch.Tensor, edges: tuple[float, float]
) -> torch.Tensor:
    """Per teacher-confidence tercile (:data:`STRATA`) of (T, H, W): [pixels, Σ |D − G| / G, Σ (D − G)²,
    Σ |D − teacher|] over pixels valid in GT and prediction; (3, 4) float64 sums that add up over spans."""
    valid = (gt > 0) & (pred > 0)
    rows = []
    for sel in _strata(conf, edges):
        sel = sel & valid
        d, g = pred[sel].double(), gt[sel].double()
        rows.append(
            torch.stack(
                [sel.sum().double(), ((d - g).abs() / g).sum(), (d - g).square().sum(), (d - teacher[sel]).abs().sum()]
            )
        )
    return torch.stack(rows)


def strata_table(sums: torch.Tensor) -> dict[str, dict[str, float]]:
    """:func:`strata_sums` totals as share, AbsRel, RMSE and mean |ΔD| per tercile (NaN where a tercile is empty)."""
    n = sums[:, 0]
    total = n.sum().clamp_min(1)
    out = {}
    for name, (count, absrel, sq, delta) in zip(STRATA, sums, strict=True):
        k = count if count > 0 else torch.tensor(float("nan"), dtype=torch.float64)
        out[name] = {
            "share": float(count / total),
            "absrel": float(absrel / k),
            "rmse": float((sq / k).sqrt()),
            "mean_abs_delta_m": float(delta / k),
        }
    return out


def still_temporal_var(
    segment: torch.Tensor, static: torch.Tensor, conf: torch.Tensor, edges: tuple[float, float]
) -> dict[str, float]:
    """Per tercile of the pixel's mean c(x) over the still segment (T, H, W): the mean over static pixels of
    the temporal variance of depth relative to its squared temporal mean (NaN where a tercile has none)."""
    seg = segment.double()
    rel_var = seg.var(0) / seg.mean(0).clamp_min(_EPS).square()
    out = {}
    for name, sel in zip(STRATA, _strata(conf.double().mean(0), edges), strict=True):
        px = static & sel
        out[name] = float(rel_var[px].mean()) if px.any() else float("nan")
    return out


def motion_sums(pred: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """[pixels, Σ |D − G| / G, Σ |D − teacher|] on moving-object pixels (row 0) and on the static scene (row 1),
    over pixels valid in GT and prediction; (2, 3) float64 sums that add up over spans."""
    rows = []
    for sel in (moving, ~moving):
        ok = sel & (gt > 0) & (pred > 0)
        d, g = pred[ok].double(), gt[ok].double()
        rows.append(torch.stack([ok.sum().double(), ((d - g).abs() / g).sum(), (d - teacher[ok]).abs().sum()]))
    return torch.stack(rows)


def window_medians(depth: torch.Tensor, moving: torch.Tensor | None, length: int) -> list[float]:
    """Median depth over valid static-scene pixels per window of ``length`` frames of (T, H, W) (the drift curve)."""
    ok = depth > 0 if moving is None else (depth > 0) & ~moving
    return [float(depth[t : t + length][ok[t : t + length]].median()) for t in range(0, depth.shape[0], length)]

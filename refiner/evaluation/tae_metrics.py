"""Temporal alignment error (TAE) of depth between consecutive frames, two ways. Pure functions on tensors;
conventions as in :mod:`refiner.evaluation.depth_metrics`.

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
"""

from __future__ import annotations

import torch

from refiner.geometry.camera import project, relative_pose, transform_points, unproject
from refiner.geometry.scatter import scatter_kept


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

    The parts of the masked, z-buffered metric TAE (module docstring; :func:`tae_from_pairs` gives it), so that a
    clip can be scored span by span (spans sharing one frame). depth, gt (T, H, W); K (T, 3, 3); poses (T, 4, 4)
    camera-to-world; moving (T, H, W) or None. Pairs are processed ``chunk`` at a time (memory ~ chunk · H · W · 60
    bytes).
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

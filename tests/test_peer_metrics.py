"""Peer protocols (VDA's TAE, NVDS's OPW), the fast masked TAE against a per-pair reference, and T-SCIN."""

import math
import socket

import numpy as np
import pytest
import torch

from refiner.evaluation.opw_metrics import flow_to_previous, gt_flow, nvds_weights, opw_nvds
from refiner.evaluation.perceptual import ALEXNET_FILE, load_lpips, lpips_random_backbone, t_scin
from refiner.evaluation.tae_metrics import splat_last_write, tae_from_pairs, tae_pairs, tae_vda, vda_align
from refiner.geometry.camera import project, relative_pose, transform_points, unproject


def tae(*args, **kwargs) -> float:
    """The masked metric TAE of a whole clip, from its pairs."""
    return tae_from_pairs(*tae_pairs(*args, **kwargs))


def nvds(depth, rgb, K, poses, gt, flow=None) -> float:
    """NVDS's OPW of a whole clip with the GT flow (or ``flow``) and its photometric weights."""
    flow = gt_flow(gt, K, poses) if flow is None else flow
    return opw_nvds(depth, flow, nvds_weights(rgb, flow))


def _pose(tx=0.0, ty=0.0, tz=0.0, yaw=0.0):
    p = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    p[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    p[:3, 3] = torch.tensor([tx, ty, tz], dtype=torch.float64)
    return p


# ---- the masked, z-buffered TAE: the old per-pair loop, kept here as the reference --------------------------


def _reproject_reference(depth_i, K_i, K_j, T_ij, valid_i):
    h, w = depth_i.shape
    pts = transform_points(T_ij[None], unproject(depth_i[None].float(), K_i[None]))
    uv, z = project(pts, K_j[None].float())
    u, v = uv[0, 0].round().long().flatten(), uv[0, 1].round().long().flatten()
    z = z[0].flatten()
    keep = valid_i.flatten() & (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    target = v[keep] * w + u[keep]
    zbuf = torch.full((h * w,), float("inf"), dtype=torch.float64)
    zbuf.scatter_reduce_(0, target, z[keep].double(), reduce="amin")
    hit = torch.isfinite(zbuf)
    return torch.where(hit, zbuf, 0.0).reshape(h, w), hit.reshape(h, w)


def _tae_reference(depth, K, poses, gt, moving=None):
    errs = []
    static = ~moving.bool() if moving is not None else torch.ones_like(gt, dtype=torch.bool)
    for i in range(depth.shape[0] - 1):
        for a, b in ((i, i + 1), (i + 1, i)):
            T = relative_pose(poses[a][None], poses[b][None])[0]
            src_ok = (depth[a] > 0) & (gt[a] > 0) & static[a]
            z, hit = _reproject_reference(depth[a], K[a], K[b], T, src_ok)
            ok = hit & (depth[b] > 0) & (gt[b] > 0) & static[b]
            if ok.any():
                errs.append(float(((depth[b][ok].double() - z[ok]).abs() / depth[b][ok].double()).mean()))
    return 100 * float(np.mean(errs)) if errs else float("nan")


def _random_scene(frames=6, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]], dtype=torch.float64).repeat(frames, 1, 1)
    K[:, 0, 0] += torch.rand(frames, generator=g, dtype=torch.float64)  # per-frame intrinsics differ a little
    poses = torch.stack([_pose(0.05 * t, 0.01 * t, 0.02 * t, 0.02 * t) for t in range(frames)])
    gt = 1.5 + 2 * torch.rand(frames, h, w, generator=g)
    gt[:, :2] = 0  # invalid GT rows
    depth = gt * (1 + 0.03 * torch.randn(frames, 1, 1, generator=g)) + 0.05 * torch.rand(frames, h, w, generator=g)
    depth[:, :, -1] = 0  # invalid prediction column
    moving = torch.zeros(frames, h, w, dtype=torch.bool)
    moving[:, 8:14, 10:18] = True
    return depth, K, poses, gt, moving


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_fast_tae_equals_the_per_pair_reference(chunk):
    depth, K, poses, gt, moving = _random_scene()
    ref = _tae_reference(depth, K, poses, gt, moving)
    assert ref > 0
    assert tae(depth, K, poses, gt, moving, chunk=chunk) == pytest.approx(ref, rel=1e-12)
    assert tae(depth, K, poses, gt, None, chunk=chunk) == pytest.approx(_tae_reference(depth, K, poses, gt), rel=1e-12)


def test_fast_tae_skips_empty_pairs_like_the_reference():
    depth, K, poses, gt, moving = _random_scene(frames=4)
    poses[3] = _pose(100.0)  # frame 3 sees nothing of frame 2: that pair is skipped, not counted as 0
    assert tae(depth, K, poses, gt, moving) == pytest.approx(_tae_reference(depth, K, poses, gt, moving), rel=1e-12)
    assert math.isnan(tae(depth[:1], K[:1], poses[:1], gt[:1]))


# ---- VDA's TAE on two fronto-parallel planes and a sideways camera: closed forms ---------------------------
# Rows 0-1 see a plane at z0 = 2 m, rows 2-3 one at z1 = 4 m; fx = 10 and a 0.4 m step sideways shift the
# rows by exactly s0 = 2 and s1 = 1 pixels, with z unchanged: no occlusion, nothing rounds.
W, FX, STEP, Z0, Z1 = 16, 10.0, 0.4, 2.0, 4.0


def _planes(frames):
    K = torch.tensor([[FX, 0, 7.5], [0, FX, 1.5], [0, 0, 1]], dtype=torch.float64).repeat(frames, 1, 1)
    poses = torch.stack([_pose(STEP * t) for t in range(frames)])
    gt = torch.full((frames, 4, W), Z0)
    gt[:, 2:] = Z1
    return K, poses, gt


def test_tae_vda_is_zero_for_gt_and_for_a_scaled_gt():
    K, poses, gt = _planes(3)
    assert tae_vda(gt, K, poses, gt) == pytest.approx(0.0, abs=1e-9)
    assert tae_vda(1.3 * gt, K, poses, gt) == pytest.approx(0.0, abs=1e-9)  # one scale: removed by alignment


def test_tae_vda_with_per_frame_disparity_offsets_matches_the_hand_computation():
    offsets = [0.0, 0.05, -0.02, -0.02]
    K, poses, gt = _planes(4)
    poses[3] = _pose(100.0)  # the last pair sees nothing: it adds 0 but still counts in 2(N − 1)
    g = 1 / gt.double()
    o = torch.tensor(offsets, dtype=torch.float64)[:, None, None].expand_as(g)
    pred = 1 / (g + o)
    # least squares of y = g on x = g + o: cov(g, o) = 0 (every frame holds the same g), so
    s = g.var(unbiased=False) / (g.var(unbiased=False) + o.var(unbiased=False))
    b = g.mean() - s * (g + o).mean()
    D = {(t, c): 1 / float(s * (gc + offsets[t]) + b) for t in range(4) for c, gc in ((0, 1 / Z0), (1, 1 / Z1))}
    n = {0: 2 * (W - 2), 1: 2 * (W - 1)}  # counted pixels: 2 rows per plane, minus the shifted-out columns
    total = 0.0
    for i, j in ((0, 1), (1, 0), (1, 2), (2, 1)):  # z = D_i at the landing pixel (pure translation)
        total += sum(n[c] * abs(D[j, c] - D[i, c]) / D[j, c] for c in (0, 1)) / (n[0] + n[1])
    expected = 100 * total / (2 * 3)
    assert expected > 0.5
    assert tae_vda(pred.float(), K, poses, gt) == pytest.approx(expected, rel=1e-5)


def test_tae_vda_clips_at_max_depth_and_scores_pixels_without_gt():
    K, poses, gt = _planes(2)
    gt_holes = gt.clone()
    gt_holes[:, :, :3] = 0  # no GT validity mask: holes in GT change neither the fit here nor the count
    assert tae_vda(gt, K, poses, gt_holes) == pytest.approx(0.0, abs=1e-9)
    # with max_depth below the far plane, both planes fit on the near one only, the far one is clipped to 3 m
    assert tae_vda(gt, K, poses, gt, max_depth=3.0) == pytest.approx(0.0, abs=1e-9)


def _tae_vda_reference(depth, K, poses, gt, max_depth=10.0):
    """Per pair, per pixel, in raster order: a plain loop over VDA's steps (after the same alignment)."""
    d = vda_align(depth, gt, max_depth).numpy()
    frames, h, w = d.shape
    total = 0.0
    for i in range(frames - 1):
        for a, b in ((i, i + 1), (i + 1, i)):
            T = (torch.linalg.inv(poses[b]) @ poses[a]).numpy()
            Ka, Kb = K[a].numpy(), K[b].numpy()
            proj = np.zeros((h, w))
            for v in range(h):
                for u in range(w):
                    if d[a, v, u] <= 0:
                        continue
                    p = T[:3, :3] @ (np.linalg.inv(Ka) @ np.array([u, v, 1.0]) * d[a, v, u]) + T[:3, 3]
                    x = Kb @ p
                    ur, vr = round(x[0] / x[2]), round(x[1] / x[2])
                    if 0 <= ur < w and 0 <= vr < h:
                        proj[vr, ur] = p[2]  # no z-buffer: the last write wins
            ok = (proj > 0) & (d[b] > 0)
            total += float((np.abs(d[b][ok] - proj[ok]) / d[b][ok]).mean()) if ok.any() else 0.0
    return 100 * total / (2 * (frames - 1))


def test_tae_vda_equals_a_per_pixel_loop_with_collisions_and_occlusions():
    depth, K, poses, gt, _ = _random_scene(frames=4, h=10, w=12, seed=3)
    depth[:, 3:6, 4:8] *= 0.4  # a near block: its edges collide with the background when the camera moves
    poses[2] = _pose(0.3, 0.0, 0.1, 0.15)  # a big move: many collisions
    ref = _tae_vda_reference(depth, K, poses, gt)
    assert ref > 1
    assert tae_vda(depth, K, poses, gt, chunk=4) == pytest.approx(ref, rel=1e-9)
    assert tae_vda(depth, K, poses, gt, chunk=1) == pytest.approx(ref, rel=1e-9)


def test_splat_last_write_keeps_the_last_source_in_raster_order():
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    uv = torch.tensor([[[0.0, 0.4, 9.0, float("nan")], [0.0, -0.3, 0.0, 0.0]]])  # 0, 1 → (0, 0); 2 off; 3 NaN
    out = splat_last_write(z, uv, 2, 2)
    assert out.tolist() == [[[2.0, 0.0], [0.0, 0.0]]]  # 2 (later) wins over 1 although it is farther


# ---- NVDS's OPW ---------------------------------------------------------------------------------------------


def _opw_scene(frames=4, h=20, w=24, still=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[25.0, 0, 11.5], [0, 25.0, 9.5], [0, 0, 1]], dtype=torch.float64).repeat(frames, 1, 1)
    poses = torch.stack([_pose(0.0 if still else 0.03 * t, 0, 0, 0.0 if still else 0.01 * t) for t in range(frames)])
    gt = 2 + torch.rand(frames, h, w, generator=g)
    depth = gt * (1 + 0.1 * torch.rand(frames, h, w, generator=g))  # inconsistent per pixel
    rgb = torch.full((frames, 3, h, w), 0.5)  # one colour: every in-bounds pixel gets weight 3
    return depth, rgb, K, poses, gt


def test_opw_nvds_is_invariant_to_a_per_frame_depth_scale():
    depth, rgb, K, poses, gt = _opw_scene()
    base = nvds(depth, rgb, K, poses, gt)
    assert base > 0.1
    k = torch.tensor([1.0, 1.7, 0.4, 3.0])[:, None, None]
    assert nvds(depth * k, rgb, K, poses, gt) == pytest.approx(base, abs=1e-6)


def test_opw_nvds_is_invariant_to_a_per_frame_affine_disparity_change_on_a_still_camera():
    depth, rgb, K, poses, gt = _opw_scene(still=True)
    base = nvds(depth, rgb, K, poses, gt)
    a, b = torch.tensor([1.0, 2.5, 0.3, 1.2])[:, None, None], torch.tensor([0.0, 0.2, 1.0, 0.05])[:, None, None]
    affine = 1 / (a / depth + b)
    assert base > 0.1 and nvds(affine, rgb, K, poses, gt) == pytest.approx(base, abs=1e-6)


def test_opw_nvds_zero_for_gt_on_a_still_camera_and_positive_with_flicker():
    _, rgb, K, poses, gt = _opw_scene(still=True)
    gt = gt[:1].expand_as(gt).clone()  # static scene, still camera
    assert nvds(gt, rgb, K, poses, gt) == pytest.approx(0.0, abs=1e-9)
    noisy = gt.clone()
    noisy[2] *= 1 + 0.2 * torch.rand(gt.shape[1:], generator=torch.Generator().manual_seed(1))
    assert nvds(noisy, rgb, K, poses, gt) > 0.1


def test_opw_nvds_hand_case_divides_by_the_number_of_frames():
    # one row of 4 pixels: disparity [1, 2, 3, 4] then [1, 2, 3, 5]; n(·) = [-1, 0, 1, 2] and [-.8, 0, .8, 2.4]
    # (lower median 2), mean |Δn| = 0.2, weight 3 (same colour), 10 · 3 · 0.2 = 6 for the pair, / 2 frames = 3
    disp = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0, 5.0]]], dtype=torch.float64)
    K = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    poses = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    rgb = torch.full((2, 3, 1, 4), 100, dtype=torch.uint8)
    assert nvds(1 / disp, rgb, K, poses, 1 / disp) == pytest.approx(3.0, rel=1e-9)
    assert nvds(1 / disp, rgb, K, poses, 1 / disp, flow=torch.zeros(1, 2, 1, 4)) == pytest.approx(3.0, rel=1e-9)


def test_gt_flow_is_each_frames_flow_to_the_previous_and_colour_weights_are_on_the_0_255_scale():
    depth, rgb, K, poses, gt = _opw_scene()
    flow = gt_flow(gt, K, poses)
    assert flow.shape == (depth.shape[0] - 1, 2, *depth.shape[1:])
    torch.testing.assert_close(flow[2], flow_to_previous(gt[3:4], K[3:4], K[2:3], poses[3:4], poses[2:3])[0])
    # on a still camera, a colour change of 1/255 per channel already gives weights 3·exp(-50) ≈ 0
    depth, rgb, K, poses, gt = _opw_scene(still=True)
    assert nvds(depth, rgb, K, poses, gt) > 0.1
    rgb[1::2] += 1 / 255
    assert nvds(depth, rgb, K, poses, gt) < 1e-12


def test_flow_to_previous_of_a_sideways_step_is_a_uniform_shift():
    gt = torch.full((1, 6, 8), 2.0)
    K = torch.tensor([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]], dtype=torch.float64)[None]
    f = flow_to_previous(gt, K, K, _pose(0.4)[None], _pose(0.0)[None])  # camera moved +0.4 m: scene was 2 px right
    torch.testing.assert_close(f[0, 0], torch.full((6, 8), 2.0, dtype=torch.float64))
    torch.testing.assert_close(f[0, 1], torch.zeros(6, 8, dtype=torch.float64))
    gt[0, 0, 0] = 0
    assert torch.isnan(flow_to_previous(gt, K, K, _pose(0.4)[None], _pose(0.0)[None])[0, :, 0, 0]).all()


# ---- T-SCIN --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_lpips():
    return lpips_random_backbone()


def _depth_clip(frames=5, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = 2 + torch.rand(1, size, size, generator=g)
    shift = torch.arange(frames)[:, None, None] * 0.01 * torch.linspace(0, 1, size)[None, None, :]
    return base + shift  # a slowly changing scene


def test_t_scin_zero_for_gt_and_positive_for_flicker(random_lpips):
    gt = _depth_clip()
    assert t_scin(gt, gt, random_lpips) == pytest.approx(0.0, abs=1e-7)
    flicker = gt * (1 + 0.05 * torch.tensor([1.0, -1, 1, -1, 1]))[:, None, None]
    score = t_scin(flicker, gt, random_lpips)
    assert score > 1e-3
    assert t_scin(flicker, gt, random_lpips, batch=2) == pytest.approx(score, rel=1e-5)  # batching changes nothing
    assert t_scin(gt * 1.2, gt, random_lpips) == pytest.approx(0.0, abs=1e-6)  # a constant scale is no flicker


def test_t_scin_rejects_small_frames_and_a_missing_model(random_lpips):
    with pytest.raises(ValueError, match="32"):
        t_scin(torch.ones(3, 16, 16), torch.ones(3, 16, 16), random_lpips)
    with pytest.raises(ValueError, match="load_lpips"):
        t_scin(torch.ones(3, 64, 64), torch.ones(3, 64, 64), None)


def test_load_lpips_without_weights_says_which_file_it_looked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model, why = load_lpips()
    assert model is None and str(tmp_path / "hub" / "checkpoints" / ALEXNET_FILE) in why
    model, why = load_lpips(str(tmp_path / "elsewhere.pth"))
    assert model is None and "elsewhere.pth" in why and ALEXNET_FILE in why


def test_load_lpips_loads_a_local_backbone_without_downloading(tmp_path, monkeypatch):
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS tried to download something")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(socket.socket, "connect", no_download)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(state, tmp_path / ALEXNET_FILE)
    model, why = load_lpips(str(tmp_path / ALEXNET_FILE))
    assert model is not None and str(tmp_path) in why
    torch.testing.assert_close(model.net.slice1[0].weight, state["features.0.weight"])
    torch.testing.assert_close(getattr(model.net.slice5, "10").bias, state["features.10.bias"])
    torch.save({"not": torch.zeros(1)}, tmp_path / "broken.pth")
    model, why = load_lpips(str(tmp_path / "broken.pth"))
    assert model is None and "could not load" in why


def test_opw_nvds_is_the_same_figure_whatever_the_chunks():
    """Evaluate makes NVDS's depth-independent weights once per span for every method, in chunks of pairs: the
    chunking changes no bit of the weights or the figure."""
    depth, _, K, poses, gt = _opw_scene()
    g = torch.Generator().manual_seed(2)
    rgb = (0.5 + 0.002 * torch.rand((depth.shape[0], 3, *depth.shape[1:]), generator=g)).double()
    flow = gt_flow(gt, K, poses)
    weights = nvds_weights(rgb, flow, chunk=2)
    assert torch.equal(weights, nvds_weights(rgb, flow))
    assert weights.shape == (depth.shape[0] - 1, *depth.shape[1:])
    inside = (weights > 0.01) & (weights < 2.99)  # colours differ a little; 0 where the flow leaves the image
    assert weights.min() >= 0 and weights.max() <= 3 and inside.float().mean() > 0.5
    figure = opw_nvds(depth, flow, weights)
    assert figure > 0.1 and opw_nvds(depth, flow, weights, chunk=3) == figure

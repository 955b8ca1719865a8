"""T-SCIN: LPIPS on temporal gradients of depth, and a download-free way to build LPIPS.

Definition (this project's; the research plan only says "LPIPS on temporal gradients"):

    g_t = log D_t − log D_{t−1}                                   (per pixel, t = 1..T−1)
    m(g) = tanh(g / scale), repeated on 3 channels                 (an image in [−1, 1], LPIPS's input range)
    T-SCIN = mean_t LPIPS(m(g_t^pred), m(g_t^GT))

- Log depth, not normalised disparity: the refiner must keep *metric* scale, so a per-frame scale jump is
  exactly what should be seen. In log depth it appears as a uniform offset of g_t (and LPIPS sees the
  mismatch with GT's g_t); a per-frame normalised disparity would remove it. Log differences are also
  unitless (relative change per frame) and symmetric in near/far.
- The gradient is not motion compensated: under camera motion GT's own g_t is non-zero (edges move), and
  the prediction should reproduce that structure — flicker and edge wobble are what differ.
- One fixed ``scale`` (default 0.05: a 5% change per frame maps to tanh(1) ≈ 0.76) is shared by prediction
  and GT, so magnitudes are compared, not just patterns; tanh saturates smoothly at depth discontinuities.
- Pixels where prediction or GT is invalid (≤ 0) in either frame get g = 0 in both maps.
- LPIPS needs frames of at least 32×32 (AlexNet's strides). 0 when pred == GT.

LPIPS ships its linear heads inside the ``lpips`` package, but its AlexNet backbone comes from torchvision's
weight download (``alexnet-owt-7be5be79.pth``), which is not reachable here. :func:`load_lpips` therefore
builds LPIPS with a random backbone (``pnet_rand=True``: nothing is downloaded) and loads the backbone
weights from a local file itself; without that file it returns None and says why. The random-backbone
model of :func:`lpips_random_backbone` is for testing the plumbing only — its numbers mean nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# torchvision's AlexNet "features" conv layers → the slices of lpips.pretrained_networks.alexnet
_ALEX_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def _lpips_alex(seed: int = 0) -> torch.nn.Module:
    """lpips.LPIPS(net="alex") with a random backbone (no download) and the shipped linear heads (v0.1).
    The random init is drawn from a forked RNG seeded with ``seed``, so it is reproducible and leaves the
    global RNG alone."""
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated" notices
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    return model.eval()


def lpips_random_backbone(seed: int = 0) -> torch.nn.Module:
    """LPIPS with a random AlexNet backbone and the shipped linear heads; downloads nothing. Tests only."""
    return _lpips_alex(seed)


def default_alexnet_path() -> Path:
    """Where torchvision would cache the AlexNet weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def load_lpips(weights: str | None = None) -> tuple[torch.nn.Module | None, str]:
    """Real LPIPS (AlexNet) from local backbone weights, or (None, why).

    ``weights``: a torchvision AlexNet state dict (``alexnet-owt-7be5be79.pth``); None looks in the torch hub
    cache (:func:`default_alexnet_path`). The backbone is loaded from that file here, so nothing is ever
    downloaded. Returns (model in eval mode, a line saying what was loaded) or (None, a line saying which
    file was looked for and how to provide it).
    """
    path = Path(weights) if weights is not None else default_alexnet_path()
    if not path.is_file():
        return None, (
            f"LPIPS AlexNet backbone weights not found at {path}; copy torchvision's {ALEXNET_FILE} there "
            f"or set evaluate.lpips_weights to its path"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net_state = {
            f"slice{_ALEX_SLICES[i]}.{i}.{kind}": state[f"features.{i}.{kind}"]
            for i in _ALEX_SLICES
            for kind in ("weight", "bias")
        }
        model = _lpips_alex()
        model.net.load_state_dict(net_state, strict=True)
    except (KeyError, RuntimeError, OSError, ValueError) as e:
        return None, f"could not load the LPIPS AlexNet backbone from {path}: {e}"
    return model.eval(), f"LPIPS v0.1 (AlexNet backbone from {path})"


def temporal_gradient_images(depth: torch.Tensor, valid: torch.Tensor, scale: float = 0.05) -> torch.Tensor:
    """(T, H, W) depth → (T−1, 3, H, W) images tanh((log D_t − log D_{t−1}) / scale) in [−1, 1]; 0 where
    ``valid`` (T−1, H, W) is False."""
    log_d = depth.float().clamp_min(1e-6).log()
    g = torch.where(valid, torch.tanh((log_d[1:] - log_d[:-1]) / scale), 0.0)
    return g[:, None].expand(-1, 3, -1, -1)


@torch.no_grad()
def t_scin_pairs(
    pred: torch.Tensor, gt: torch.Tensor, model: torch.nn.Module, batch: int = 8, scale: float = 0.05
) -> torch.Tensor:
    """LPIPS of each pair (t − 1, t) of pred and GT (T, H, W) (:func:`t_scin`), float64 (T − 1,).

    Frame pairs go through ``model`` ``batch`` at a time, on the model's device (memory ~ one batch).
    """
    if model is None:
        raise ValueError("t_scin needs an LPIPS model: see load_lpips() (it says why none is available)")
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"t_scin expects pred and gt of one shape (T, H, W), got {pred.shape} and {gt.shape}")
    if min(pred.shape[-2:]) < 32:
        raise ValueError(f"t_scin needs frames of at least 32×32 for LPIPS's AlexNet, got {tuple(pred.shape[-2:])}")
    device = next(model.parameters()).device
    scores = [torch.zeros(0, dtype=torch.float64)]
    for s in range(1, pred.shape[0], batch):  # pairs (t−1, t) for t in [s, s + batch)
        p, g = pred[s - 1 : s + batch].to(device), gt[s - 1 : s + batch].to(device)
        ok = (p > 0) & (g > 0)
        valid = ok[1:] & ok[:-1]
        d = model(temporal_gradient_images(p, valid, scale), temporal_gradient_images(g, valid, scale))
        scores.append(d.flatten().double().cpu())
    return torch.cat(scores)


def t_scin(pred: torch.Tensor, gt: torch.Tensor, model: torch.nn.Module, batch: int = 8, scale: float = 0.05) -> float:
    """T-SCIN (module docstring): mean LPIPS between the temporal-gradient images of pred and GT (T, H, W);
    NaN for fewer than two frames."""
    pairs = t_scin_pairs(pred, gt, model, batch, scale)
    return float(pairs.mean()) if pairs.numel() else float("nan")

"""Running figures of one method over a clip's spans (:mod:`refiner.evaluation.span_reader`).

Every figure is kept as per-frame values, per-pair values or sums, so its total over the spans equals the
whole-clip metric of the ``*_metrics`` modules while memory stays one span. VDA's TAE needs its per-clip
alignment first: :meth:`Tally.fit` sums the fit on a first pass, :meth:`Tally.add` scores on the second.
"""

from __future__ import annotations

import numpy as np
import torch

from refiner.core.config import EvaluateParams
from refiner.evaluation.depth_metrics import (
    mean_errors,
    motion_sums,
    per_frame_errors,
    scale_ratios,
    strata_sums,
    window_medians,
)
from refiner.evaluation.opw_metrics import gt_flow, nvds_weights, opw_geometry, opw_metric_pairs, opw_nvds
from refiner.evaluation.perceptual import t_scin_pairs
from refiner.evaluation.span_reader import Span
from refiner.evaluation.tae_metrics import (
    tae_from_pairs,
    tae_pairs,
    tae_vda_pair_sum,
    vda_apply,
    vda_fit_sums,
    vda_scale_shift,
)


class Tally:
    """One method's running sums. ``temporal_only``: only TAE and OPW (GT scored against itself, the floor)."""

    def __init__(self, p: EvaluateParams, lpips_model: torch.nn.Module | None = None, temporal_only: bool = False):
        self.p, self.lpips, self.temporal_only = p, lpips_model, temporal_only
        self.errors: list[dict[str, float]] = []  # per frame
        self.scales: list[float] = []  # per frame
        self.tae_sums: list[torch.Tensor] = []  # per pair
        self.tae_counts: list[torch.Tensor] = []
        self.vda_sums = torch.zeros(5, dtype=torch.float64)
        self.vda_total = 0.0
        self.opw: list[float] = []  # per pair
        self.nvds_total = 0.0
        self.t_scin: list[torch.Tensor] = []  # per pair
        self.strata = torch.zeros(3, 4, dtype=torch.float64)
        self.motion = torch.zeros(2, 3, dtype=torch.float64)
        self.medians: list[float] = []  # per window

    def fit(self, depth: torch.Tensor, span: Span) -> None:
        """First pass: add this span's frames to VDA's least-squares fit."""
        if span.gt is not None and span.poses is not None:
            self.vda_sums += vda_fit_sums(depth[span.skip :], span.gt[span.skip :], self.p.tae_max_depth_m)

    def add(self, depth: torch.Tensor, span: Span, edges: tuple[float, float], window: int) -> None:
        """Second pass: score this span (its pairs include the shared first frame; per-frame figures do not)."""
        self._pairs(depth, span)
        if self.temporal_only:
            return
        d = depth[span.skip :]
        moving = None if span.moving is None else span.moving[span.skip :]
        self.medians += window_medians(d, moving, window)
        if span.gt is None:
            return
        gt, teacher = span.gt[span.skip :], span.depths["teacher"][span.skip :]
        self.errors += per_frame_errors(d, gt)
        self.scales += scale_ratios(d, gt, moving).tolist()
        self.strata += strata_sums(d, teacher, gt, span.conf[span.skip :], edges)
        if moving is not None:
            self.motion += motion_sums(d, teacher, gt, moving)

    def _pairs(self, depth: torch.Tensor, span: Span) -> None:
        if span.gt is None:
            return
        if self.lpips is not None and not self.temporal_only:
            self.t_scin.append(t_scin_pairs(depth, span.gt, self.lpips))
        if span.poses is None:
            return
        s, n = tae_pairs(depth, span.K, span.poses, span.gt, span.moving)
        self.tae_sums.append(s)
        self.tae_counts.append(n)
        aligned = vda_apply(depth, vda_scale_shift(self.vda_sums), self.p.tae_max_depth_m)
        self.vda_total += tae_vda_pair_sum(aligned, span.K, span.poses)
        w = self.p.opw_weight
        geometry = span.memo(f"opw_geometry_{w}", lambda: opw_geometry(span.rgb, span.K, span.poses, span.gt, w))
        self.opw += opw_metric_pairs(depth, span.gt, geometry, span.moving)
        if len(depth) > 1:  # NVDS divides its sum over pairs by the frame count: undo it for the span's sum
            flow = span.memo("gt_flow", lambda: gt_flow(span.gt, span.K, span.poses))
            weights = span.memo("nvds_weights", lambda: nvds_weights(span.rgb, flow))
            nvds = opw_nvds(depth, flow, weights)
            self.nvds_total += nvds * len(depth)

    def figures(self, frames: int) -> dict[str, float]:
        """The clip's figures from the sums (the still-segment ones, flicker and jitter, come separately)."""
        m: dict[str, float] = mean_errors(self.errors)
        if frames < 2:
            return m  # every other figure compares frames: a one-frame clip lists them under ``skipped``
        if self.errors:
            m["scale_ratio_std"] = float(torch.tensor(self.scales, dtype=torch.float64).std())
        if self.t_scin:
            pairs = torch.cat(self.t_scin)
            m["t_scin"] = float(pairs.mean()) if pairs.numel() else float("nan")
        if self.tae_sums:
            m["tae"] = tae_from_pairs(torch.cat(self.tae_sums), torch.cat(self.tae_counts))
            m["tae_vda"] = 100 * self.vda_total / (2 * (frames - 1))
            m["opw_metric"] = float(np.mean(self.opw)) if self.opw else float("nan")
            m["opw_nvds"] = self.nvds_total / frames
        return m

    def motion_table(self, pixels: int) -> dict[str, dict[str, float]]:
        """AbsRel and mean |ΔD| on moving-object and static-scene pixels, with each one's share of all pixels."""
        out = {}
        for name, (count, absrel, delta) in zip(("moving", "static"), self.motion, strict=True):
            if count > 0:
                out[name] = {
                    "share": float(count / pixels),
                    "absrel": float(absrel / count),
                    "mean_abs_delta_m": float(delta / count),
                }
        return out

"""The real UniDepthV2 teacher, through the ``unidepth`` package and LOCAL weights.

Set ``teacher.name: unidepth`` and ``teacher.unidepth_weights`` to a folder holding ``config.json``
and ``model.safetensors`` (e.g. the files of ``lpiccinelli/unidepth-v2-vits14``). The ``unidepth``
package is not on the package index: install it from a checkout of the UniDepth repository
(``pip install -e path/to/UniDepth``). UniDepth code and weights are CC BY-NC 4.0.

API facts this adapter relies on: ``UniDepthV2.from_pretrained(dir)``; ``model.resolution_level``
(0–9) set explicitly; ``model.infer(rgb, camera)`` with rgb uint8 (3, H, W) and a
``unidepth.utils.camera.Pinhole(K=...)`` camera — one frame at a time (a batch with a camera
fails), with a CLONE of K (UniDepth edits it in place); outputs ``depth`` (B, 1, H, W) z-depth in
metres, ``confidence`` (B, 1, H, W) which is an UNCERTAINTY (exp of a predicted absolute error in
metres; higher = less certain; converted to c(x) only in :mod:`refiner.teachers.confidence`), and
``intrinsics`` (B, 3, 3), the model's OWN predicted K even when a camera is passed.

So a :class:`~refiner.teachers.base.TeacherFrame` holds ``K_used`` (the K we passed: the camera
the depth was computed with) and ``K_predicted`` (``out["intrinsics"]``, kept for diagnostics).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refiner.teachers.base import TeacherBatch, TeacherContext, TeacherFrame, torch_device

INSTALL_HINT = (
    "install UniDepth from a checkout of its repository (git clone the UniDepth repository, then "
    "`pip install -e UniDepth`), and put the UniDepthV2 weights (config.json + model.safetensors) in the "
    "folder named by teacher.unidepth_weights in params.yaml"
)


class UniDepthTeacher:
    name = "unidepth"
    label = "UniDepthV2: the real single-frame metric depth model (its own package and local weights)"
    batch_size = 1  # UniDepthV2 fails on a batch with a camera

    def __init__(self, ctx: TeacherContext) -> None:
        p = ctx.params
        try:
            models = importlib.import_module("unidepth.models")
            self._camera = importlib.import_module("unidepth.utils.camera")
        except ImportError as e:
            raise RuntimeError(
                f"teacher.name is unidepth but the unidepth package is missing ({e}); {INSTALL_HINT}"
            ) from e
        weights = Path(p.unidepth_weights)
        missing = [f for f in ("config.json", "model.safetensors") if not (weights / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{weights}: UniDepthV2 weights folder lacks {missing}; {INSTALL_HINT}")
        self.device = torch_device(ctx.device)
        self.weights, self.resolution_level = weights, p.unidepth_resolution_level
        self.model = models.UniDepthV2.from_pretrained(str(weights))
        self.model.resolution_level = p.unidepth_resolution_level
        self.model = self.model.to(self.device).eval()

    def identity(self) -> dict[str, Any]:
        """The weights (by content) and the internal resolution."""
        digest = hashlib.sha256((self.weights / "model.safetensors").read_bytes()).hexdigest()
        return {"name": self.name, "weights_sha256": digest, "resolution_level": self.resolution_level}

    def predict(self, batch: TeacherBatch) -> list[TeacherFrame]:
        """Every frame of ``batch``, one model call each (see :attr:`batch_size`)."""
        return [self.predict_frame(rgb, K) for rgb, K in zip(batch.rgb, batch.K, strict=True)]

    @torch.no_grad()
    def predict_frame(self, rgb: np.ndarray, K: np.ndarray) -> TeacherFrame:
        """One frame through UniDepthV2 with the camera prompt K (a clone: UniDepth edits K in place)."""
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(self.device)  # (3, H, W) uint8
        K_prompt = torch.as_tensor(np.asarray(K), dtype=torch.float32)
        camera = self._camera.Pinhole(K=K_prompt.clone().float()[None].to(self.device))  # UniDepth edits K in place
        out = self.model.infer(image, camera)
        depth = out["depth"][0, 0].float().cpu().numpy()
        uncertainty = out["confidence"][0, 0].float().cpu().numpy()
        valid = np.isfinite(depth) & (depth > 0)
        return TeacherFrame(
            depth=np.where(valid, depth, 0.0).astype(np.float32),
            uncertainty=np.where(valid & np.isfinite(uncertainty), uncertainty, 0.0).astype(np.float32),
            K_used=K_prompt.numpy().astype(np.float64),
            K_predicted=out["intrinsics"][0].float().cpu().numpy().astype(np.float64),
        )

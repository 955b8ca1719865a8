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

So a :class:`~refiner.teachers.base.TeacherFrame` holds ``K_prompt`` (the K we passed: the camera
the depth was computed with) and ``K_predicted`` (``out["intrinsics"]``, kept for diagnostics).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from refiner.teachers.base import TeacherFrame

if TYPE_CHECKING:
    from refiner.config import TeacherParams

INSTALL_HINT = (
    "install UniDepth from a checkout of its repository (git clone the UniDepth repository, then "
    "`pip install -e UniDepth`), and put the UniDepthV2 weights (config.json + model.safetensors) in the "
    "folder named by teacher.unidepth_weights in params.yaml"
)


class UniDepthTeacher:
    name = "unidepth"

    def __init__(self, p: TeacherParams, device: str | None = None) -> None:
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
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = models.UniDepthV2.from_pretrained(str(weights))
        self.model.resolution_level = p.unidepth_resolution_level
        self.model = self.model.to(self.device).eval()

    @torch.no_grad()
    def predict(self, t: int, rgb: np.ndarray, K: np.ndarray, gt: np.ndarray | None = None) -> TeacherFrame:
        """Frame ``t`` through UniDepthV2 with the camera prompt K (a clone: UniDepth edits K in place)."""
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
            K_prompt=K_prompt.numpy().astype(np.float64),
            K_predicted=out["intrinsics"][0].float().cpu().numpy().astype(np.float64),
        )

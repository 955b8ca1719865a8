"""Adapters bringing data sets into the canonical clip store that ``decode`` writes.

Every adapter yields :class:`refiner.data.ingest.Frame` objects to :func:`refiner.data.ingest.write_clip_store`, so
all of them share the resize/pad, intrinsics transform, checks and atomic write. :func:`ingest` is the one
entry point; ``kind`` is one of :data:`KINDS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from refiner.core.choices import SOURCE_KINDS
from refiner.data.adapters.hypersim import hypersim_rgb, ingest_hypersim
from refiner.data.adapters.tum import ingest_tum, tum_rgb
from refiner.data.ingest import ingest_video

ADAPTERS: dict[str, Callable[..., int]] = {"video": ingest_video, "tum": ingest_tum, "hypersim": ingest_hypersim}
IMAGE_READERS = {"tum": tum_rgb, "hypersim": hypersim_rgb}  # a data set clip's RGB frames at their own resolution
KINDS = SOURCE_KINDS
assert set(ADAPTERS) == set(SOURCE_KINDS), "refiner.core.choices.SOURCE_KINDS and the adapters disagree"


def options_of(kind: str) -> list[str]:
    """The keyword options an adapter accepts (besides source, out and size)."""
    params = list(inspect.signature(ADAPTERS[kind]).parameters)
    return [p for p in params[1:] if p not in ("out", "size")]


def ingest(kind: str, source: str | Path, out: str | Path, size: int, **options: Any) -> int:
    """Bring ``source`` (a video file or a data set folder) into the clip store ``out``; returns the frame count.

    video: intrinsics (required), stride, gt, progress. tum: stride, intrinsics (override), max_dt, progress.
    hypersim: cam, stride, intrinsics (override), fps, progress. Every kind: ``multiple`` (pass the low-res
    factor: the canonical sides are multiples of it) and ``crop`` (False: the whole frame, short side ``size``,
    aspect ratio kept; True: the S x S centre crop).
    """
    if kind not in ADAPTERS:
        raise ValueError(
            f"unknown source kind {kind!r}; use one of {', '.join(KINDS)} (the clip's kind in params.yaml corpus.clips)"
        )
    allowed = options_of(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"source kind {kind!r} takes no option(s) {unknown}; its options are {allowed}")
    if kind == "video" and options.get("intrinsics") is None:
        raise ValueError(f"{source}: a video needs intrinsics, a JSON/YAML file with fx, fy, cx, cy or hfov_deg")
    return ADAPTERS[kind](source, out=out, size=size, **options)


def source_images(attrs: Mapping[str, Any]) -> Iterator[np.ndarray] | None:
    """A decoded data set clip's RGB frames at their own resolution, read again from its folder (the attributes of
    its decoded store); None for a clip of another kind or a folder no longer there."""
    reader = IMAGE_READERS.get(str(attrs.get("dataset_name")))
    if reader is None or not Path(str(attrs.get("source", ""))).is_dir():
        return None
    return reader(attrs)

"""The canonical grid every clip is decoded onto, and the intrinsics that follow it. NumPy only (the decode
stage imports it without torch); the image resamplers that go with it are in :mod:`refiner.geometry.camera`.

The grid (:func:`canonical_map`) keeps the aspect ratio by default: the short side becomes S and the long side
is RESIZED (not padded) to the multiple of ``multiple`` (the low-res factor) nearest to its aspect-correct
length, so no content is cropped and no pixel is padding; x and y may then scale by slightly different factors
(at most ``multiple / 2`` pixels over the long side), which the intrinsics follow exactly. ``crop=True`` gives
the old S x S centre crop. Pixel (u, v) has its centre at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CanonicalMap:
    """Maps source pixels to the canonical ``height`` x ``width`` grid: u' = scale_x * (u + 0.5) - 0.5 + offset_x.

    ``offset`` is negative where the resized image is cropped and positive where it is padded; ``size`` is the
    short side S the map was made for.
    """

    src_height: int
    src_width: int
    size: int
    scaled_height: int
    scaled_width: int
    offset_x: int
    offset_y: int
    height: int
    width: int

    @property
    def is_identity(self) -> bool:
        """True when the canonical grid is the source grid itself: nothing to resample, pad or crop."""
        same_size = (self.src_height, self.src_width) == (self.scaled_height, self.scaled_width)
        return (
            same_size
            and (self.height, self.width) == (self.src_height, self.src_width)
            and not (self.offset_x or self.offset_y)
        )

    @property
    def scale_x(self) -> float:
        return self.scaled_width / self.src_width

    @property
    def scale_y(self) -> float:
        return self.scaled_height / self.src_height

    def as_array(self) -> np.ndarray:
        """[scale_x, scale_y, offset_x, offset_y] as float64, the form stored next to frames."""
        return np.array([self.scale_x, self.scale_y, self.offset_x, self.offset_y], dtype=np.float64)

    def to_dict(self) -> dict[str, int | float]:
        return {
            "src_height": self.src_height,
            "src_width": self.src_width,
            "size": self.size,
            "scaled_height": self.scaled_height,
            "scaled_width": self.scaled_width,
            "offset_x": self.offset_x,
            "offset_y": self.offset_y,
            "height": self.height,
            "width": self.width,
            "scale_x": self.scale_x,
            "scale_y": self.scale_y,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CanonicalMap:
        """Back from :meth:`to_dict` (the ``canonical_map`` attribute of a clip store); stores written before
        non-square grids lack height/width and were ``size`` x ``size``."""
        keys = ("src_height", "src_width", "size", "scaled_height", "scaled_width", "offset_x", "offset_y")
        values = {k: int(d[k]) for k in keys}
        return cls(**values, height=int(d.get("height", d["size"])), width=int(d.get("width", d["size"])))


def identity_map(height: int, width: int) -> CanonicalMap:
    """The map of a store whose frames are their own source (no resize, no offset)."""
    return CanonicalMap(height, width, min(height, width), height, width, 0, 0, height, width)


def _long_side(long: int, short: int, size: int, multiple: int) -> int:
    """The aspect-correct length of the long side at short side ``size``, rounded to the nearest ``multiple``."""
    return max(multiple, round(long * size / short / multiple) * multiple)


def canonical_map(height: int, width: int, size: int, multiple: int = 1, crop: bool = False) -> CanonicalMap:
    """Short side -> ``size``; the long side -> its aspect-correct length rounded to a multiple of ``multiple``
    (no crop, no padding), or with ``crop`` centre-cropped/padded to ``size`` (an S x S grid)."""
    if height <= 0 or width <= 0 or size <= 0 or multiple <= 0:
        raise ValueError(
            f"canonical_map needs positive sizes, got height={height}, width={width}, size={size}, multiple={multiple}"
        )
    if size % multiple:
        raise ValueError(f"canonical size {size} is not a multiple of {multiple} (the low-res factor)")
    if crop:
        s = size / min(height, width)
        sh, sw = max(1, round(height * s)), max(1, round(width * s))
        return CanonicalMap(height, width, size, sh, sw, (size - sw) // 2, (size - sh) // 2, size, size)
    if height <= width:
        h, w = size, _long_side(width, height, size, multiple)
    else:
        h, w = _long_side(height, width, size, multiple), size
    return CanonicalMap(height, width, size, h, w, 0, 0, h, w)


def transform_intrinsics(K: np.ndarray, m: CanonicalMap) -> np.ndarray:
    """Intrinsics (..., 3, 3) of the source image -> intrinsics of the canonical image (float64)."""
    K = np.asarray(K, dtype=np.float64)
    out = K.copy()
    out[..., 0, 0] = K[..., 0, 0] * m.scale_x
    out[..., 0, 1] = K[..., 0, 1] * m.scale_x
    out[..., 1, 1] = K[..., 1, 1] * m.scale_y
    out[..., 0, 2] = m.scale_x * (K[..., 0, 2] + 0.5) - 0.5 + m.offset_x
    out[..., 1, 2] = m.scale_y * (K[..., 1, 2] + 0.5) - 0.5 + m.offset_y
    return out


def source_intrinsics(K: np.ndarray, m: CanonicalMap) -> np.ndarray:
    """Canonical intrinsics (..., 3, 3) -> the source image's (float64): the exact inverse of
    :func:`transform_intrinsics`."""
    K = np.asarray(K, dtype=np.float64)
    out = K.copy()
    out[..., 0, 0] = K[..., 0, 0] / m.scale_x
    out[..., 0, 1] = K[..., 0, 1] / m.scale_x
    out[..., 1, 1] = K[..., 1, 1] / m.scale_y
    out[..., 0, 2] = (K[..., 0, 2] + 0.5 - m.offset_x) / m.scale_x - 0.5
    out[..., 1, 2] = (K[..., 1, 2] + 0.5 - m.offset_y) / m.scale_y - 0.5
    return out

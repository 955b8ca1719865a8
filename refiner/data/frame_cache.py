"""A byte-bounded LRU of whole frames read from Zarr arrays, for readers that visit the same frames again.

Training draws random crops of random windows from a few clips, so every frame is read many times; one
frame is one Zarr chunk, so a crop costs a whole chunk's decompression anyway. :class:`FrameCache` keeps
decoded frames (keyed by store, array and frame index) up to ``max_bytes`` and drops the least recently
used first. Windows are cut from cached frames, so a cached read returns exactly what a direct read does.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import zarr


class FrameCache:
    """Whole frames of time-major Zarr arrays, least recently used dropped first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes, self.bytes = max_bytes, 0
        self._frames: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    def read(self, store: str, name: str, array: zarr.Array, frames: slice, region: tuple = ()) -> np.ndarray:
        """``region`` (slices of the other axes) of frames ``frames`` (a step-1 slice) of ``array``, [t, ...];
        frames not cached are read whole, in one Zarr read."""
        start, stop, step = frames.indices(array.shape[0])
        if step != 1:
            raise ValueError(f"frame slices must have step 1, got {frames}")
        keys = [(store, name, t) for t in range(start, stop)]
        missing = [i for i, k in enumerate(keys) if k not in self._frames]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            block = np.asarray(array[start + lo : start + hi])
            for i in range(lo, hi):
                self._put(keys[i], block[i - lo])
        out = [self._frames[k][region] for k in keys]
        for k in keys:
            self._frames.move_to_end(k)
        self._evict()
        return np.stack(out) if out else np.asarray(array[start:stop])

    def _put(self, key: tuple[str, str, int], frame: np.ndarray) -> None:
        if key in self._frames:
            return
        frame = np.ascontiguousarray(frame)
        self._frames[key] = frame
        self.bytes += frame.nbytes

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._frames:
            _, frame = self._frames.popitem(last=False)
            self.bytes -= frame.nbytes

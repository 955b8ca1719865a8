"""Read access to one clip: its decoded store (RGB, K, GT) and teacher store (depth, uncertainty ranks).

Confidence c(x) is not stored: it is the teacher's per-image uncertainty rank mapped through the
calibration fitted on the train split (``data/manifest/calibration.json``), by
:func:`refiner.teachers.confidence.rank_to_confidence`, so a test clip's input never depends on its own GT.
Every read of depth or confidence is checked for NaN/inf and fails naming the store, array and frames.
With a :class:`refiner.data.frame_cache.FrameCache`, whole frames are kept in memory between reads (training).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refiner.core.errors import writer_target
from refiner.core.provenance import clip_provenance
from refiner.core.store import check_finite, open_group
from refiner.data.frame_cache import FrameCache
from refiner.data.manifest import find_clip
from refiner.geometry.masks import still_static_mask
from refiner.teachers.confidence import rank_to_confidence

Region = tuple[slice, ...]  # (frames, rows, cols)
UNKNOWN_FPS = 24.0  # the frame rate of a clip that states none (e.g. one frame, where no interval can be measured)


class Clip:
    """One clip's stores, opened read-only; every getter takes a window (t, y, x slices) and returns NumPy."""

    def __init__(
        self,
        decoded: str | Path,
        teacher: str | Path,
        calibration: dict | None,
        guidance: str | Path | None = None,
        cache: FrameCache | None = None,
    ) -> None:
        self.decoded_path, self.teacher_path, self.cache = str(decoded), str(teacher), cache
        self.dec = open_group(decoded, ("rgb", "K"), "decoded clip store")
        self.tea = open_group(teacher, ("depth", "uncertainty", "rank", "low_mapping"), "teacher store")
        self.guidance_path = None if guidance is None else str(guidance)
        self.guide = open_group(guidance, ("G",), "guidance store") if guidance is not None else None
        self.calibration = calibration
        self.frames, self.height, self.width = self.dec["rgb"].shape[:3]
        if self.tea["depth"].shape != (self.frames, self.height, self.width):
            raise ValueError(
                f"{teacher}: shape {self.tea['depth'].shape} does not match {decoded} "
                f"({self.frames}, {self.height}, {self.width}); re-run the teacher stage"
            )
        self.factor = int(self.tea["low_mapping"][0])
        self.has_gt = "depth_gt" in self.dec
        self.has_poses = "poses" in self.dec
        self.static_frames = min(int(self.dec.attrs.get("static_frames", 0)), self.frames)
        self.fps = float(self.dec.attrs.get("fps") or UNKNOWN_FPS)  # as measured (14.99992): mp4s take 15 (video_rate)
        self._K: np.ndarray | None = None
        self._arrays: dict[tuple[str, str], object] = {}

    def _array(self, group, store: str, name: str):
        """The Zarr array, opened once (each opening reads its metadata from disk)."""
        key = (store, name)
        if key not in self._arrays:
            self._arrays[key] = group[name]
        return self._arrays[key]

    def _read(self, group, store: str, name: str, win: Region) -> np.ndarray:
        """``win`` of array ``name``, through the frame cache when there is one."""
        array = self._array(group, store, name)
        if self.cache is None:
            return np.asarray(array[win])
        frames = self.cache.read(store, name, array, _frame_slice(win), tuple(win[1:]))
        return frames if isinstance(win[0], slice) else frames[0]

    def _checked(self, group, store: str, name: str, win: Region) -> np.ndarray:
        values = np.asarray(self._read(group, store, name, win), dtype=np.float32)
        t = _frame_slice(win)
        check_finite(values, f"{store}/{name} frames {t.start}..{t.stop}")
        return values

    def teacher_depth(self, win: Region) -> np.ndarray:
        return self._checked(self.tea, self.teacher_path, "depth", win)

    def confidence(self, win: Region) -> np.ndarray:
        """c(x) in [0, 1]; 0 where the teacher depth is invalid."""
        rank = self._checked(self.tea, self.teacher_path, "rank", win)
        return rank_to_confidence(rank, self.teacher_depth(win) > 0, self.calibration)

    def edges(self, win: Region) -> np.ndarray | None:
        """The guidance stage's G_t in [0, 1] (colour or depth edge), None without a guidance store."""
        return None if self.guide is None else self._checked(self.guide, self.guidance_path, "G", win)

    def rgb(self, win: Region) -> np.ndarray:
        """uint8 (..., 3)."""
        return self._read(self.dec, self.decoded_path, "rgb", win)

    def gt(self, win: Region) -> np.ndarray:
        return self._checked(self.dec, self.decoded_path, "depth_gt", win)

    def moving(self, win: Region) -> np.ndarray | None:
        return self._read(self.dec, self.decoded_path, "moving_mask", win) > 0 if "moving_mask" in self.dec else None

    def K(self, frames: slice = slice(None)) -> np.ndarray:
        if self._K is None:  # (T, 3, 3): small, read once
            self._K = np.asarray(self.dec["K"][...], dtype=np.float64)
        return self._K[frames].copy()

    def baseline_m(self, default: float) -> float:
        """The eye separation the clip states (attr ``baseline_m``), else ``default`` (params.yaml's)."""
        return float(self.dec.attrs.get("baseline_m") or default)

    def display_fx(self) -> np.ndarray:
        """(T,) the SOURCE camera's fx (the canonical fx over the map's scale_x): fx·b/z with it is a disparity
        in display pixels of the source video."""
        scale_x = float(self.dec["mapping"][0]) if "mapping" in self.dec else 1.0
        return self.K()[:, 0, 0] / scale_x

    def still_static(self) -> tuple[torch.Tensor, int]:
        """(H, W) static pixels of the still-camera segment (:func:`refiner.geometry.masks.still_static_mask`; valid GT
        throughout where the clip has GT) and the segment's length (0 when it has none)."""
        n = self.static_frames if self.static_frames >= 2 else 0
        if not n:
            return torch.zeros(self.height, self.width, dtype=torch.bool), 0
        win = full(slice(0, n))
        moving = self.moving(win)
        valid = self.gt(win) > 0 if self.has_gt else np.ones((n, self.height, self.width), bool)
        rgb = torch.from_numpy(self.rgb(win))
        return still_static_mask(rgb, None if moving is None else torch.from_numpy(moving), torch.from_numpy(valid)), n

    def provenance(self) -> dict:
        """Whether the frames and depth GT are rendered or real, and the teacher (:mod:`refiner.core.provenance`)."""
        return clip_provenance(self.dec.attrs, self.has_gt, self.tea.attrs)

    def poses(self, frames: slice = slice(None)) -> np.ndarray | None:
        """(T, 4, 4) camera-to-world poses of the left eye (None where the clip has none)."""
        return np.asarray(self.dec["poses"][frames], dtype=np.float64) if self.has_poses else None


class ClipPool:
    """At most ``max_open`` clips open at once, the least recently read closed first: training over hundreds of
    clips keeps a bounded number of stores (and their array handles) open, opens a clip once however many windows
    it gives, and shares one byte-bounded frame cache. Each data-loader process gets an empty pool of its own."""

    def __init__(self, max_open: int = 64, cache: FrameCache | None = None) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.max_open, self.cache, self.opened = max_open, cache, 0  # opened: how many times a clip was opened
        self._open: OrderedDict[str, Clip] = OrderedDict()

    def get(self, entry: dict) -> Clip:
        """The open clip of a manifest entry (opened now if it is not)."""
        key = entry["decoded"]
        clip = self._open.pop(key, None)
        if clip is None:
            clip = Clip(entry["decoded"], entry["teacher"], entry["calibration"], entry["guidance"], self.cache)
            self.opened += 1
        self._open[key] = clip
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return clip

    def __len__(self) -> int:
        return len(self._open)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict()}


class LazyClip:
    """A clip of the manifest read through a :class:`ClipPool`: its frame count, size and low-res factor come from
    the manifest entry, so listing hundreds of clips opens none; any read opens it (or finds it open)."""

    def __init__(self, entry: dict, pool: ClipPool) -> None:
        self.entry, self.pool = entry, pool
        self.frames, self.height, self.width = int(entry["frames"]), int(entry["height"]), int(entry["width"])
        self.factor, self.decoded_path = int(entry["low_res_factor"]), str(entry["decoded"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "pool" not in self.__dict__:  # copying and unpickling look up dunders first
            raise AttributeError(name)
        return getattr(self.pool.get(self.entry), name)


class ClipPart:
    """Frames [start, stop) of a clip read as a clip of their own (one scene between two cuts): the window reads
    (:data:`WINDOW_READS`, :meth:`K`) are shifted by ``start``; everything else (size, factor, calibration, fps,
    stores) is the whole clip's."""

    WINDOW_READS = ("teacher_depth", "confidence", "edges", "rgb", "gt", "moving")

    def __init__(self, clip: Clip, start: int, stop: int) -> None:
        if not 0 <= start < stop <= clip.frames:
            raise ValueError(f"frames [{start}, {stop}) are not inside the clip's {clip.frames} frames")
        self.clip, self.start, self.frames = clip, start, stop - start
        self.static_frames = min(clip.static_frames, self.frames) if start == 0 else 0

    def __getattr__(self, name: str):
        attr = getattr(self.clip, name)
        return (lambda win: attr(self._shift(win))) if name in self.WINDOW_READS else attr

    def _shift(self, win: Region) -> Region:
        t = win[0]
        if isinstance(t, int):
            return (t + self.start, *win[1:])
        stop = self.frames if t.stop is None else t.stop
        return (slice((t.start or 0) + self.start, stop + self.start), *win[1:])

    def K(self, frames: slice = slice(None)) -> np.ndarray:
        return self.clip.K(self._shift((frames,))[0])


def _frame_slice(win: Region) -> slice:
    """The window's frames as a slice (a single frame index t → t..t+1)."""
    return win[0] if isinstance(win[0], slice) else slice(win[0], win[0] + 1)


def full(t: slice | int) -> Region:
    """The whole frame(s) ``t``."""
    return (t, slice(None), slice(None))


def open_clip(manifest_dir: str | Path, name: str) -> tuple[Clip, dict]:
    """Clip ``name`` with the calibration table the manifest gave it, and its entry (plus its ``split``)."""
    entry, split = find_clip(manifest_dir, name)
    if not (Path(entry["teacher"]) / "zarr.json").is_file():  # never built here: that is the prepare stage's job
        target = writer_target(entry["teacher"])
        how = f"`dvc repro {target}`" if target else "`dvc repro` (the prepare stage of its shard writes it)"
        missing = f"{entry['teacher']}: the teacher cache of clip {name!r} is missing"
        raise FileNotFoundError(f"{missing}; build it with {how}")
    return Clip(entry["decoded"], entry["teacher"], entry["calibration"]), {**entry, "split": split}

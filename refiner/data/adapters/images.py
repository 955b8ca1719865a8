"""Reading the image and HDF5 files of data sets, with errors naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a FileNotFoundError saying what it should hold."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found; check the data set folder is complete")
    return path


def read_image(path: Path, what: str) -> np.ndarray:
    """An image file as an array: RGB (H, W, 3) uint8 for colour, (H, W) uint16 for 16-bit PNG."""
    require_file(path, what)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                return np.asarray(im).astype(np.uint16)
            return np.array(im.convert("RGB"))  # a writable copy (torch warns on read-only arrays)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: {what} is corrupt or not an image ({e}); re-extract it from the archive") from e


def read_hdf5(path: Path, what: str, key: str = "dataset") -> np.ndarray:
    """The array ``key`` of an HDF5 file."""
    require_file(path, what)
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise ValueError(f"{path}: {what} lacks the HDF5 dataset '{key}'; found {sorted(f)}")
            return np.asarray(f[key][...])
    except OSError as e:
        raise ValueError(f"{path}: {what} is corrupt or not HDF5 ({e}); re-extract it from the archive") from e

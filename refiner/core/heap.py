"""Give freed heap memory back to the OS between spans of long work.

glibc keeps freed blocks of NumPy/torch temporaries in its heap; over hundreds of spans the heap fragments
and the resident set grows with clip length although nothing is kept. ``malloc_trim(0)`` returns those
pages. Elsewhere (macOS, musl, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

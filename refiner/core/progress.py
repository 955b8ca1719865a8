"""A progress bar that never falls silent: a heartbeat thread redraws it at least every ``HEARTBEAT_S``.

The refiner computes a whole window (12 frames) in one forward pass, several seconds on a busy CPU, and writers
finish frames in bursts. :class:`Progress` polls a count (e.g. frames every writer has finished,
:meth:`refiner.core.streaming.Streams.finished`) and redraws the bar with it, with the elapsed time and a note of what
runs now (``window 3/7``), so the output moves every second even while one window is being computed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tqdm import tqdm

HEARTBEAT_S = 0.5  # the longest gap between two redraws of the bar


class Progress:
    """``with Progress(total, desc, poll) as p: ... p.note("window 2/7")``; ``poll()`` gives the count done (with
    ``total`` None the bar shows the elapsed time only)."""

    def __init__(self, total: int, desc: str, poll: Callable[[], int], enabled: bool = True) -> None:
        self.poll, self.enabled = poll, enabled
        elapsed_only = {"bar_format": "{desc} {elapsed}"} if total is None else {"unit": "frame"}
        self.bar = tqdm(total=total, desc=desc, disable=not enabled, mininterval=0, **elapsed_only)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"progress {desc}", daemon=True)

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish(exc[0] is None)

    def finish(self, draw: bool = True) -> None:
        """Stop the heartbeat and close the bar (again: nothing happens)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if draw and not self.bar.disable and self.bar.total is not None:
            self._draw()
        self.bar.close()

    def note(self, text: str) -> None:
        """What runs now, shown after the counts."""
        self.bar.set_postfix_str(text, refresh=False)

    def _draw(self) -> None:
        self.bar.n = self.poll() if self.bar.total is None else min(self.poll(), self.bar.total)
        self.bar.refresh()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._draw()

"""Fan a stream of items out to writer threads through bounded queues.

:func:`fan_out` iterates ``items`` in the calling thread and hands every item, in order, to every consumer; each
consumer is a function of an iterable (``fn(frames) -> result``) that runs on its own thread and reads the items
through a queue of at most ``depth`` entries, so a slow writer holds the producer back instead of letting the
queue grow: memory is the producer's state plus ``depth`` items, whatever the stream's length. A consumer that
fails stops the others (their iterables raise :class:`Aborted`, so an ``atomic_path`` inside them removes its
temporary) and its error is raised in the caller; so is the producer's. :class:`Streams` counts, per consumer,
the items it has finished, for progress bars.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

POLL_S = 0.1  # how often a blocked put or get looks whether the stream was aborted
_END = object()


class Aborted(RuntimeError):
    """Raised inside a consumer whose stream was stopped by another consumer's or the producer's error."""


class _Feed:
    """One consumer: its queue, its thread and what it returned or raised."""

    def __init__(self, name: str, fn: Callable[[Iterable], Any], depth: int, abort: threading.Event) -> None:
        self.name, self.fn, self.abort = name, fn, abort
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.done, self.result, self.error = 0, None, None
        self.thread = threading.Thread(target=self._run, name=f"writer {name}", daemon=True)
        self.thread.start()

    def _items(self) -> Iterator[Any]:
        taken = False
        while True:
            try:
                item = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                if self.abort.is_set():
                    raise Aborted(f"writer {self.name} stopped: another part of the run failed") from None
                continue
            self.done += taken  # the consumer asks for the next item once it has finished the last one
            if item is _END:
                return
            taken = True
            yield item

    def _run(self) -> None:
        items = self._items()
        try:
            self.result = self.fn(items)
            for _ in items:  # a consumer that stopped early still takes every item, so the producer never blocks
                pass
        except BaseException as e:  # noqa: BLE001 (handed to the producer's thread, which raises it)
            self.error = e
            self.abort.set()

    def put(self, item: Any) -> None:
        while True:
            if self.abort.is_set():
                raise Aborted(f"writer {self.name} is not taking items: another part of the run failed")
            try:
                self.queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue


class Streams:
    """The consumers of every :func:`fan_out` of one run (nested ones too), for progress."""

    def __init__(self) -> None:
        self.feeds: list[_Feed] = []

    def finished(self) -> int:
        """Items every consumer has finished (the slowest consumer's count; 0 before any started)."""
        return min((f.done for f in self.feeds), default=0)


def fan_out(
    items: Iterable[Any],
    consumers: dict[str, Callable[[Iterable], Any]],
    depth: int = 4,
    streams: Streams | None = None,
) -> dict[str, Any]:
    """Every item to every consumer, each on its own thread through a queue of ``depth`` items; returns each
    consumer's result by name once all have finished. The first error (a consumer's or the producer's) is raised
    after every thread has stopped."""
    abort = threading.Event()
    feeds = [_Feed(name, fn, depth, abort) for name, fn in consumers.items()]
    if streams is not None:
        streams.feeds.extend(feeds)
    error: BaseException | None = None
    try:
        for item in items:
            for f in feeds:
                f.put(item)
        for f in feeds:
            f.put(_END)
    except BaseException as e:  # noqa: BLE001 (raised below, once every writer has stopped)
        error = e
        abort.set()
    for f in feeds:
        f.thread.join()
    first = next((f.error for f in feeds if f.error is not None and not isinstance(f.error, Aborted)), None)
    if first is not None or error is not None:
        raise first or error
    return {f.name: f.result for f in feeds}

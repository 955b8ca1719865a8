"""The writer threads of a streaming run: every item in order to every writer, bounded queues, and errors that stop
everything and leave no temporary behind."""

import threading

import pytest

from refiner.core.store import atomic_path
from refiner.core.streaming import Aborted, Streams, fan_out


def test_every_consumer_gets_every_item_in_order_and_returns_its_result():
    streams = Streams()
    results = fan_out(range(50), {"sum": sum, "list": list, "last": lambda items: max(items)}, 3, streams)
    assert results == {"sum": 1225, "list": list(range(50)), "last": 49}
    assert streams.finished() == 50


def test_a_slow_consumer_holds_the_producer_back_so_at_most_depth_items_wait():
    release, produced, seen = threading.Event(), [], []

    def producer():
        for i in range(20):
            produced.append(i)
            yield i

    def slow(items):
        for i in items:
            release.wait()  # blocked until the producer has filled the queue
            seen.append((i, len(produced)))

    def unblock_later(items):
        for _ in items:
            pass

    threading.Timer(0.5, release.set).start()
    fan_out(producer(), {"slow": slow, "fast": unblock_later}, depth=4)
    # while the slow writer held item 0, the producer made at most 1 taken + 4 queued + 1 waiting to be put
    assert seen[0][0] == 0 and seen[0][1] <= 6 and [i for i, _ in seen] == list(range(20))


def test_a_consumer_that_stops_early_does_not_block_the_producer():
    results = fan_out(range(100), {"first": lambda items: next(iter(items)), "all": list}, depth=2)
    assert results["first"] == 0 and results["all"] == list(range(100))


def test_a_failing_writer_stops_the_others_and_their_temporaries_go(tmp_path):
    def broken(items):
        for i in items:
            if i == 5:
                raise OSError("disk full")

    def file_writer(items):
        with atomic_path(tmp_path / "out.txt") as tmp, tmp.open("w") as f:
            for i in items:
                f.write(f"{i}\n")

    with pytest.raises(OSError, match="disk full"):
        fan_out(range(10_000), {"broken": broken, "file": file_writer}, depth=2)
    assert list(tmp_path.iterdir()) == []  # the other writer was aborted: no output, no temporary


def test_a_failing_producer_raises_its_own_error_and_writers_abort(tmp_path):
    aborted = []

    def producer():
        yield from range(3)
        raise ValueError("refined depth of frame 3 is not finite")

    def writer(items):
        try:
            for _ in items:
                pass
        except Aborted:
            aborted.append(True)
            raise

    with pytest.raises(ValueError, match="frame 3 is not finite"):
        fan_out(producer(), {"w": writer})
    assert aborted == [True]


def test_nested_fan_out_counts_the_leaf_writers():
    streams = Streams()

    def mapper(items):
        return fan_out((2 * i for i in items), {"a": sum, "b": list}, streams=streams)

    assert fan_out(range(10), {"m": mapper}, streams=streams)["m"] == {"a": 90, "b": list(range(0, 20, 2))}
    assert streams.finished() == 10

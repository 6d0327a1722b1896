"""The API process's garbage collector with many streams open (service/http/heap.py)."""

import gc
import weakref

from service.http.heap import FREEZE_AFTER, FULL_AFTER, Heap


class Node:
    me: object


def test_the_heap_is_frozen_as_streams_open_and_collected_once_as_many_ended() -> None:
    heap = Heap()
    try:
        heap.start()
        frozen = gc.get_freeze_count()
        assert frozen > 0, "the loaded app is frozen"
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        for _ in range(FREEZE_AFTER - 1):
            heap.stream_opened()
        heap.tend()
        assert gc.get_freeze_count() == frozen, "not before FREEZE_AFTER streams opened"
        heap.stream_opened()
        heap.tend()
        assert gc.get_freeze_count() > frozen, "frozen with the streams opened since"
        del cycle
        gc.collect()
        assert gone() is not None, "a cycle of frozen objects is left to the full collection"
        for _ in range(2 * FULL_AFTER):  # FREEZE_AFTER + 2 * FULL_AFTER open
            heap.stream_opened()
        for _ in range(FULL_AFTER - 1):
            heap.stream_ended()
        heap.tend()
        assert gone() is not None, "not before FULL_AFTER streams ended"
        heap.stream_ended()  # FULL_AFTER ended, FREEZE_AFTER + FULL_AFTER open
        heap.tend()
        assert gone() is not None, "nor before as many ended as are open"
        for _ in range(FULL_AFTER):
            heap.stream_ended()
        heap.tend()
        assert gone() is None, "collected by the full collection"
        assert gc.get_freeze_count() > 0, "and the heap frozen again after it"
    finally:
        heap.stop()
    assert gc.get_freeze_count() == 0, "nothing frozen once the app stopped"

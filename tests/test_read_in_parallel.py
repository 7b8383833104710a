"""`in_parallel`: independent reads at once, results and errors as if made one by one."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from imagebuild.errors import UserError
from imagebuild.stores.place import in_parallel


def test_results_come_in_the_order_given():
    def after(seconds, value):
        return lambda: (time.sleep(seconds), value)[1]

    assert in_parallel([after(0.05, "a"), after(0, "b"), after(0.02, "c")]) == ["a", "b", "c"]


def test_reads_overlap_up_to_the_bound():
    running, peak, guard = [0], [0], threading.Lock()

    def read():
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1

    in_parallel([read] * 10, at_once=4)
    assert peak[0] == 4


def test_the_first_failure_in_order_wins_after_the_others_end():
    ended = []

    def slow_failure():
        time.sleep(0.05)
        ended.append("slow")
        raise UserError("first")

    def fast_failure():
        ended.append("fast")
        raise UserError("second")

    with pytest.raises(UserError, match="first"):
        in_parallel([slow_failure, fast_failure])
    assert sorted(ended) == ["fast", "slow"]


def test_an_interrupt_aborts_the_places_without_waiting():
    """Ctrl-C while reads are under way: the places are aborted at once, no read is waited for."""
    class Place:
        aborted = False

        def abort(self):
            self.aborted = True

    place, release, under_way = Place(), threading.Event(), threading.Event()
    main = threading.main_thread().ident

    def read():
        under_way.set()
        return release.wait(5)

    def interrupt():
        # Ctrl-C once a read is under way (a fixed delay could land before in_parallel on a busy machine).
        under_way.wait(5)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        in_parallel([read, read], [place])
    assert place.aborted and time.monotonic() - start < 4     # the reads would hold it 5 s
    release.set()


def test_reads_of_local_places_run_one_by_one_in_the_calling_thread(tmp_path):
    """Files on this machine gain nothing from threads (and an everyday command on the local store
    would import concurrent.futures for them)."""
    from imagebuild.stores.layout import LayoutStore
    from imagebuild.stores.memory import MemoryPlace
    from imagebuild.stores.place import LayoutPlace

    places = [LayoutPlace(LayoutStore(tmp_path / "store")), MemoryPlace()]
    ran_in = in_parallel([lambda: threading.current_thread()] * 3, places)
    assert ran_in == [threading.main_thread()] * 3

"""map_in_order: many calls in flight, results in input order, errors raised at their turn."""

from __future__ import annotations

import threading
import time

import pytest

from segcore.io.parallel import map_in_order


def test_results_come_in_input_order_with_calls_overlapping():
    running, most = 0, 0
    lock = threading.Lock()

    def slow(i):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (i % 3))  # later items often finish first
        with lock:
            running -= 1
        return i * i

    assert list(map_in_order(slow, range(50), window=8)) == [i * i for i in range(50)]
    assert 1 < most <= 8


def test_an_error_is_raised_at_its_turn_after_the_earlier_results():
    def fail_at_five(i):
        if i == 5:
            raise FileNotFoundError(f"shard {i}")
        return i

    seen = []
    with pytest.raises(FileNotFoundError, match="shard 5"):
        for value in map_in_order(fail_at_five, range(20), window=4):
            seen.append(value)
    assert seen == [0, 1, 2, 3, 4]


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        list(map_in_order(str, [1], window=0))

"""Reads many small files with many requests in flight, results in the order asked for.

Object stores answer one request in tens of milliseconds; a reduce over 10,000 shards that waits for each read
in turn waits minutes. :func:`map_in_order` keeps ``window`` calls running on threads (fsspec's synchronous
calls are safe from threads; an async file system runs them on its own event loop) and yields their results in
input order, so a consumer folds them in a fixed order while the next ones are being fetched. Memory holds at
most ``window`` results that have not been consumed.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
READ_WINDOW = 64  # requests in flight


def map_in_order(function: Callable[[Item], Result], items: Iterable[Item], window: int = READ_WINDOW
                 ) -> Iterator[Result]:
    """``function(item)`` for each item, ``window`` at a time on threads, yielded in the order of ``items``.

    An exception of a call is raised when its turn comes; the calls still running are waited for, not lost.
    """
    if window < 1:
        raise ValueError(f"Expected a window of at least 1, but got {window}")
    with ThreadPoolExecutor(max_workers=window, thread_name_prefix="read") as pool:
        pending: deque[Future] = deque()
        source = iter(items)
        try:
            for item in source:
                pending.append(pool.submit(function, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

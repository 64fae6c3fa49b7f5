"""Python's cyclic garbage collector paused while one query is compiled or rendered.

A sqlglot tree is cyclic (every node points to its parent), so a query's nodes are freed by the
collector, never by reference counting alone. While a query is built, each collection walks the
half-built tree (and, every few collections, every long-lived object of the process: the
resolved model among them) only to find it still alive. Paused for the few milliseconds of one
compile, the collector runs at the next allocation after it, when more of what it walks is
garbage (a 1,000-KPI project compiled KPI by KPI spent about a fifth less time in the collector,
measured with gc.callbacks; docs/performance.md, section 3).

The switch is process-wide, so the pause is short and careful: it never turns on a collector
that was off (``gc.disable()`` by the application stays), and only the thread that paused it
turns it back on, when its own compile ends: other threads compiling at the same time run inside
that pause without extending it, so a busy server never keeps the collector off for long.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_paused_by: int | None = None  # the thread whose compile holds the pause


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    global _paused_by
    with _lock:
        mine = _paused_by is None and gc.isenabled()
        if mine:
            _paused_by = threading.get_ident()
            gc.disable()
    try:
        yield
    finally:
        if mine:
            with _lock:
                _paused_by = None
                gc.enable()

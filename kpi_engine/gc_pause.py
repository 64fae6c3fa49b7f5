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

A compile starts by collecting the young generations (``gc.collect(1)``, unless the collector is
off or another thread's compile holds the pause). Without it, a query's tree was still alive
(being returned, then rendered) at the collections that ran when each pause ended, so it was
moved to the middle generation, and every tenth collection moved the tree alive at that moment
to the oldest one, where only a full collection (walking the whole model) frees it. At the next
compile the previous query is usually garbage: collected there, each tree is walked once more
while young and never reaches the oldest generation. A 2,000-KPI project compiled KPI by KPI
spent 0.7 s in the collector instead of 1.2 s, and four full collections became three
(gc.callbacks; docs/performance.md, section 3). ``gc.collect(1)`` changes no setting of the
collector and never collects the oldest generation.

That collection is skipped while the query compiled last is still held (``compiled`` notes it,
through a weak reference that keeps nothing alive). A caller that keeps the previous query while
compiling the next (``query = project.compile(...)`` in a loop, a server answering several
requests) would otherwise have each still-living tree moved to the oldest generation by the
collection that was meant to free it young: a 2,000-KPI project compiled that way ran 36 full
collections (3.2 s in the collector); skipped, 3 to 5 (1.2 to 1.4 s; docs/performance.md, section 3).
"""

from __future__ import annotations

import gc
import threading
import weakref

_lock = threading.Lock()
_paused_by: int | None = None  # the thread whose compile holds the pause
_last_compiled: weakref.ref | None = None  # the query compiled last (one reference, never a list)


def compiled(query: object) -> None:
    """Note the query a compile hands back (see the module's notes: while it lives, the next
    compile does not start with a young collection)."""
    global _last_compiled
    _last_compiled = weakref.ref(query)


class collector_paused:
    """Pause the collector for one compile or render. ``young_first`` (the start of a compile):
    collect the two young generations before pausing, when the previous query is usually garbage
    already (see the module's notes).

    A class rather than a generator-based context manager: it wraps every compile and render,
    and contextlib's machinery (a generator object, resumed on entry and on exit) is several
    Python calls each time."""

    __slots__ = ("young_first", "mine")

    def __init__(self, young_first: bool = False):
        self.young_first = young_first
        self.mine = False

    def __enter__(self) -> None:
        global _paused_by
        last = _last_compiled
        if self.young_first and _paused_by is None and gc.isenabled() and (last is None or last() is None):
            gc.collect(1)
        with _lock:
            self.mine = _paused_by is None and gc.isenabled()
            if self.mine:
                _paused_by = threading.get_ident()
                gc.disable()

    def __exit__(self, *exc) -> None:
        global _paused_by
        if self.mine:
            with _lock:
                _paused_by = None
                gc.enable()

"""Answers kept in memory, so nobody waits for the warehouse twice for the same answer.

The key of an answer is its compiled SQL plus the freshness of the sources it reads (each
source's first and last day of data, read as the request reads the source: off the rollup it is
routed to and the raw rows after its last day, as ``evaluate`` reads them for the complete flag;
and the modification time of an optional refresh-signal file that the loading pipeline touches):
new data makes a new key, so a stale answer is never served for it. Entries also expire after a
TTL (for corrections inside old days), and the cache is bounded in entries and in cells (rows x
columns).

Concurrent callers of the same key share one computation (single-flight): the first runs it,
the others wait for its answer instead of sending the same query to the warehouse.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping

HIT, MISS, SHARED = "hit", "miss", "shared"  # served from the cache, computed, or joined a computation
MAX_SOURCE_SETS = 1024  # sets of sources whose freshness is remembered


class SingleFlight:
    """Runs ``compute`` once per key among concurrent callers; the others get its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}

    def run(self, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(the value, whether it came from another caller's computation)."""
        with self._lock:
            future = self._running.get(key)
            leader = future is None
            if leader:
                future = self._running[key] = Future()
        if not leader:
            return future.result(), True
        try:
            value = compute()
        except BaseException as error:
            future.set_exception(error)
            raise
        else:
            future.set_result(value)
            return value, False
        finally:
            with self._lock:
                del self._running[key]


@dataclass
class _Entry:
    value: Any
    cells: int
    stored: float


class ResultCache:
    """A least-recently-used cache with a TTL and a bound on entries and cells."""

    def __init__(self, entries: int, max_cells: int, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.entries, self.max_cells, self.ttl, self.clock = entries, max_cells, ttl, clock
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._cells = 0
        self._flight = SingleFlight()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def cells(self) -> int:
        return self._cells

    def get(self, key: Hashable) -> tuple[Any, float] | None:
        """(value, age in seconds) of a live entry, or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            age = self.clock() - entry.stored
            if age >= self.ttl:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return entry.value, age

    def put(self, key: Hashable, value: Any, cells: int) -> None:
        if self.entries <= 0 or self.ttl <= 0 or cells > self.max_cells:
            return  # caching off, or an answer larger than the whole cache
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = _Entry(value, cells, self.clock())
            self._cells += cells
            while len(self._items) > self.entries or self._cells > self.max_cells:
                self._drop(next(iter(self._items)))

    def _drop(self, key: Hashable) -> None:
        self._cells -= self._items.pop(key).cells

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._cells = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any],
                       cells: Callable[[Any], int]) -> tuple[Any, str, float]:
        """(value, HIT/MISS/SHARED, age in seconds): from the cache, or computed once for
        every concurrent caller of the key and then kept. Errors are never kept."""
        found = self.get(key)
        if found is not None:
            return found[0], HIT, found[1]

        def compute_and_keep() -> Any:
            again = self.get(key)  # a computation that just finished may have stored it
            if again is not None:
                return again[0]
            value = compute()
            self.put(key, value, cells(value))
            return value

        value, shared = self._flight.run(key, compute_and_keep)
        return value, (SHARED if shared else MISS), 0.0


class Freshness:
    """How fresh a set of sources is: their extents (first and last day of data) and the refresh
    signal's modification time. Extents are read from the warehouse at most once per
    ``interval`` seconds per set of sources and rollups they are read off (and at once when the
    refresh signal changes). ``read_extents(sources, rollups)``: source -> the extent, with
    ``rollups`` (source -> the materialized rollup the request reads it from) as
    ``KpiProject.extents`` takes them, so a routed request's freshness is read off its rollup."""

    def __init__(self, read_extents: Callable[[tuple[str, ...], Mapping[str, Any]], Mapping[str, Any]],
                 interval: float, refresh_signal: Path | None = None, clock: Callable[[], float] = time.monotonic):
        self.read_extents, self.interval, self.refresh_signal, self.clock = read_extents, interval, refresh_signal, clock
        self._lock = threading.Lock()
        self._known: dict[Hashable, tuple[float, tuple]] = {}
        self._flight = SingleFlight()

    def signal(self) -> int | None:
        if self.refresh_signal is None:
            return None
        try:
            return self.refresh_signal.stat().st_mtime_ns
        except OSError:
            return None  # not touched yet

    def key(self, sources: Iterable[str], rollups: Mapping[str, Any] | None = None) -> tuple:
        names = tuple(sorted(set(sources)))
        routed = {name: rollups[name] for name in names if name in (rollups or {})}
        signal = self.signal()
        memo = (names, tuple(sorted(routed.items())), signal)  # a routed set is read apart from a raw one
        with self._lock:
            known = self._known.get(memo)
        if known is not None and self.clock() - known[0] < self.interval:
            return known[1], signal

        def read() -> tuple:
            extents = self.read_extents(names, routed)
            value = tuple((name, str(extents[name].first), str(extents[name].last))
                          for name in names if name in extents)
            with self._lock:
                self._known = {k: v for k, v in self._known.items()  # drop older signals; stay small
                               if k[2] == signal and len(self._known) < MAX_SOURCE_SETS}
                self._known[memo] = (self.clock(), value)
            return value

        value, _ = self._flight.run(memo, read)
        return value, signal

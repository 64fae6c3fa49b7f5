"""The serve cache on its own: least-recently-used order, TTL, bounds on entries and cells,
single-flight, errors never kept, and the freshness key (interval and refresh signal)."""

from __future__ import annotations

import threading
import time

import pytest

from kpi_engine.completeness import Extent
from kpi_engine.serve.cache import HIT, MISS, SHARED, Freshness, ResultCache, SingleFlight


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = ResultCache(entries=10, max_cells=100, ttl=60, clock=clock)
    cache.put("a", "A", 1)
    clock.now += 59.9
    assert cache.get("a") == ("A", pytest.approx(59.9))
    clock.now += 0.1
    assert cache.get("a") is None and len(cache) == 0 and cache.cells == 0


def test_least_recently_used_goes_first_when_full():
    cache = ResultCache(entries=2, max_cells=100, ttl=60)
    cache.put("a", "A", 1)
    cache.put("b", "B", 1)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", "C", 1)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


def test_the_cell_bound_evicts_and_refuses_oversized_answers():
    cache = ResultCache(entries=10, max_cells=10, ttl=60)
    cache.put("a", "A", 6)
    cache.put("b", "B", 6)  # 12 cells > 10: a goes
    assert cache.get("a") is None and cache.cells == 6
    cache.put("huge", "H", 11)
    assert cache.get("huge") is None and cache.get("b") is not None


def test_get_or_compute_says_where_the_answer_came_from():
    cache = ResultCache(entries=10, max_cells=100, ttl=60)
    calls = []
    value, status, _ = cache.get_or_compute("k", lambda: calls.append(1) or "V", lambda v: 1)
    assert (value, status) == ("V", MISS)
    value, status, _ = cache.get_or_compute("k", lambda: calls.append(1) or "W", lambda v: 1)
    assert (value, status, len(calls)) == ("V", HIT, 1)


def test_errors_are_not_kept():
    cache = ResultCache(entries=10, max_cells=100, ttl=60)

    def failing():
        raise ValueError("warehouse down")

    with pytest.raises(ValueError):
        cache.get_or_compute("k", failing, lambda v: 1)
    assert cache.get_or_compute("k", lambda: "V", lambda v: 1)[:2] == ("V", MISS)


def test_single_flight_runs_once_for_concurrent_callers_and_shares_errors():
    flight = SingleFlight()
    runs, barrier = [], threading.Barrier(6)

    def compute():
        runs.append(1)
        time.sleep(0.3)
        return 42

    results = []

    def caller():
        barrier.wait()
        results.append(flight.run("k", compute))

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 1
    assert sorted(results) == [(42, False)] + [(42, True)] * 5

    def failing():
        time.sleep(0.2)
        raise RuntimeError("boom")

    errors = []

    def failing_caller():
        try:
            flight.run("e", failing)
        except RuntimeError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=failing_caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["boom"] * 3
    assert flight.run("e", lambda: "later") == ("later", False)  # a new call after the failure runs again


def test_concurrent_get_or_compute_reports_shared():
    cache = ResultCache(entries=10, max_cells=100, ttl=60)
    statuses, barrier = [], threading.Barrier(4)

    def compute():
        time.sleep(0.3)
        return "V"

    def caller():
        barrier.wait()
        statuses.append(cache.get_or_compute("k", compute, lambda v: 1)[1])

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [MISS, SHARED, SHARED, SHARED]


def test_freshness_rereads_extents_after_the_interval_or_a_refresh_signal(tmp_path):
    clock = Clock()
    reads = []
    last_day = {"value": "2025-03-01"}

    def read(sources, rollups):
        reads.append(sources)
        import datetime as dt

        return {name: Extent(dt.date(2025, 1, 1), dt.date.fromisoformat(last_day["value"])) for name in sources}

    signal = tmp_path / "loaded"
    fresh = Freshness(read, interval=30, refresh_signal=signal, clock=clock)
    first = fresh.key(["leads", "ad_spend"])
    assert first == ((("ad_spend", "2025-01-01", "2025-03-01"), ("leads", "2025-01-01", "2025-03-01")), None)
    last_day["value"] = "2025-03-02"
    assert fresh.key(["ad_spend", "leads"]) == first and len(reads) == 1  # within the interval
    clock.now += 30
    assert fresh.key(["leads", "ad_spend"])[0][0][2] == "2025-03-02" and len(reads) == 2
    signal.touch()
    touched = fresh.key(["leads", "ad_spend"])
    assert touched[1] == signal.stat().st_mtime_ns and len(reads) == 3  # the signal forces a new read


def test_freshness_reads_a_routed_set_of_sources_off_its_rollups_apart_from_the_raw_set():
    """The same sources read off a rollup (a routed request) and off their raw rows (another
    request) are two reads, each given the rollups of its own request, and each remembered."""
    import datetime as dt

    reads = []
    ends = {None: dt.date(2025, 3, 1), "by_market": dt.date(2025, 3, 4)}

    def read(sources, rollups):
        reads.append((sources, dict(rollups)))
        return {name: Extent(dt.date(2025, 1, 1), ends[rollups.get(name)]) for name in sources}

    fresh = Freshness(read, interval=30, clock=Clock())
    raw = fresh.key(["leads", "orders"])
    routed = fresh.key(["orders", "leads"], {"orders": "by_market", "visits": "by_day"})
    assert raw[0] == (("leads", "2025-01-01", "2025-03-01"), ("orders", "2025-01-01", "2025-03-01"))
    assert routed[0] == (("leads", "2025-01-01", "2025-03-01"), ("orders", "2025-01-01", "2025-03-04"))
    # visits is not asked: its rollup is not passed on
    assert reads == [(("leads", "orders"), {}), (("leads", "orders"), {"orders": "by_market"})]
    assert fresh.key(["orders", "leads"], {"orders": "by_market"}) == routed and fresh.key(["leads", "orders"]) == raw
    assert len(reads) == 2  # both remembered within the interval

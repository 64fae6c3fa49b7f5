#!/usr/bin/env python3
"""A dashboard-sized request with and without rollups, on the benchmark warehouse.

    python benchmarks/rollups.py --leads 1000000 --rounds 5
    python benchmarks/rollups.py --leads 10000000 --tile-from 1000000 --cache /tmp/bench   # tiled warehouse

Builds (or reuses) the warehouse of build_warehouse.py, writes a copy of its project with three
rollups (contacts and leads by day, channel and campaign; customers by day, channel and industry)
into a temporary folder,
materializes them into the project's local DuckDB store (timed), then runs the same request --
six KPIs by month and channel over the two years of data -- with and without the rollups,
interleaved, after one warm-up each. Both results are checked equal (same keys, floats within
1e-9), and so are the sources' first and last days (the complete flag's query) read off the
rollups and from the raw rows; the medians, their ratios and the load average are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

ROLLUPS = """\
rollups:
  contacts_daily:
    source: contacts
    dimensions: [channel, campaign]
    measures: [count(contacts)]
  leads_daily:
    source: leads
    dimensions: [channel, campaign]
    measures: [count(leads), count(leads where customer_at is not null)]
  customers_daily:
    source: customers
    dimensions: [channel, industry]
    measures: [count(customers)]
"""
KPIS = ["new_contacts", "qualified_leads", "customers_won", "ad_spend_total", "cost_per_lead", "close_rate"]


def equal(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if isinstance(u, float) or isinstance(v, float):
                if (u is None) != (v is None) or (u is not None and not math.isclose(u, v, rel_tol=1e-9)):
                    return False
            elif u != v:
                return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timezone", help="the project's time zone (default none: timestamps read as stored)")
    parser.add_argument("--cache", type=Path, help="cache folder of the warehouses (default benchmarks/.cache)")
    parser.add_argument("--tile-from", type=int, metavar="N",
                        help="the generated warehouse of N leads tiled to --leads (build_warehouse.py)")
    args = parser.parse_args(argv)

    from build_warehouse import DEFAULT_CACHE, build, tiling_error

    if tiling_error([args.leads], args.tile_from):
        parser.error(tiling_error([args.leads], args.tile_from))

    from kpi_engine.engine import open_project

    folder = build(args.leads, args.cache or DEFAULT_CACHE, tile_from=args.tile_from)
    db_file = (folder / "warehouse.duckdb").resolve()
    with tempfile.TemporaryDirectory() as temp:
        project_dir = Path(temp)
        (project_dir / "kpi_engine.yaml").write_text(
            "name: rollup_benchmark\n"
            + (f"timezone: {args.timezone}\n" if args.timezone else "") +
            f"warehouse: {{adapter: duckdb, path: {json.dumps(str(db_file))}}}\n"
            "include: [builtin:marketing]\n")
        (project_dir / "rollups.yaml").write_text(ROLLUPS)
        load = [os.getloadavg()[0]]
        with open_project(project_dir) as project:
            started = time.perf_counter()
            done = project.materialize()
            materialize_s = time.perf_counter() - started
            request = dict(grain="month", by=["channel"])
            routed = project.compile(KPIS, **request).sql()
            assert routed.count("kpi_rollups") == 3, "the request is expected to read three rollups"
            times: dict[bool, list[float]] = {True: [], False: []}
            query_times: dict[bool, list[float]] = {True: [], False: []}  # the compiled query alone
            queries = {flag: project.compile(KPIS, rollups=flag, **request).expression for flag in (True, False)}
            # the sources' first and last days (the complete flag): off the rollups, or raw
            compiled = project.compile(KPIS, **request)
            assert set(compiled.extent_rollups) == {"contacts", "leads", "customers"}, compiled.extent_rollups
            extent_times: dict[bool, list[float]] = {True: [], False: []}
            extents = {}
            connection = project.connection()
            results = {}
            for _ in range(args.rounds + 1):  # the first round warms up
                for rollups in (True, False):
                    started = time.perf_counter()
                    result = project.evaluate(KPIS, rollups=rollups, **request)
                    times[rollups].append(time.perf_counter() - started)
                    results[rollups] = sorted(result.rows, key=repr)
                    started = time.perf_counter()
                    connection.execute(queries[rollups])
                    query_times[rollups].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    extents[rollups] = project.extents(compiled.sources,
                                                       rollups=compiled.extent_rollups if rollups else None)
                    extent_times[rollups].append(time.perf_counter() - started)
                load.append(os.getloadavg()[0])
        if not equal(results[True], results[False]):
            raise SystemExit("the results with and without rollups differ")
    if extents[True] != extents[False]:
        raise SystemExit(f"the first and last days differ: {extents[True]} off the rollups, {extents[False]} raw")
    with_rollups = statistics.median(times[True][1:]) * 1000
    without = statistics.median(times[False][1:]) * 1000
    query_with = statistics.median(query_times[True][1:]) * 1000
    query_without = statistics.median(query_times[False][1:]) * 1000
    extent_with, extent_without = (statistics.median(extent_times[flag][1:]) * 1000 for flag in (True, False))
    rows = sum(d["rows"] for d in done)
    print(f"{args.leads:,} leads; {len(KPIS)} KPIs by month and channel; {args.rounds} interleaved rounds"
          + (f"; time zone {args.timezone}" if args.timezone else ""))
    print(f"materialize: {materialize_s:.2f} s for {rows:,} rollup rows "
          f"({', '.join(d['rollup'] + ' ' + format(d['rows'], ',') for d in done)})")
    print(f"evaluate without rollups: {without:.1f} ms (median)")
    print(f"evaluate with rollups:    {with_rollups:.1f} ms (median)")
    print(f"ratio: {with_rollups / without:.2f}x; results equal ({len(results[True])} rows)")
    print(f"the query alone: {query_without:.1f} ms without, {query_with:.1f} ms with rollups "
          f"({query_with / query_without:.2f}x); the rest of evaluate is compiling, reading the rollups' state "
          "and the sources' first and last days (for the complete flag)")
    print(f"the first and last days alone: {extent_without:.1f} ms from the raw rows, {extent_with:.1f} ms off the "
          f"rollups and the raw rows after them ({extent_with / extent_without:.2f}x; equal)")
    print(f"load average (1 min) during the run: {min(load):.1f} to {max(load):.1f}")


if __name__ == "__main__":
    main()

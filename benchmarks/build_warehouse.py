#!/usr/bin/env python3
"""Build (or reuse) the benchmark warehouse for a given number of lead rows.

    python benchmarks/build_warehouse.py --leads 1000000

1. Generates the example warehouse with examples/marketing/generate.py at the scale that gives
   about that many leads (row counts are proportional to --scale: about 6,970 leads per unit,
   computed from the generator's own daily rates). The generator streams CSV to disk.
2. Loads every CSV into one DuckDB database file with
   ``CREATE TABLE t AS SELECT * FROM read_csv(...)``, so benchmark queries never re-parse CSV.
3. Writes a kpi-engine project next to it (kpi_engine.yaml: the DuckDB file + builtin:marketing).

Layout of the cache (default benchmarks/.cache/<leads>/, ignored by git):

    data/*.csv            the generated CSVs (deleted after loading unless --keep-csv)
    warehouse.duckdb      the database the benchmarks query
    project/              kpi_engine.yaml pointing at ../warehouse.duckdb
    build.json            scale, seed, row counts, build times; its presence marks a complete build

A complete build is reused as is; --force rebuilds it.

Bigger warehouses by tiling (the generator takes about 37 s per million leads, so 100M would take
hours):

    python benchmarks/build_warehouse.py --leads 100000000 --tile-from 1000000

builds (or reuses) the generated warehouse of 1M leads, then writes <cache>/tiled_<leads>_from_<base>/
in which every entity table is the base table repeated K = round(leads / base) times, each copy's
keys and foreign keys shifted into a range of their own (copy c adds c x (max - min + 1) of that
key space), and each snapshot table (one row per day and dimension) keeps its rows with its
measures multiplied by K. Same days and times, K times the rows a day; see tile().
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
GENERATOR = REPO / "examples" / "marketing" / "generate.py"
SHIPPED_DATA = REPO / "examples" / "marketing" / "data"
DEFAULT_CACHE = BENCH / ".cache"
SEED = 42
TABLES = ("ad_spend", "web_sessions", "leads", "opportunities", "customers", "orders", "subscriptions",
          "email_sends", "email_list", "social_posts", "social_followers", "nps_responses")


def expected_leads_per_unit_scale() -> float:
    """Expected lead rows per unit of --scale, from the generator's own rates: leads are Poisson
    draws of LEAD_RATE[channel] x factor(day) x scale per channel and day (none where NO_LEADS)."""
    spec = importlib.util.spec_from_file_location("kpi_engine_example_generator", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return sum(rate * generator.factor(day)
               for day in range(generator.N_DAYS)
               for channel, rate in generator.LEAD_RATE.items()
               if (channel, *generator.month_of(day)) not in generator.NO_LEADS)


def scale_for(leads: int) -> float:
    return round(leads / expected_leads_per_unit_scale(), 4)


# Tiling. Every key column of an entity table, by key space: a column holding a key of another
# table (a foreign key) belongs to that table's space, so it moves with the key it points to.
# email_sends.contact_id is a contact of the email list (the generator draws it from 1..subscribers),
# a space of its own. Tables absent here are snapshots: one row per day (and dimension).
KEY_SPACES = {
    "web_sessions": {"session_id": "session"},
    "leads": {"lead_id": "lead", "customer_id": "customer"},
    "opportunities": {"opportunity_id": "opportunity", "lead_id": "lead"},
    "customers": {"customer_id": "customer", "lead_id": "lead"},
    "orders": {"order_id": "order", "customer_id": "customer"},
    "subscriptions": {"customer_id": "customer"},
    "email_sends": {"send_id": "send", "contact_id": "contact"},
    "social_posts": {"post_id": "post"},
    "nps_responses": {"response_id": "response", "customer_id": "customer"},
}
# The measures of the snapshot tables: K copies of the business hold K times the list, the
# followers and the spend of a day, in the same single row.
ROW_GROUP = 122_880  # rows in a DuckDB row group (its zone maps' unit)
SNAPSHOT_MEASURES = {
    "ad_spend": ("spend",),
    "email_list": ("subscribers", "new_subscribers", "unsubscribes"),
    "social_followers": ("followers",),
}


def cache_folder(leads: int, cache: Path = DEFAULT_CACHE, tile_from: int | None = None) -> Path:
    if tile_from is not None and tile_from != leads:
        return cache / f"tiled_{leads}_from_{tile_from}"
    return cache / str(leads)


def tile_factor(leads: int, tile_from: int) -> int:
    """K: how many copies of the base of ``tile_from`` leads make about ``leads`` leads."""
    if tile_from <= 0:
        raise ValueError("--tile-from must be positive")
    copies = round(leads / tile_from)
    if copies < 2:
        raise ValueError(f"--leads {leads} is not at least twice --tile-from {tile_from}: nothing to tile "
                         "(ask for the base size itself to use the generated warehouse)")
    return copies


def tiling_error(sizes, tile_from: int | None) -> str | None:
    """Why --tile-from cannot make one of ``sizes`` (for the scripts' argument errors), or None."""
    for leads in sizes:
        if tile_from is not None and leads != tile_from:
            try:
                tile_factor(leads, tile_from)
            except ValueError as error:
                return str(error)
    return None


def project_config(db_file: Path) -> str:
    path = os.path.relpath(db_file, db_file.parent / "project")
    return ("# Written by benchmarks/build_warehouse.py: the marketing library on the benchmark warehouse.\n"
            "name: benchmark_warehouse\n"
            f"warehouse: {{adapter: duckdb, path: {json.dumps(path)}}}\n"
            "include: [builtin:marketing]\n")


def build(leads: int, cache: Path = DEFAULT_CACHE, *, force: bool = False, keep_csv: bool = False,
          threads: int = 2, log=print, tile_from: int | None = None, memory_limit: str = "8GB") -> Path:
    """The cache folder of a complete build for ``leads`` lead rows (building it if needed).
    With ``tile_from`` (and ``leads`` not equal to it), the warehouse is the generated one of
    ``tile_from`` leads tiled; ``force`` then rebuilds the tiled warehouse only, never the base."""
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# benchmark warehouses: generated, large, never committed\n*\n")
    if tile_from is not None and tile_from != leads:
        return _build_tiled(leads, tile_from, cache, force=force, keep_csv=keep_csv, threads=threads,
                            memory_limit=memory_limit, log=log)
    folder = cache_folder(leads, cache)
    marker = folder / "build.json"
    db_file = folder / "warehouse.duckdb"
    project = folder / "project"
    if marker.is_file() and db_file.is_file() and not force:
        _write_project(project, db_file)
        log(f"reusing {folder} ({json.loads(marker.read_text())['rows']['leads']:,} leads)")
        return folder
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)

    scale = scale_for(leads)
    data = folder / "data"
    started = time.perf_counter()
    if all((data / f"{t}.csv").is_file() for t in TABLES) and (data / ".complete").is_file():
        log(f"reusing the CSVs in {data}")
    else:
        shutil.rmtree(data, ignore_errors=True)
        log(f"generating scale {scale} (~{leads:,} leads) into {data} ...")
        subprocess.run([sys.executable, str(GENERATOR), "--scale", str(scale), "--seed", str(SEED),
                        "--out", str(data)], check=True)
        (data / ".complete").write_text("")
    generated = time.perf_counter()
    log(f"  generated in {generated - started:.0f} s ({_size(data)})")

    rows = _load(data, db_file, threads, log)
    loaded = time.perf_counter()
    log(f"  loaded into {db_file.name} in {loaded - generated:.0f} s ({_size(db_file)})")
    if not keep_csv:
        shutil.rmtree(data)
    _write_project(project, db_file)
    marker.write_text(json.dumps({"leads_requested": leads, "scale": scale, "seed": SEED, "rows": rows,
                                  "generate_seconds": round(generated - started, 1),
                                  "load_seconds": round(loaded - generated, 1)}, indent=2) + "\n")
    return folder


def _load(data: Path, db_file: Path, threads: int, log) -> dict[str, int]:
    with _writing(db_file, threads) as connection:
        return {table: _create(connection, table, f"SELECT * FROM read_csv({_literal(str(data / f'{table}.csv'))})",
                               log)
                for table in TABLES}


@contextmanager
def _writing(db_file: Path, threads: int, memory_limit: str | None = None):
    """A connection to ``db_file``.partial, renamed to ``db_file`` once the block has run and the
    column types check (nothing half-written is ever found under the final name)."""
    import duckdb

    partial = db_file.with_suffix(".duckdb.partial")
    partial.unlink(missing_ok=True)
    connection = duckdb.connect(str(partial))
    try:
        connection.execute(f"PRAGMA threads={int(threads)}")
        if memory_limit:
            connection.execute(f"SET memory_limit = {_literal(memory_limit)}")  # sorts spill beyond it
        yield connection
        _check_types(connection)
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    partial.replace(db_file)


def _create(connection, table: str, select: str, log) -> int:
    connection.execute(f'CREATE TABLE "{table}" AS {select}')
    rows = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    log(f"    {table:<17} {rows:>12,} rows")
    return rows


def _build_tiled(leads: int, tile_from: int, cache: Path, *, force: bool, keep_csv: bool, threads: int,
                 memory_limit: str, log) -> Path:
    copies = tile_factor(leads, tile_from)
    folder = cache_folder(leads, cache, tile_from)
    marker = folder / "build.json"
    db_file = folder / "warehouse.duckdb"
    if marker.is_file() and db_file.is_file() and not force:
        _write_project(folder / "project", db_file)
        log(f"reusing {folder} ({json.loads(marker.read_text())['rows']['leads']:,} leads, "
            f"{copies} copies of {tile_from:,})")
        return folder
    base = build(tile_from, cache, keep_csv=keep_csv, threads=threads, log=log)
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    log(f"tiling {base} {copies} times into {db_file} ...")
    started = time.perf_counter()
    rows = tile(base / "warehouse.duckdb", db_file, copies, threads=threads, memory_limit=memory_limit, log=log)
    seconds = time.perf_counter() - started
    log(f"  tiled in {seconds:.0f} s ({_size(db_file)})")
    _write_project(folder / "project", db_file)
    marker.write_text(json.dumps({"leads_requested": leads, "tiled_from": str(base),
                                  "base": json.loads((base / "build.json").read_text()), "copies": copies,
                                  "rows": rows, "tile_seconds": round(seconds, 1),
                                  "file_bytes": db_file.stat().st_size}, indent=2) + "\n")
    return folder


def tile(base_file: Path, db_file: Path, copies: int, *, block: int | None = None, threads: int = 2,
         memory_limit: str = "8GB", log=print) -> dict[str, int]:
    """Write ``db_file``: the warehouse of ``base_file`` repeated ``copies`` times (see the module
    docstring), written to a .partial file renamed at the end; returns each table's row count.

    Row order: the base's rows in blocks of ``block`` rows (default: a DuckDB row group / copies);
    each block is written once per copy before the next block (ORDER BY block, copy, base rowid).
    A tiled row group thus spans the stretch of time of 122,880 / K base rows, as a row group of a
    generated warehouse K times bigger would, so zone maps skip as they would there; and a row's
    copies are not next to each other (K equal rows in a row would compress to a fraction of what
    real data does, and scan faster than it)."""
    if copies < 1:
        raise ValueError("copies must be at least 1")
    block = max(1, ROW_GROUP // copies) if block is None else int(block)
    rows: dict[str, int] = {}
    with _writing(db_file, threads, memory_limit) as connection:
        connection.execute(f"ATTACH {_literal(str(base_file))} AS base (READ_ONLY)")
        columns = {table: connection.execute(f'DESCRIBE base."{table}"').fetchall() for table in TABLES}
        spans = _key_spans(connection, columns)
        for table in TABLES:
            keys = KEY_SPACES.get(table, {})
            measures = SNAPSHOT_MEASURES.get(table, ())
            select = []
            for name, kind, *_ in columns[table]:
                if name in keys:
                    value = f'b."{name}" + tile.copy_index * {spans[keys[name]]}'
                elif name in measures:  # money (DOUBLE in two decimals) stays in whole cents
                    value = f'b."{name}" * {int(copies)}'
                    value = f"round({value}, 2)" if kind == "DOUBLE" else value
                else:
                    select.append(f'b."{name}"')
                    continue
                select.append(f'CAST({value} AS {kind}) AS "{name}"')
            source = f'base."{table}" AS b'
            if keys:
                source += (f" CROSS JOIN range({int(copies)}) AS tile(copy_index)"
                           f" ORDER BY b.rowid // {block}, tile.copy_index, b.rowid")
            else:
                source += " ORDER BY b.rowid"
            rows[table] = _create(connection, table, f'SELECT {", ".join(select)} FROM {source}', log)
        connection.execute("DETACH base")
    return rows


def _key_spans(connection, columns: dict[str, list]) -> dict[str, int]:
    """max - min + 1 of each key space over every column in it, so that copy c's keys (shifted by
    c x span) never meet another copy's. Refuses a table the tiling does not know: an unlisted
    *_id column would stay unshifted and join across copies."""
    bounds: dict[str, list] = {}
    for table, described in columns.items():
        names = [c[0] for c in described]
        keys = KEY_SPACES.get(table, {})
        measures = SNAPSHOT_MEASURES.get(table, ())
        unknown = [n for n in names if n.endswith("_id") and n not in keys]
        if (table in KEY_SPACES) == (table in SNAPSHOT_MEASURES) or unknown \
                or any(n not in names for n in (*keys, *measures)):
            raise SystemExit(f"cannot tile table {table} ({', '.join(names)}): build_warehouse.KEY_SPACES and "
                             "SNAPSHOT_MEASURES must list each table once, every key column of an entity table "
                             "and every measure of a snapshot table")
        for name, space in keys.items():
            low, high = connection.execute(f'SELECT min("{name}"), max("{name}") FROM base."{table}"').fetchone()
            if low is not None:
                known = bounds.setdefault(space, [low, high])
                known[0], known[1] = min(known[0], low), max(known[1], high)
    return {space: high - low + 1 for space, (low, high) in bounds.items()} | \
        {space: 1 for spaces in KEY_SPACES.values() for space in spaces.values() if space not in bounds}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _check_types(connection) -> None:
    """The sniffed column types must be those of the shipped scale-1 CSVs (which the tests use);
    a different type would make the benchmark measure something else."""
    for table in TABLES:
        shipped = SHIPPED_DATA / f"{table}.csv"
        if not shipped.is_file():
            continue
        path = str(shipped).replace("'", "''")
        expected = connection.execute(f"DESCRIBE SELECT * FROM read_csv('{path}')").fetchall()
        actual = connection.execute(f'DESCRIBE "{table}"').fetchall()
        if [(c[0], c[1]) for c in expected] != [(c[0], c[1]) for c in actual]:
            raise SystemExit(f"column types of {table} differ from the shipped data: "
                             f"{[(c[0], c[1]) for c in actual]} != {[(c[0], c[1]) for c in expected]}")


def _write_project(project: Path, db_file: Path) -> None:
    project.mkdir(parents=True, exist_ok=True)
    config = project / "kpi_engine.yaml"
    text = project_config(db_file)
    if not config.is_file() or config.read_text() != text:
        config.write_text(text)


def _size(path: Path) -> str:
    total = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{total / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000, help="lead rows wanted (default 1000000)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default benchmarks/.cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument("--keep-csv", action="store_true", help="keep the generated CSVs after loading")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads for loading (default 2)")
    parser.add_argument("--tile-from", type=int, metavar="N",
                        help="build the generated warehouse of N leads (or reuse it) and repeat it "
                             "round(leads / N) times, keys shifted, instead of generating --leads")
    parser.add_argument("--memory-limit", default="8GB", help="DuckDB memory limit while tiling (default 8GB)")
    args = parser.parse_args(argv)
    if args.leads <= 0:
        parser.error("--leads must be positive")
    if tiling_error([args.leads], args.tile_from):
        parser.error(tiling_error([args.leads], args.tile_from))
    folder = build(args.leads, args.cache, force=args.force, keep_csv=args.keep_csv, threads=args.threads,
                   tile_from=args.tile_from, memory_limit=args.memory_limit)
    print(folder)


if __name__ == "__main__":
    main()

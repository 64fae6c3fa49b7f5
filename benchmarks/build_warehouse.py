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


def cache_folder(leads: int, cache: Path = DEFAULT_CACHE) -> Path:
    return cache / str(leads)


def project_config(db_file: Path) -> str:
    path = os.path.relpath(db_file, db_file.parent / "project")
    return ("# Written by benchmarks/build_warehouse.py: the marketing library on the benchmark warehouse.\n"
            "name: benchmark_warehouse\n"
            f"warehouse: {{adapter: duckdb, path: {json.dumps(path)}}}\n"
            "include: [builtin:marketing]\n")


def build(leads: int, cache: Path = DEFAULT_CACHE, *, force: bool = False, keep_csv: bool = False,
          threads: int = 2, log=print) -> Path:
    """The cache folder of a complete build for ``leads`` lead rows (building it if needed)."""
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# benchmark warehouses: generated, large, never committed\n*\n")
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
    import duckdb

    partial = db_file.with_suffix(".duckdb.partial")
    partial.unlink(missing_ok=True)
    rows: dict[str, int] = {}
    connection = duckdb.connect(str(partial))
    try:
        connection.execute(f"PRAGMA threads={int(threads)}")
        for table in TABLES:
            csv_file = str(data / f"{table}.csv").replace("'", "''")
            connection.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_csv(\'{csv_file}\')')
            rows[table] = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            log(f"    {table:<17} {rows[table]:>12,} rows")
        _check_types(connection)
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    partial.replace(db_file)
    return rows


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
    args = parser.parse_args(argv)
    if args.leads <= 0:
        parser.error("--leads must be positive")
    folder = build(args.leads, args.cache, force=args.force, keep_csv=args.keep_csv, threads=args.threads)
    print(folder)


if __name__ == "__main__":
    main()

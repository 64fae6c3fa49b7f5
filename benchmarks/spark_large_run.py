#!/usr/bin/env python3
"""One large run of the whole KPI library on Spark: a standalone cluster of two workers, Spark's
local mode, and DuckDB, over the same Parquet files.

    python benchmarks/spark_large_run.py --leads 10000000

1. Builds (or reuses) the benchmark warehouse of that many leads (build_warehouse.py) and writes
   each of its tables as one Parquet file, with DuckDB, into ``<cache>/<leads>/parquet/``.
2. Evaluates the whole library by month and channel (one query, as ``kpi-engine evaluate --all
   --by channel --grain month``) three ways, each reading the Parquet folder as ``data:``:
   DuckDB; Spark in local mode (``master: local[2]``); and Spark on a standalone cluster started on
   127.0.0.1 for the run (a master and two workers of one core each, tests/spark_cluster.py), the
   driver in this process and the two executors reading the files.
3. Prints, per run, the time to open the warehouse (start the Spark application), the query's wall
   time, the executors and the tasks each ran, and the load average before and after; checks that
   the three results are the same (NULL = NULL, numbers within 1e-9 relative) and exits with status
   1 if not. The figures also go to ``<cache>/<leads>/spark_cluster.json``.

Needs PySpark (``pip install -e '.[spark]'``) and Java 17+. One run each: Spark's start-up and
JIT warm-up are part of what a user waits for on a cluster, so the first run is the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))  # spark_cluster.py: the cluster the tests start

import build_warehouse  # noqa: E402
from run import BY, GRAIN, Mismatch, compare, load_average  # noqa: E402
from spark_cluster import LocalCluster, application_executors, free_port  # noqa: E402

#: Settings of both Spark runs: as many shuffle partitions as the cores times four (Spark's default
#: of 200 makes every small stage slow), UTC, no progress bars.
SPARK_CONFIG = {"spark.sql.shuffle.partitions": "8", "spark.ui.showConsoleProgress": "false"}


def write_parquet(folder: Path) -> tuple[Path, dict[str, int]]:
    """Each table of the warehouse as <table>.parquet (reused when complete); rows per table."""
    import duckdb

    out = folder / "parquet"
    done = out / "rows.json"
    if done.is_file():
        return out, json.loads(done.read_text())
    out.mkdir(exist_ok=True)
    connection = duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True)
    rows = {}
    for table in build_warehouse.TABLES:
        target = str(out / f"{table}.parquet").replace("'", "''")
        connection.execute(f"COPY \"{table}\" TO '{target}' (FORMAT parquet)")
        rows[table] = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    connection.close()
    done.write_text(json.dumps(rows, indent=2) + "\n")
    return out, rows


def project_folder(root: Path, warehouse: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "kpi_engine.yaml").write_text(f"name: spark_benchmark\nwarehouse: {json.dumps(warehouse)}\n"
                                          "include: ['builtin:marketing']\n")
    return root


def timed(name: str, root: Path, ui_port: int | None = None) -> dict:
    """Open the project (starting Spark), evaluate the library once, close; the figures."""
    from kpi_engine.engine import open_project

    before = load_average()
    started = time.perf_counter()
    project = open_project(root)
    try:
        project.connection()
        opened = time.perf_counter()
        names = list(project.project.kpis)
        result = project.evaluate(names, by=BY, grain=GRAIN)
        done = time.perf_counter()
        executors = None
        if ui_port is not None:
            executors = {e["id"]: e["totalTasks"] for e in application_executors(ui_port)}
    finally:
        project.close()
    figures = {"run": name, "open_s": round(opened - started, 1), "query_s": round(done - opened, 1),
               "rows": len(result.rows), "kpis": len(names), "executors": executors,
               "load_before": before, "load_after": load_average()}
    print(f"{name:<28} open {figures['open_s']:>6.1f} s   query {figures['query_s']:>7.1f} s   "
          f"{figures['rows']} rows   executors {executors}   {before} -> {figures['load_after']}", flush=True)
    return {**figures, "result": result}


def measure(data: Path, scratch: Path, memory: str) -> list[dict]:
    """DuckDB, Spark local mode, then Spark on a fresh two-worker cluster: the figures of each."""
    runs = [timed("DuckDB (2 threads)", project_folder(scratch / "duckdb", {"adapter": "duckdb", "data": str(data)}))]
    ui_port = free_port()
    runs.append(timed("Spark local[2]", project_folder(scratch / "local", {
        "adapter": "spark", "master": "local[2]", "data": str(data),
        "config": {**SPARK_CONFIG, "spark.driver.memory": memory, "spark.ui.port": ui_port}}), ui_port))

    with LocalCluster(scratch / "cluster", workers=2, worker_cores=1, worker_memory=memory) as cluster:
        began = time.perf_counter()
        cluster.start()
        print(f"cluster: master and 2 workers up in {time.perf_counter() - began:.1f} s", flush=True)
        ui_port = free_port()
        runs.append(timed("Spark cluster (2 x 1 core)", project_folder(scratch / "cluster-project", {
            "adapter": "spark", "master": cluster.master_url, "data": str(data),
            "config": {**SPARK_CONFIG, "spark.executor.memory": memory, "spark.executor.cores": "1",
                       "spark.cores.max": "2", "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                       "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                       "spark.ui.port": ui_port}}), ui_port))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=10_000_000, help="lead rows (default 10000000)")
    parser.add_argument("--cache", type=Path, default=build_warehouse.DEFAULT_CACHE)
    parser.add_argument("--memory", default="2g", help="memory of each executor, and of the local-mode driver (2g)")
    args = parser.parse_args(argv)

    folder = build_warehouse.build(args.leads, args.cache)
    data, rows = write_parquet(folder)
    print(f"Parquet: {data} ({rows['leads']:,} leads, {sum(rows.values()):,} rows in {len(rows)} files)")
    scratch = Path(tempfile.mkdtemp(prefix="kpi-spark-bench-"))
    try:
        runs = measure(data, scratch, args.memory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    reference = runs[0]["result"]
    status = 0
    for run in runs[1:]:
        try:
            compare(run["run"], reference.names, reference.rows, run["result"].names, run["result"].rows)
        except Mismatch as error:
            print(error)
            status = 1
    report = {"leads": rows["leads"], "rows": rows, "cpus": os.cpu_count(), "same_results": status == 0,
              "runs": [{k: v for k, v in run.items() if k != "result"} for run in runs]}
    (folder / "spark_cluster.json").write_text(json.dumps(report, indent=2) + "\n")
    print("results equal DuckDB's" if status == 0 else "RESULTS DIFFER")
    sys.exit(status)


if __name__ == "__main__":
    main()

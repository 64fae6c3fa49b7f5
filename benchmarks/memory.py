"""Peak memory of an evaluate as the warehouse grows: does it stay flat?

    python benchmarks/memory.py                        # 100k and 1M leads (build_warehouse.py)
    python benchmarks/memory.py --sizes 100000,1000000,3000000

For each warehouse size, each request below runs in a fresh child process, in two ways:

- ``api``: ``KpiProject.evaluate`` -> a ``Result`` whose rows are a Python list (what a
  notebook gets);
- ``file``: ``KpiProject.stream`` -> ``output.write_stream`` to a CSV file, batch by batch (what
  ``kpi-engine evaluate ... --output FILE.csv`` does).

The requests:

- ``dashboard``: every library KPI that has a channel, by channel and month (a few hundred rows
  of aggregates whatever the size: the warehouse's own memory is what grows);
- ``detail``: new contacts and leads by day, campaign, channel, industry and company size (the
  rows grow with the data: the case where streaming matters).

Each child reports its resident memory after importing kpi-engine and opening the project
(``base``) and its peak (``peak``, VmHWM: the high-water mark of this process alone, reset by
exec, so the benchmark's own memory is never counted). ``peak - base`` is what the request cost.
The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]  # this checkout's kpi_engine, not an installed one

import build_warehouse  # noqa: E402  (benchmarks/build_warehouse.py)

REQUESTS = {
    "dashboard": {"by": ["channel"], "grain": "month"},
    "detail": {"kpis": ["new_contacts", "qualified_leads"],
               "by": ["campaign", "channel", "industry", "company_size"], "grain": "day"},
}

# Run in a fresh interpreter: prints {"base": MiB, "peak": MiB, "rows": n, "seconds": s}.
_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])

def memory(field):  # MiB, from this process's own status (Linux)
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")

from kpi_engine.engine import open_project
from kpi_engine.output import write_stream

project_folder, mode, request, output = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
with open_project(project_folder) as project:
    model = project.model()
    kpis = request.pop("kpis", None) or [name for name in project.project.kpis
                                         if "channel" in model.kpi(name).dimensions]
    base = memory("VmRSS")
    started = time.perf_counter()
    if mode == "api":
        rows = len(project.evaluate(kpis, **request).rows)
    else:
        query, batches = project.stream(kpis, **request)
        rows = write_stream("csv", query.columns, batches, output)
    seconds = time.perf_counter() - started
print(json.dumps({"base": base, "peak": memory("VmHWM"), "rows": rows, "seconds": seconds}))
"""


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def measure(project: Path, mode: str, request: dict, output: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(project), mode, json.dumps(request),
                           str(output)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {mode} run failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated lead counts (default 100k, 1M)")
    parser.add_argument("--requests", default=",".join(REQUESTS), help="which requests (default: all)")
    parser.add_argument("--cache", type=Path, default=build_warehouse.DEFAULT_CACHE,
                        help="cache folder of the warehouses (default benchmarks/.cache)")
    parser.add_argument("--tile-from", type=int, metavar="N",
                        help="sizes other than N: the generated warehouse of N leads tiled (build_warehouse.py)")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    chosen = [name.strip() for name in args.requests.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in REQUESTS]
    if unknown or not sizes:
        parser.error(f"unknown request {unknown[0]!r}" if unknown else "give at least one size")
    if build_warehouse.tiling_error(sizes, args.tile_from):
        parser.error(build_warehouse.tiling_error(sizes, args.tile_from))
    folders = {leads: build_warehouse.build(leads, args.cache, log=lambda text: None, tile_from=args.tile_from)
               for leads in sizes}
    print(f"# Peak memory of an evaluate (MiB; one child process per row; load average {load_average()})")
    print(f"{'leads':>10}  {'request':<10} {'mode':<5} {'rows':>9}  {'base':>7}  {'peak':>7}  {'peak-base':>9}  "
          f"{'seconds':>7}")
    output = args.cache / "memory_output.csv"
    try:
        for leads, folder in folders.items():
            for name in chosen:
                for mode in ("api", "file"):
                    found = measure(folder / "project", mode, dict(REQUESTS[name]), output)
                    print(f"{leads:>10,}  {name:<10} {mode:<5} {found['rows']:>9,}  {found['base']:7.1f}  "
                          f"{found['peak']:7.1f}  {found['peak'] - found['base']:9.1f}  {found['seconds']:7.2f}",
                          flush=True)
    finally:
        output.unlink(missing_ok=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()

"""A bounded load test of `kpi-engine serve` on 127.0.0.1.

Starts the server as its own process (as in production), then N client threads, each on one
keep-alive connection, send POST /v1/query for a fixed time: a share of them from a small set of
requests (served from the cache once warm), the rest with random KPIs, splits, grains and date
windows (practically never asked twice, so computed by the warehouse). It reports throughput,
p50/p99 latency per kind, status codes and cache statuses; then checks the answers: every
answer to one request must be the same, and those of the fixed requests and of a random sample
of the others must equal `project.evaluate` for the same request, computed in this process.

    python benchmarks/serve_load.py                          # 50 clients, 60 s, examples/marketing
    python benchmarks/serve_load.py --clients 10 --duration 5 --json result.json

Traffic goes to 127.0.0.1 only; the loop stops by itself after --duration seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kpi_engine import open_project  # noqa: E402
from kpi_engine.output import _json_value  # noqa: E402
from kpi_engine.serve.models import QueryRequest  # noqa: E402

MARKETING_KPIS = [["cost_per_lead"], ["new_contacts", "ad_spend_total"], ["close_rate", "customers_won"],
                  ["cost_per_lead", "new_contacts"]]
FIXED_MARKETING = [
    {"kpis": ["cost_per_lead"], "by": ["channel"], "grain": "month", "from": "2025-01-01", "to": "2025-07-01"},
    {"kpis": ["new_contacts", "ad_spend_total"], "grain": "quarter"},
    {"kpis": ["close_rate"], "by": ["channel"], "from": "2024-07-01", "to": "2025-07-01"},
    {"kpis": ["cost_per_lead", "new_contacts"], "grain": "week", "from": "2025-03-03", "to": "2025-06-02"},
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(project: Path, port: int, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_ENGINE_")}
    process = subprocess.Popen([sys.executable, "-m", "kpi_engine.cli", "serve", str(project), "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}; see its log")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not become ready within 60 s")


def random_request(rng: random.Random, kpi_sets, dimensions, first: dt.date, days: int) -> dict:
    """A request that is practically never repeated: a random window of 7 to 180 days."""
    start = first + dt.timedelta(days=rng.randrange(days))
    end = start + dt.timedelta(days=rng.randrange(7, 181))
    request = {"kpis": list(rng.choice(kpi_sets)), "grain": rng.choice(["week", "month", "quarter"]),
               "from": start.isoformat(), "to": end.isoformat()}
    if dimensions and rng.random() < 0.5:
        request["by"] = [rng.choice(dimensions)]
    return request


def run(project: Path, *, clients: int, duration: float, cached_share: float, fixed: list[dict], kpi_sets,
        dimensions, first: dt.date, days: int, verify_sample: int = 200, seed: int = 7) -> dict:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = start_server(project, port, log)
        try:
            for request in fixed:  # warm the cache with the fixed requests
                post(http.client.HTTPConnection("127.0.0.1", port, timeout=60), request)
            results = load(port, clients, duration, cached_share, fixed, kpi_sets, dimensions, first, days, seed)
        finally:
            server.terminate()  # SIGTERM: uvicorn's graceful shutdown
            server.wait(30)
    report = summarise(results, duration, clients)
    report.update(verify(project, results, fixed, verify_sample, seed))
    report["server_exit_code"] = server.returncode
    return report


def post(conn: http.client.HTTPConnection, request: dict) -> tuple[int, str | None, bytes]:
    conn.request("POST", "/v1/query", json.dumps(request), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.getheader("X-KPI-Cache"), response.read()


def load(port, clients, duration, cached_share, fixed, kpi_sets, dimensions, first, days, seed) -> list[tuple]:
    deadline = time.monotonic() + duration
    results: list[tuple] = []  # (kind, request json, status, cache, latency s, body)
    lock = threading.Lock()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        while time.monotonic() < deadline:
            fixed_kind = rng.random() < cached_share
            request = rng.choice(fixed) if fixed_kind else random_request(rng, kpi_sets, dimensions, first, days)
            started = time.perf_counter()
            try:
                status, cache, body = post(conn, request)
            except (OSError, http.client.HTTPException) as error:
                status, cache, body = 0, None, str(error).encode()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append(("fixed" if fixed_kind else "random", json.dumps(request, sort_keys=True), status, cache,
                         time.perf_counter() - started, body))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))] if ordered else float("nan")


def summarise(results, duration: float, clients: int) -> dict:
    latencies = defaultdict(list)
    for kind, _, status, _, latency, _ in results:
        if status == 200:
            latencies[kind].append(latency * 1000)
            latencies["all"].append(latency * 1000)
    return {"clients": clients, "duration_s": duration, "requests": len(results),
            "throughput_rps": round(len(results) / duration, 1),
            "statuses": dict(Counter(str(r[2]) for r in results)),
            "cache": dict(Counter(f"{r[0]}:{r[3]}" for r in results)),
            "latency_ms": {kind: {"p50": round(percentile(v, 0.5), 1), "p99": round(percentile(v, 0.99), 1),
                                  "mean": round(statistics.fmean(v), 1), "count": len(v)}
                           for kind, v in sorted(latencies.items())},
            "errors": sum(1 for r in results if r[2] != 200)}


def _rows_key(rows: list[dict]) -> str:
    """The rows as one text, in a fixed order: the same answer gives the same text."""
    return json.dumps(sorted(json.dumps(row, sort_keys=True) for row in rows))


def same_rows(got: list[dict], expected: list[dict]) -> bool:
    """Equal rows, numbers to 1e-9 relative: the warehouse may add floats in another order
    from one run to the next (DuckDB sums in parallel)."""
    def order(rows):
        return sorted(rows, key=lambda row: json.dumps({k: v for k, v in row.items() if not isinstance(v, float)},
                                                       sort_keys=True))

    if len(got) != len(expected):
        return False
    for a, b in zip(order(got), order(expected)):
        if a.keys() != b.keys():
            return False
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None or not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                    return False
            elif x != y:
                return False
    return True


def verify(project: Path, results, fixed: list[dict], sample: int, seed: int) -> dict:
    """Compare answers with ``project.evaluate`` for the same request."""
    answers: dict[str, dict[str, list[dict]]] = defaultdict(dict)  # request -> distinct answers
    for _, request, status, _, _, body in results:
        if status == 200:
            rows = json.loads(body)["rows"]
            answers[request][_rows_key(rows)] = rows
    inconsistent = [request for request, bodies in answers.items()
                    if any(not same_rows(rows, next(iter(bodies.values()))) for rows in bodies.values())]
    fixed_keys = {json.dumps(r, sort_keys=True) for r in fixed}
    others = sorted(set(answers) - fixed_keys)
    chosen = sorted(fixed_keys & set(answers)) + random.Random(seed).sample(others, min(sample, len(others)))
    wrong = []
    with open_project(project) as reference:
        for text in chosen:
            request = QueryRequest.model_validate(json.loads(text))
            result = reference.evaluate(list(request.kpis), **request.evaluate_options())
            expected = json.loads(json.dumps([{k: _json_value(v) for k, v in row.items()}
                                              for row in result.to_dicts()]))
            if not all(same_rows(rows, expected) for rows in answers[text].values()):
                wrong.append(text)
    return {"distinct_requests": len(answers), "verified_requests": len(chosen), "wrong_answers": len(wrong),
            "inconsistent_answers": len(inconsistent), "wrong_examples": wrong[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT / "examples" / "marketing")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (at most 600)")
    parser.add_argument("--cached-share", type=float, default=0.5, help="share of requests from the fixed set")
    parser.add_argument("--verify-sample", type=int, default=200, help="random requests checked against evaluate")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if not 0 < args.duration <= 600 or not 0 < args.clients <= 200:
        raise SystemExit("--duration must be in (0, 600] seconds and --clients in 1..200")
    report = run(args.project, clients=args.clients, duration=args.duration, cached_share=args.cached_share,
                 fixed=FIXED_MARKETING, kpi_sets=MARKETING_KPIS, dimensions=["channel"], first=dt.date(2024, 1, 1),
                 days=700, verify_sample=args.verify_sample)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if report["errors"] or report["wrong_answers"] or report["inconsistent_answers"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""kpi-engine benchmarks: the engine's SQL against hand-written SQL, side by side, in DuckDB.

    python benchmarks/run.py                       # 1M leads (builds the warehouse on first use)
    python benchmarks/run.py --sizes 1000000,10000000 --rounds 7

Sections (see benchmarks/README.md):

1. queries      per KPI group, the engine's query and the hand-written one (benchmarks/handwritten)
                run alternately on the same read-only DuckDB connection; medians, and the results
                are checked equal in the same run (the script fails if they are not). Then the
                whole library as one engine query against the four hand-written queries.
1b. sidebyside  twelve marketing queries (benchmarks/sidebyside.py): the engine's SQL against the
                best hand-written SQL, ratio per query and their geometric mean.
2. compile      compile latency of every library KPI, and a synthetic project of 2,000 KPIs.
3. start-up     wall time of `kpi-engine --help` and `kpi-engine list examples/marketing`.
4. memory       peak RSS of `kpi-engine evaluate --all` at each size against the shipped example.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]  # this checkout's kpi_engine, not an installed one

import build_warehouse  # noqa: E402  (benchmarks/build_warehouse.py)

EXAMPLE = REPO / "examples" / "marketing"
HANDWRITTEN = BENCH / "handwritten"

# The KPI groups, in the catalogue's order; each has a hand-written query handwritten/<group>.sql.
GROUPS: dict[str, tuple[str, ...]] = {
    "funnel": ("new_contacts", "qualified_leads", "mql_count", "sql_count", "cost_per_lead", "close_rate",
               "lead_to_customer_rate", "lead_to_opportunity_rate", "time_to_conversion_days",
               "traffic_to_lead_rate", "leads_per_customer", "customer_acquisition_cost", "cost_per_sale",
               "lead_value"),
    "revenue": ("revenue", "revenue_growth_rate", "customer_lifetime_value", "ltv_to_cac", "mrr", "arr", "roi",
                "customer_retention_rate", "repeat_customer_revenue"),
    "email": ("email_list_size", "email_open_rate", "email_click_through_rate", "inbox_placement_rate",
              "unsubscribe_rate", "list_growth_rate", "list_churn_rate"),
    "web_social": ("website_sessions", "organic_sessions", "bounce_rate", "avg_session_duration", "social_shares",
                   "social_engagement", "follower_growth_rate", "nps"),
}
BY, GRAIN = ["channel"], "month"
REL_TOL, ABS_TOL = 1e-9, 1e-12  # abs only so that an exact 0 can meet a 1e-15 rounding residue


class Mismatch(Exception):
    pass


# ----------------------------------------------------------------------------- helpers

def say(text: str = "") -> None:
    print(text, flush=True)


def median(values) -> float:
    return statistics.median(values)


def p95(values) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def kpi_engine_command() -> list[str]:
    script = Path(sys.executable).with_name("kpi-engine")
    return [str(script)] if script.exists() else [shutil.which("kpi-engine") or "kpi-engine"]


def machine() -> None:
    import duckdb
    import sqlglot

    import kpi_engine

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    say(f"machine : {cpu}, {os.cpu_count()} cores, {ram} RAM, {platform.system()} {platform.release()}")
    say(f"versions: Python {platform.python_version()}, duckdb {duckdb.__version__}, sqlglot {sqlglot.__version__}, "
        f"kpi-engine {kpi_engine.__version__}")
    say(f"run at  : {dt.datetime.now().isoformat(timespec='seconds')}")


# ----------------------------------------------------------------------------- result checks

def same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    numbers = (int, float, Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return a == b


def key_order(key):
    period, channel = key
    return (period, channel is None, channel or "")


def compare(what: str, columns_a, rows_a, columns_b, rows_b, *, keys_must_match: bool = True) -> None:
    """Raise Mismatch unless B has A's keys and, on them, the same value in every column of B
    (NULL = NULL; numbers within REL_TOL relative). With keys_must_match, the key sets are equal."""
    problems: list[str] = []
    index_a = {name: i for i, name in enumerate(columns_a)}
    absent = [c for c in columns_b if c not in index_a]
    if keys_must_match and list(columns_a) != list(columns_b):
        problems.append(f"columns differ:\n    engine      {list(columns_a)}\n    hand-written {list(columns_b)}")
    elif absent:
        problems.append(f"columns missing on the engine side: {absent}")
    by_key_a = {tuple(r[:2]): r for r in rows_a}
    by_key_b = {tuple(r[:2]): r for r in rows_b}
    if len(by_key_a) != len(rows_a) or len(by_key_b) != len(rows_b):
        problems.append("duplicate (period, channel) keys")
    only_a = sorted(by_key_a.keys() - by_key_b.keys(), key=key_order)
    only_b = sorted(by_key_b.keys() - by_key_a.keys(), key=key_order)
    if only_b:
        problems.append(f"{len(only_b)} key(s) only in the hand-written result, e.g. {only_b[:3]}")
    if only_a and keys_must_match:
        problems.append(f"{len(only_a)} key(s) only in the engine's result, e.g. {only_a[:3]}")
    if not absent:
        differences = 0
        for key in sorted(by_key_a.keys() & by_key_b.keys(), key=key_order):
            row_a, row_b = by_key_a[key], by_key_b[key]
            for j, name in enumerate(columns_b[2:], 2):
                if not same_value(row_a[index_a[name]], row_b[j]):
                    differences += 1
                    if differences <= 10:
                        problems.append(f"{key[0]} {key[1]!r} {name}: engine {row_a[index_a[name]]!r} "
                                        f"!= hand-written {row_b[j]!r}")
        if differences > 10:
            problems.append(f"... {differences} differing values in all")
    if problems:
        raise Mismatch(f"RESULTS DIFFER: {what}\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------- 1. queries

class Timing:
    """Wall (time.perf_counter) and process CPU (time.process_time: every DuckDB thread of this
    process) seconds of the runs of one query. CPU time barely moves when other processes
    compete for the cores; wall time does, so both are printed."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, connection, sql: str):
        cpu, wall = time.process_time(), time.perf_counter()
        cursor = connection.execute(sql)
        rows = cursor.fetchall()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return [d[0] for d in cursor.description], rows

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def medians(self) -> tuple[float, float]:
        return median(self.wall), median(self.cpu)


def row(name: str, kpis, rows, engine: tuple[float, float], hand: tuple[float, float], note: str = "") -> str:
    return (f"{name:<12} {kpis:>4} {rows:>6} {ms(engine[0]):>10} {ms(hand[0]):>10} {engine[0] / hand[0]:>6.2f}x"
            f"   {ms(engine[1]):>10} {ms(hand[1]):>10} {engine[1] / hand[1]:>6.2f}x{note}")


def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def query_benchmark(leads: int, rounds: int, cache: Path) -> dict:
    import duckdb

    from kpi_engine.engine import open_project

    folder = build_warehouse.build(leads, cache, log=lambda text: say(f"  {text}"))
    info = json.loads((folder / "build.json").read_text())
    db_file = folder / "warehouse.duckdb"
    rows_text = ", ".join(f"{t} {n:,}" for t, n in info["rows"].items())
    size = db_file.stat().st_size / 2**20
    say(f"\n## 1. Queries at {info['rows']['leads']:,} leads (scale {info['scale']}; {size:,.0f} MiB DuckDB file)")
    say(f"tables: {rows_text}")

    # The engine's SQL, as `kpi-engine evaluate` sends it: the warehouse is described (column
    # types known) and the query rendered in the duckdb dialect by the adapter.
    with open_project(folder / "project") as project:
        engine_sql = {group: project.compile(list(kpis), by=BY, grain=GRAIN).expression.sql(dialect="duckdb")
                      for group, kpis in GROUPS.items()}
        library = [k for kpis in GROUPS.values() for k in kpis]
        library_sql = project.compile(library, by=BY, grain=GRAIN).expression.sql(dialect="duckdb")
    hand_sql = {group: (HANDWRITTEN / f"{group}.sql").read_text() for group in GROUPS}

    connection = duckdb.connect(str(db_file), read_only=True)
    connection.execute("PRAGMA threads=2")
    say(f"{rounds} timed runs of each query after one warm-up, engine and hand-written alternating on one "
        f"read-only connection, PRAGMA threads=2, medians; results checked equal in every run (same keys; "
        f"floats within {REL_TOL:g} relative; NULL = NULL). {load_average()} before")
    say("")
    header = (f"{'':<12} {'':>4} {'':>6} {'-------- wall (perf_counter) --------':>30}"
              f"   {'------ CPU (process_time) ------':>30}")
    header2 = (f"{'group':<12} {'KPIs':>4} {'rows':>6} {'engine ms':>10} {'hand ms':>10} {'ratio':>7}"
               f"   {'engine ms':>10} {'hand ms':>10} {'ratio':>7}")
    say(header)
    say(header2)
    say("-" * len(header2))
    results = {}
    hand_results = {}
    for group, kpis in GROUPS.items():
        engine, hand = Timing(), Timing()
        engine_columns, engine_rows = Timing().run(connection, engine_sql[group])  # warm-up
        hand_columns, hand_rows = Timing().run(connection, hand_sql[group])
        compare(f"{group} (warm-up)", engine_columns, engine_rows, hand_columns, hand_rows)
        for i in range(rounds):
            for side in (("engine", "hand") if i % 2 == 0 else ("hand", "engine")):
                if side == "engine":
                    engine_columns, engine_rows = engine.run(connection, engine_sql[group])
                else:
                    hand_columns, hand_rows = hand.run(connection, hand_sql[group])
            compare(f"{group} (run {i + 1})", engine_columns, engine_rows, hand_columns, hand_rows)
        hand_results[group] = (hand_columns, hand_rows)
        results[group] = (engine.medians, hand.medians)
        say(row(group, len(kpis), len(engine_rows), engine.medians, hand.medians))
    total_e = tuple(sum(e[i] for e, _ in results.values()) for i in (0, 1))
    total_h = tuple(sum(h[i] for _, h in results.values()) for i in (0, 1))
    say("-" * len(header2))
    say(row("overall", sum(len(k) for k in GROUPS.values()), "", total_e, total_h, "   (sums of the medians)"))

    # The whole library: one engine query for all the KPIs against the four hand-written queries.
    library_timing, hand_total = Timing(), Timing()
    library_columns, library_rows = Timing().run(connection, library_sql)
    for i in range(rounds):
        def run_library():
            library_timing.run(connection, library_sql)

        def run_hand():
            each = Timing()
            for g in GROUPS:
                each.run(connection, hand_sql[g])
            hand_total.add(sum(each.wall), sum(each.cpu))

        for step in ((run_library, run_hand) if i % 2 == 0 else (run_hand, run_library)):
            step()
    # Each group's hand-written values must be the library query's on the group's keys; the
    # library's keys are the union of the groups' keys (it reads every table the groups read).
    union = set()
    for group, (columns, rows) in hand_results.items():
        compare(f"whole library vs hand-written {group}", library_columns, library_rows, columns, rows,
                keys_must_match=False)
        union |= {tuple(r[:2]) for r in rows}
    if union != {tuple(r[:2]) for r in library_rows}:
        raise Mismatch("RESULTS DIFFER: the whole-library query's keys are not the union of the groups' keys")
    say(row("library", len(library), len(library_rows), library_timing.medians, hand_total.medians))
    say(f"  (library: the engine computes all {len(library)} KPIs in ONE query; hand: the 4 group queries back to "
        f"back; values checked equal to the groups' on every key. {load_average()} after)")
    connection.close()
    return {"groups": results, "library": (library_timing.medians, hand_total.medians), "folder": folder}


# ----------------------------------------------------------------------------- 2. compile latency

def library_project(cache: Path) -> Path:
    """A project with only the library, on the shipped example data (compiling needs no warehouse)."""
    folder = cache / "library_project"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kpi_engine.yaml").write_text(
        "name: library_only\n"
        f"warehouse: {{adapter: duckdb, data: {json.dumps(str(EXAMPLE / 'data'))}}}\n"
        "include: [builtin:marketing]\n")
    return folder


def compile_latency(rounds: int, cache: Path) -> None:
    from kpi_engine.engine import open_project

    folder = library_project(cache)
    say(f"\n## 2. Compile latency ({rounds} rounds after a warm-up; each round: a fresh KpiProject, "
        f"model(describe=False) once, then every library KPI compiled alone with by=['channel'], grain='month', "
        f"describe=False, and rendered with .sql())")
    load_times, resolve_times, round_times = [], [], []
    per_kpi: dict[str, list[float]] = {}
    for r in range(rounds + 1):
        started = time.perf_counter()
        project = open_project(folder)
        loaded = time.perf_counter()
        model = project.model(describe=False)
        resolved = time.perf_counter()
        for name in model.kpis:
            t0 = time.perf_counter()
            project.compile([name], by=BY, grain=GRAIN, describe=False).sql()
            if r:
                per_kpi.setdefault(name, []).append(time.perf_counter() - t0)
        finished = time.perf_counter()
        project.close()
        if r:
            load_times.append(loaded - started)
            resolve_times.append(resolved - loaded)
            round_times.append(finished - started)
    every = [t for times in per_kpi.values() for t in times]
    say(f"load project (YAML + schema)  median {ms(median(load_times))} ms   p95 {ms(p95(load_times))} ms")
    say(f"resolve model (parse + check) median {ms(median(resolve_times))} ms   p95 {ms(p95(resolve_times))} ms")
    say(f"compile + render, per KPI     median {ms(median(every))} ms   p95 {ms(p95(every))} ms   "
        f"({len(per_kpi)} KPIs x {rounds} rounds)")
    say(f"whole round ({len(per_kpi)} KPIs)        median {ms(median(round_times))} ms   p95 {ms(p95(round_times))} ms")
    say("")
    say("per KPI (compile + render, ms):")
    names = list(per_kpi)
    half = (len(names) + 1) // 2
    cell = "{:<26} {:>6} {:>6}"
    say(cell.format("KPI", "median", "p95") + "    " + cell.format("KPI", "median", "p95"))
    for i in range(half):
        parts = []
        for name in (names[i], names[i + half] if i + half < len(names) else None):
            if name:
                parts.append(cell.format(name[:26], ms(median(per_kpi[name])), ms(p95(per_kpi[name]))))
        say("    ".join(parts))


# Synthetic project: 2,000 KPIs over the library's sources.
ATOMS = (  # (formula template, snapshot?) -- {n} is a random threshold
    ("count(leads)", False),
    ("count(leads where is_qualified)", False),
    ("count(leads where customer_at is not null and is_qualified)", False),
    ("count(leads where industry = '{industry}')", False),
    ("count(leads where company_size in ('1-10', '11-50') and channel in ('ppc', 'email', 'content'))", False),
    ("count(leads where days_between(created_at, mql_at) <= {n})", False),
    ("count(contacts at mql_at where industry = '{industry}')", False),
    ("count(contacts at sql_at)", False),
    ("sum(ad_spend.spend)", False),
    ("sum(ad_spend.spend where spend > {n})", False),
    ("count(customers where plan = '{plan}')", False),
    ("sum(orders.amount where status = 'paid' and amount > {n})", False),
    ("sum(orders.amount where product = '{product}')", False),
    ("avg(orders.amount where status = 'paid')", False),
    ("count(web_sessions where duration_seconds > {n})", False),
    ("count(web_sessions where is_bounce and landing_page = '{page}')", False),
    ("avg(web_sessions.duration_seconds)", False),
    ("sum(web_sessions.pages_viewed where pages_viewed >= {small})", False),
    ("count(email_sends where opened and not bounced)", False),
    ("count(email_sends where clicked)", False),
    ("count(nps_responses where score >= {score})", False),
    ("sum(social_posts.likes + social_posts.shares where likes > {small})", False),
    ("count(opportunities where stage = 'won')", False),
    ("sum(opportunities.amount where amount > {n})", False),
    ("avg(days_between(contacts.created_at, contacts.customer_at) at customer_at)", False),
    ("count(leads where count(opportunities per lead_id) > {small})", False),
    ("last(subscriptions.mrr where plan = '{plan}')", True),
    ("last(subscriptions)", True),
    ("last(email_list.subscribers)", True),
)
LIBRARY_REFERENCES = ("new_contacts", "cost_per_lead", "revenue", "customers_won", "website_sessions", "close_rate",
                      "ad_spend_total", "lead_value", "emails_sent")


def synthetic_project(cache: Path, count: int) -> tuple[Path, dict[str, int]]:
    """Write a project of ``count`` KPIs (plus the library it includes). Deterministic.

    Mix: about 30% filtered aggregates (counts with filters, sums, averages, per-entity
    conditions, month-end snapshots), 25% ratios of earlier synthetic KPIs, 10% ratios inside
    one formula, 10% references to library KPIs, and 25% time functions: previous() growth,
    cumulative() (all time or year to date) and rolling() windows. References only reach KPIs
    of depth <= 2, so no formula grows without bound."""
    folder = cache / f"synthetic_{count}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "kpi_engine.yaml").write_text(
        f"name: synthetic_{count}\n"
        f"warehouse: {{adapter: duckdb, data: {json.dumps(str(EXAMPLE / 'data'))}}}\n"
        "include: [builtin:marketing]\n")
    rng = random.Random(count)
    values = {"industry": ("software", "retail", "healthcare", "education"), "plan": ("starter", "pro", "enterprise"),
              "product": ("seat_pack", "training", "onboarding"), "page": ("/", "/pricing", "/blog", "/demo")}
    kpis: list[tuple[str, str, str]] = []  # (name, formula, unit)
    mix: dict[str, int] = {}
    info: dict[str, tuple[int, bool, bool]] = {}  # name -> (depth, snapshot, has time function)

    def atom() -> tuple[str, bool]:
        template, snapshot = rng.choice(ATOMS)
        formula = template.format(n=rng.randint(1, 400), small=rng.randint(1, 4), score=rng.randint(6, 10),
                                  **{k: rng.choice(v) for k, v in values.items()})
        return formula, snapshot

    def pick(plain: bool = False, additive: bool = False) -> str | None:
        candidates = [k for k, (depth, snapshot, timefn) in info.items()
                      if depth <= 2 and not (plain and timefn) and not (additive and (snapshot or timefn))]
        return rng.choice(candidates[-300:]) if candidates else None

    for i in range(count):
        name = f"syn_{i:04d}"
        kind = rng.random() if i >= 20 else 0.0
        if kind < 0.30:
            formula, snapshot = atom()
            entry, unit, kind_name = (0, snapshot, False), "count", "filtered aggregate"
        elif kind < 0.55:
            a, b = pick(), pick()
            formula = f"100 * {a} / {b}"
            entry = (1 + max(info[a][0], info[b][0]), info[a][1] or info[b][1], info[a][2] or info[b][2])
            unit, kind_name = "percent", "ratio of KPIs"
        elif kind < 0.65:
            (top, s1), (bottom, s2) = atom(), atom()
            formula = f"({top}) / ({bottom})"
            entry, unit, kind_name = (0, s1 or s2, False), "ratio", "ratio of aggregates"
        elif kind < 0.75:
            a = pick()
            formula = f"{a} * {rng.choice(LIBRARY_REFERENCES)} / nullif({rng.choice(LIBRARY_REFERENCES)}, 0)"
            entry, unit, kind_name = (1 + info[a][0], info[a][1], info[a][2]), "ratio", "uses library KPIs"
        elif kind < 0.85:
            a = pick(plain=True)
            formula = f"100 * ({a} - previous({a})) / previous({a})"
            entry, unit, kind_name = (1 + info[a][0], info[a][1], True), "percent", "previous()"
        elif kind < 0.95:
            a = pick(plain=True, additive=True)
            formula = rng.choice((f"cumulative({a})", f"cumulative({a}, 'year')"))
            entry, unit, kind_name = (1 + info[a][0], False, True), "count", "cumulative()"
        else:
            a = pick(plain=True, additive=True)
            formula = f"rolling({a}, {rng.randint(2, 6)})"
            entry, unit, kind_name = (1 + info[a][0], False, True), "count", "rolling()"
        info[name] = entry
        mix[kind_name] = mix.get(kind_name, 0) + 1
        kpis.append((name, formula, unit))

    per_file = 200
    for f in range(0, count, per_file):
        lines = [f"# Synthetic KPIs {f} to {min(count, f + per_file) - 1}, generated by benchmarks/run.py.", "kpis:"]
        for name, formula, unit in kpis[f:f + per_file]:
            lines += [f"  {name}:", f"    label: Synthetic KPI {name[4:]}", f"    unit: {unit}",
                      f"    formula: {json.dumps(formula)}"]
        (folder / f"kpis_{f // per_file:02d}.yaml").write_text("\n".join(lines) + "\n")
    return folder, mix


def synthetic_benchmark(cache: Path, count: int, rounds: int) -> None:
    from kpi_engine.engine import open_project

    folder, mix = synthetic_project(cache, count)
    say(f"\n## 2b. Synthetic project: {count:,} KPIs in {len(list(folder.glob('kpis_*.yaml')))} files over the "
        f"library's sources (+ the library's KPIs), {rounds} rounds")
    say("mix: " + ", ".join(f"{n} {k}" for k, n in mix.items()))
    loads, resolves, compiles, totals, each = [], [], [], [], []
    slowest = (0.0, "")
    compiled = 0
    for _ in range(rounds):
        started = time.perf_counter()
        project = open_project(folder)
        loaded = time.perf_counter()
        model = project.model(describe=False)
        resolved = time.perf_counter()
        names = [n for n in model.kpis if n.startswith("syn_")]
        for name in names:
            t0 = time.perf_counter()
            project.compile([name], by=BY, grain=GRAIN, describe=False).sql()
            each.append(time.perf_counter() - t0)
            slowest = max(slowest, (each[-1], name))
        finished = time.perf_counter()
        project.close()
        compiled = len(names)
        loads.append(loaded - started)
        resolves.append(resolved - loaded)
        compiles.append(finished - resolved)
        totals.append(finished - started)
    say(f"load_project            median {median(loads):7.2f} s")
    say(f"resolve (model)         median {median(resolves):7.2f} s")
    say(f"compile + render all    median {median(compiles):7.2f} s   ({compiled:,} KPIs, "
        f"per KPI: median {ms(median(each))} ms, p95 {ms(p95(each))} ms, max {ms(max(each))} ms)")
    say(f"end to end              median {median(totals):7.2f} s")
    with open_project(folder) as project:
        formula = project.project.kpis[slowest[1]].formula
    say(f"slowest compile: {slowest[1]} ({ms(slowest[0])} ms once): {' '.join(str(formula).split())}")
    command = kpi_engine_command() + ["validate", str(folder), "--offline"]
    walls = []
    for _ in range(rounds):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"`kpi-engine validate --offline` failed on the synthetic project:\n"
                             f"{done.stdout}{done.stderr}")
    say(f"kpi-engine validate --offline (subprocess)  median {median(walls):7.2f} s")


# ----------------------------------------------------------------------------- 3. start-up

def startup(runs: int) -> None:
    say(f"\n## 3. Start-up (wall time of a subprocess, median of {runs} runs after a warm-up)")
    for args in (["--help"], ["list", str(EXAMPLE)]):
        command = kpi_engine_command() + args
        subprocess.run(command, capture_output=True, check=True)
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            walls.append(time.perf_counter() - started)
        shown = "kpi-engine " + " ".join(a if not a.startswith("/") else os.path.relpath(a, REPO) for a in args)
        say(f"{shown:<36} median {ms(median(walls)):>7} ms   p95 {ms(p95(walls)):>7} ms")


# ----------------------------------------------------------------------------- 4. memory

# Runs COMMAND as its own child and prints that child's peak RSS (KiB) and wall time. It is a
# separate small process because on Linux a child's ru_maxrss starts at the RSS of the process
# that forked it (exec records the forked copy's high-water mark): measured from this script,
# which holds DuckDB buffers by now, every child would report at least this script's size.
_RSS_PROBE = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - started
sys.stderr.write(done.stderr.decode(errors="replace"))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, wall, done.returncode)
"""


def _probe(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of COMMAND, run as the only child of a small process."""
    probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, *command], capture_output=True, text=True)
    try:
        kib, wall, code = probe.stdout.split()
    except ValueError:
        code = "?"
    if probe.returncode != 0 or code != "0":
        raise SystemExit(f"{' '.join(command)} failed:\n{probe.stdout}{probe.stderr}")
    return int(kib) / 1024, float(wall)  # ru_maxrss is in KiB on Linux


# The same query without kpi-engine: bare DuckDB in Python, rows fetched, for a baseline.
_BARE_DUCKDB = """
import duckdb, sys
connection = duckdb.connect(sys.argv[1], read_only=True)
with open(sys.argv[2]) as handle:
    connection.execute(handle.read()).fetchall()
"""


def memory(projects: list[tuple[str, Path, Path | None]], cache: Path) -> None:
    from kpi_engine.engine import open_project

    say("\n## 4. Memory: peak RSS of `kpi-engine evaluate PROJECT --all --by channel --grain month --format csv "
        "--output FILE` (one child process each); baseline: the same SQL run by bare DuckDB in Python")
    output = cache / "evaluate_output.csv"
    query_file = cache / "evaluate_all.sql"
    for label, project, db_file in projects:
        command = kpi_engine_command() + ["evaluate", str(project), "--all", "--by", "channel", "--grain", "month",
                                          "--format", "csv", "--output", str(output)]
        rss, wall = _probe(command)
        with output.open() as handle:
            rows = sum(1 for _ in handle) - 1
        say(f"{label:<44} peak RSS {rss:7.1f} MiB   wall {wall:6.2f} s   {rows:,} rows written")
        if db_file is not None:
            with open_project(project) as kpi_project:  # --all with --by channel: every KPI qualifies
                names = [n for n in kpi_project.project.kpis if "channel" in kpi_project.model().kpi(n).dimensions]
                query_file.write_text(kpi_project.compile(names, by=BY, grain=GRAIN).expression.sql(dialect="duckdb"))
            rss, wall = _probe([sys.executable, "-c", _BARE_DUCKDB, str(db_file), str(query_file)])
            say(f"{'  the same query in bare DuckDB (baseline)':<44} peak RSS {rss:7.1f} MiB   wall {wall:6.2f} s")
    output.unlink(missing_ok=True)
    query_file.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000",
                        help="comma-separated lead counts of the warehouses (default 1000000)")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs per query (default 7)")
    parser.add_argument("--compile-rounds", type=int, default=20, help="rounds of the compile benchmark (default 20)")
    parser.add_argument("--synthetic-kpis", type=int, default=2000, help="KPIs of the synthetic project (default 2000)")
    parser.add_argument("--synthetic-rounds", type=int, default=3, help="rounds of the synthetic benchmark (default 3)")
    parser.add_argument("--startup-runs", type=int, default=10, help="runs of each start-up command (default 10)")
    parser.add_argument("--cache", type=Path, default=build_warehouse.DEFAULT_CACHE,
                        help="cache folder (default benchmarks/.cache)")
    parser.add_argument("--only", default="queries,sidebyside,compile,startup,memory",
                        help="sections to run (default: queries,sidebyside,compile,startup,memory)")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    sections = {s.strip() for s in args.only.split(",")}
    if args.rounds < 1 or not sizes:
        parser.error("need at least one size and one round")

    say("# kpi-engine benchmarks")
    machine()
    say(f"command : python benchmarks/run.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    folders = []
    try:
        for leads in sizes:
            if "queries" in sections:
                folders.append(query_benchmark(leads, args.rounds, args.cache)["folder"])
            elif "memory" in sections:
                folders.append(build_warehouse.build(leads, args.cache, log=lambda text: None))
            if "sidebyside" in sections:
                sys.modules.setdefault("run", sys.modules[__name__])  # sidebyside's `import run` is this module
                import sidebyside  # benchmarks/sidebyside.py: it uses this module's helpers and Mismatch

                sidebyside.suite(leads, args.rounds, args.cache)
    except Mismatch as mismatch:
        say("")
        say(str(mismatch))
        raise SystemExit(1) from None
    if "compile" in sections:
        compile_latency(args.compile_rounds, args.cache)
        synthetic_benchmark(args.cache, args.synthetic_kpis, args.synthetic_rounds)
    if "startup" in sections:
        startup(args.startup_runs)
    if "memory" in sections:
        projects = [("shipped example (examples/marketing, CSV)", EXAMPLE, None)]
        for folder in folders:
            leads = json.loads((folder / "build.json").read_text())["rows"]["leads"]
            projects.append((f"{leads:,} leads (DuckDB file)", folder / "project", folder / "warehouse.duckdb"))
        memory(projects, args.cache)


if __name__ == "__main__":
    main()

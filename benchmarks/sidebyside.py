#!/usr/bin/env python3
"""The side-by-side suite: twelve marketing queries, the engine's SQL against hand-written DuckDB SQL.

    python benchmarks/sidebyside.py                          # 1M leads (builds the warehouse on first use)
    python benchmarks/sidebyside.py --sizes 1000000,10000000 --rounds 9
    python benchmarks/sidebyside.py --shapes                 # also time every other hand-written shape
    python benchmarks/sidebyside.py --explain roi            # EXPLAIN ANALYZE of both sides of one query
    python benchmarks/sidebyside.py --variants               # the engine's SQL edited as compiler fixes would
    python benchmarks/sidebyside.py --variants --only conversion_30d   # one query alone (also for the suite)
    python benchmarks/sidebyside.py --sizes 1000000,10000000,100000000 --tile-from 1000000   # tiled (below)
    python benchmarks/run.py --only sidebyside               # the same suite as a section of run.py

Each query is compiled from a project (the marketing library plus benchmarks/sidebyside/definitions)
as `kpi-engine evaluate` sends it, and run beside the hand-written query
benchmarks/sidebyside/<query>.sql on one read-only DuckDB connection, in interleaved rounds; the
results are compared in every round (floats within 1e-9 relative). Other shapes of the same query,
benchmarks/sidebyside/<query>.<shape>.sql, are what was tried before keeping <query>.sql; --shapes
times them too. Prints medians of wall and CPU time, the ratio engine / hand-written per query and
their geometric mean, and the paired ratio of CPU time (each round's engine / hand, the rounds
with the engine first and second weighed alike: steadier when the machine's speed drifts). With
--tile-from N, every size other than N is the generated warehouse of N leads repeated
(build_warehouse.py --tile-from). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import median

BENCH = Path(__file__).resolve().parent
SUITE = BENCH / "sidebyside"
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # this checkout's kpi_engine, not an installed one

import build_warehouse  # noqa: E402
import run  # noqa: E402  (benchmarks/run.py: timing, result checks, printing)


@dataclass(frozen=True)
class Query:
    name: str       # benchmarks/sidebyside/<name>.sql holds the hand-written query
    title: str
    kpis: tuple[str, ...]
    by: str
    grain: str


QUERIES = (
    Query("cost_per_lead", "cost per lead", ("cost_per_lead",), "channel", "month"),
    Query("close_rate", "close rate", ("close_rate",), "channel", "month"),
    Query("nps", "NPS", ("nps",), "channel", "month"),
    Query("roi", "ROI", ("roi",), "channel", "month"),
    Query("mom_growth", "lead growth, month over month", ("lead_growth_rate",), "channel", "month"),
    Query("cumulative", "leads to date (all-time cumulative)", ("leads_to_date",), "channel", "month"),
    Query("spend_30d", "spend, trailing 30 days, by day", ("spend_30d",), "channel", "day"),
    Query("spend_mtd", "spend, month to date, by day", ("spend_mtd",), "channel", "day"),
    Query("lead_to_customer_30d", "30-day lead-to-customer conversion", ("lead_to_customer_30d",), "channel",
          "month"),
    Query("quarter_by_group", "4 KPIs by quarter through the channel table",
          ("cost_per_lead", "lead_to_customer_rate", "revenue", "roi"), "channel_group", "quarter"),
    Query("engaged_30d", "distinct openers, trailing 30 days, by month", ("engaged_contacts_30d",), "campaign",
          "month"),
    Query("conversion_30d", "opportunities within 30 days (conversion source)", ("lead_to_opportunity_30d",),
          "channel", "month"),
)

# The channel table the quarter query reaches through relationships (channel -> channel_group).
CHANNELS = (("ppc", "paid"), ("paid_social", "paid"), ("email", "owned"), ("content", "owned"),
            ("organic", "earned"), ("referral", "earned"))


# ----------------------------------------------------------------------------- setup

def prepare(leads: int, cache: Path, log=run.say, tile_from: int | None = None) -> tuple[Path, Path]:
    """(build folder, project folder): the warehouse of ``leads`` rows with a ``channels`` table
    added, and a project over it: the library plus the suite's definitions."""
    folder = build_warehouse.build(leads, cache, log=lambda text: log(f"  {text}"), tile_from=tile_from)
    return folder, suite_project(folder / "warehouse.duckdb", folder / "sidebyside_project")


def suite_project(db_file: Path, project: Path) -> Path:
    """Add the ``channels`` table to the DuckDB file (once) and write the suite's project for it
    into ``project``: kpi_engine.yaml on the file, the library, the suite's definitions."""
    import duckdb

    connection = duckdb.connect(str(db_file))
    try:
        if not connection.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_name = 'channels'").fetchone()[0]:
            connection.execute("CREATE TABLE channels (channel VARCHAR PRIMARY KEY, channel_group VARCHAR)")
            connection.executemany("INSERT INTO channels VALUES (?, ?)", CHANNELS)
            connection.execute("CHECKPOINT")
    finally:
        connection.close()
    project.mkdir(parents=True, exist_ok=True)
    (project / "kpi_engine.yaml").write_text(
        "# Written by benchmarks/sidebyside.py: the library and the side-by-side suite's definitions.\n"
        "name: sidebyside\n"
        f"warehouse: {{adapter: duckdb, path: {json.dumps(os.path.relpath(db_file, project))}}}\n"
        "include: [builtin:marketing]\n")
    for spec in (SUITE / "definitions").glob("*.yaml"):  # in the project itself: they override library sources
        shutil.copyfile(spec, project / spec.name)
    return project


def engine_queries(project: Path) -> dict[str, str]:
    """Each query's SQL as `kpi-engine evaluate` sends it: warehouse described, duckdb dialect."""
    from kpi_engine.engine import open_project

    with open_project(project) as kpi_project:
        return {q.name: kpi_project.compile(list(q.kpis), by=[q.by], grain=q.grain).expression.sql(dialect="duckdb")
                for q in QUERIES}


def hand_shapes(query: Query) -> dict[str, str]:
    """The hand-written shapes of a query: 'hand' (<name>.sql, the one kept) first, then each
    <name>.<shape>.sql that was tried."""
    shapes = {"hand": (SUITE / f"{query.name}.sql").read_text()}
    for path in sorted(SUITE.glob(f"{query.name}.*.sql")):
        shapes[path.name[len(query.name) + 1:-len(".sql")]] = path.read_text()
    return shapes


def round_order(sides: list[str], i: int) -> list[str]:
    """The order of the sides in round i: rotated by one each round, and reversed every other
    cycle of rotations, so each side runs first, and after each other side, equally often. (The
    first run of a round costs more; with two sides, rotating and reversing in the same round
    cancelled out and put the engine first in every round until December 2026.)"""
    shift = i % len(sides)
    rotated = sides[shift:] + sides[:shift]
    return rotated[::-1] if (i // len(sides)) % 2 else rotated


def paired_ratio(engine: list[float], hand: list[float], engine_first: list[bool]) -> float:
    """engine / hand from each round's two runs, taken one after the other, so a drift of the
    machine's speed during the run (seen here as 5% between minutes) moves both alike and cancels
    out, where it moves a ratio of two medians. The run that comes first in a round costs more, so
    the rounds where the engine ran first and those where it ran second each give their median
    ratio, and the paired ratio is the geometric mean of the two."""
    ratios = [e / h for e, h in zip(engine, hand, strict=True)]
    first = [r for r, flag in zip(ratios, engine_first, strict=True) if flag]
    second = [r for r, flag in zip(ratios, engine_first) if not flag]
    if not first or not second:
        raise ValueError("a paired ratio needs rounds with the engine first and rounds with it second")
    return math.sqrt(median(first) * median(second))


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


# ----------------------------------------------------------------------------- the suite

def suite(leads: int, rounds: int, cache: Path, *, shapes: bool = False, markdown: Path | None = None,
          only: set[str] | None = None, tile_from: int | None = None) -> dict:
    import duckdb

    folder, project = prepare(leads, cache, tile_from=tile_from)
    info = json.loads((folder / "build.json").read_text())
    db_file = folder / "warehouse.duckdb"
    engine_sql = engine_queries(project)
    queries = [q for q in QUERIES if not only or q.name in only]
    connection = duckdb.connect(str(db_file), read_only=True)
    connection.execute("PRAGMA threads=2")
    loads = [os.getloadavg()[0]]
    tiled = f", {info['copies']} copies of {info['base']['rows']['leads']:,} leads" if "copies" in info else ""
    run.say(f"\n## Side by side at {info['rows']['leads']:,} leads ({db_file.stat().st_size / 2**20:,.0f} MiB "
            f"DuckDB file{tiled}): {len(queries)} queries, engine vs hand-written")
    run.say(f"{rounds} rounds after one warm-up; in each round every side runs once, in an order that "
            f"rotates; PRAGMA threads=2; medians; results checked equal in every round. {run.load_average()} before")
    header = (f"{'query':<22} {'by':<24} {'rows':>5} {'engine ms':>10} {'hand ms':>9} {'ratio':>6}"
              f"   {'engine CPU':>10} {'hand CPU':>9} {'ratio':>6} {'paired':>7}")
    run.say("")
    run.say(header)
    run.say("-" * len(header))
    results, paired = {}, {}
    for query in queries:
        sides = {"engine": engine_sql[query.name], **hand_shapes(query)}
        if not shapes:
            sides = {k: sides[k] for k in ("engine", "hand")}
        timings = {side: run.Timing() for side in sides}
        columns, rows = run.Timing().run(connection, sides["engine"])  # warm-up, checked too
        for side in list(sides)[1:]:
            other = run.Timing().run(connection, sides[side])
            run.compare(f"{query.name}: engine vs {side} (warm-up)", columns, rows, *other)
        order = list(sides)
        for i in range(rounds):
            outputs = {side: timings[side].run(connection, sides[side]) for side in round_order(order, i)}
            for side in order[1:]:
                run.compare(f"{query.name}: engine vs {side} (round {i + 1})", *outputs["engine"], *outputs[side])
        loads.append(os.getloadavg()[0])
        medians = {side: t.medians for side, t in timings.items()}
        results[query.name] = medians
        engine_first = [(o := round_order(order, i)).index("engine") < o.index("hand") for i in range(rounds)]
        paired[query.name] = paired_ratio(timings["engine"].cpu, timings["hand"].cpu, engine_first)
        engine, hand = medians["engine"], medians["hand"]
        by = f"{query.by} x {query.grain}"
        run.say(f"{query.name:<22} {by:<24} {len(rows):>5} {run.ms(engine[0]):>10} {run.ms(hand[0]):>9} "
                f"{engine[0] / hand[0]:>5.2f}x   {run.ms(engine[1]):>10} {run.ms(hand[1]):>9} "
                f"{engine[1] / hand[1]:>5.2f}x {paired[query.name]:>6.2f}x")
        for side in order[2:]:
            other = medians[side]
            run.say(f"{'  shape ' + side:<47} {'':>10} {run.ms(other[0]):>9} {engine[0] / other[0]:>5.2f}x   "
                    f"{'':>10} {run.ms(other[1]):>9} {engine[1] / other[1]:>5.2f}x")
    connection.close()
    run.say("-" * len(header))
    wall = geometric_mean(m["engine"][0] / m["hand"][0] for m in results.values())
    cpu = geometric_mean(m["engine"][1] / m["hand"][1] for m in results.values())
    cpu_paired = geometric_mean(paired.values())
    run.say(f"{'geometric mean of the ratios':<64} {wall:>5.2f}x   {'':>21}{cpu:>5.2f}x {cpu_paired:>6.2f}x")
    if shapes:
        fastest = {name: tuple(min(v[i] for k, v in m.items() if k != "engine") for i in (0, 1))
                   for name, m in results.items()}
        wall_f = geometric_mean(results[n]["engine"][0] / f[0] for n, f in fastest.items())
        cpu_f = geometric_mean(results[n]["engine"][1] / f[1] for n, f in fastest.items())
        run.say(f"{'  against the fastest shape of each query':<64} {wall_f:>5.2f}x   {'':>21}{cpu_f:>5.2f}x")
    over = [n for n, m in results.items() if m["engine"][1] / m["hand"][1] > 1.05]
    over_paired = [n for n, ratio in paired.items() if ratio > 1.05]
    run.say(f"1-minute load average during the run: {min(loads):.2f} to {max(loads):.2f} "
            f"({run.load_average()} after)")
    run.say(f"over 1.05x (CPU): {', '.join(over) if over else 'none'}; paired: "
            f"{', '.join(over_paired) if over_paired else 'none'}")
    summary = {"leads": info["rows"]["leads"], "rows": info["rows"], "rounds": rounds, "results": results,
               "geomean": (wall, cpu), "paired": paired, "geomean_paired": cpu_paired,
               "load": (min(loads), max(loads)),
               "size_mib": db_file.stat().st_size / 2**20, "fastest": (wall_f, cpu_f) if shapes else None}
    if markdown is not None:
        write_markdown(markdown, summary)
    return summary


def write_markdown(path: Path, summary: dict) -> None:
    """Append the run's table to ``path`` in the form docs/performance.md shows."""
    titles = {q.name: q for q in QUERIES}
    lines = [f"**{summary['leads']:,} leads** ({summary['size_mib']:,.0f} MiB DuckDB file), {summary['rounds']} rounds, "
             f"1-minute load average {summary['load'][0]:.2f} to {summary['load'][1]:.2f} during the run:", "",
             "| Query | By | Engine ms | Hand ms | Ratio (wall) | Engine CPU ms | Hand CPU ms | Ratio (CPU) | Paired (CPU) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, medians in summary["results"].items():
        (ew, ec), (hw, hc) = medians["engine"], medians["hand"]
        q = titles[name]
        lines.append(f"| {q.title} (`{name}`) | {q.by}, {q.grain} | {ew * 1000:,.1f} | {hw * 1000:,.1f} | "
                     f"{ew / hw:.2f}x | {ec * 1000:,.1f} | {hc * 1000:,.1f} | {ec / hc:.2f}x | "
                     f"{summary['paired'][name]:.2f}x |")
    wall, cpu = summary["geomean"]
    lines.append(f"| **geometric mean** | | | | **{wall:.2f}x** | | | **{cpu:.2f}x** | "
                 f"**{summary['geomean_paired']:.2f}x** |")
    if summary["fastest"]:
        wall_f, cpu_f = summary["fastest"]
        lines.append(f"| geometric mean against the fastest hand-written shape of each query | | | | {wall_f:.2f}x "
                     f"| | | {cpu_f:.2f}x | |")
    lines.append("")
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


def variants(leads: int, rounds: int, cache: Path, only: set[str] | None = None,
             tile_from: int | None = None) -> None:
    """Time the engine's SQL edited into the shape a proposed compiler change would produce
    (engine_variants.py), beside the engine's and the hand-written query; results checked equal."""
    import duckdb

    import engine_variants

    folder, project = prepare(leads, cache, tile_from=tile_from)
    engine_sql = engine_queries(project)
    connection = duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True)
    connection.execute("PRAGMA threads=2")
    run.say(f"\n## Engine variants at {leads:,} leads: {rounds} rounds, CPU medians (wall in brackets). "
            f"{run.load_average()}")
    by_query: dict[str, list] = {}
    for variant in engine_variants.VARIANTS:
        if only and variant.query not in only:
            continue
        by_query.setdefault(variant.query, []).append(variant)
    for name, group in by_query.items():
        query = next(q for q in QUERIES if q.name == name)
        sides = {"engine": engine_sql[name], "hand": hand_shapes(query)["hand"]}
        for variant in group:
            try:
                sides[variant.name] = variant.edit(engine_sql[name])
            except engine_variants.NotApplicable as why:
                run.say(f"{name}: {variant.name} does not apply to the engine's SQL any more ({why})")
        timings = {side: run.Timing() for side in sides}
        columns, rows = run.Timing().run(connection, sides["engine"])
        for side in list(sides)[1:]:
            run.compare(f"{name}: engine vs {side}", columns, rows, *run.Timing().run(connection, sides[side]))
        order = list(sides)
        for i in range(rounds):
            for side in (order if i % 2 == 0 else order[::-1]):
                timings[side].run(connection, sides[side])
        hand = timings["hand"].medians
        run.say(f"\n{name}")
        for side in order:
            wall, cpu = timings[side].medians
            change = next((f"   {v.change}" for v in group if v.name == side), "")
            run.say(f"  {side:<24} {run.ms(cpu):>9} ms ({run.ms(wall):>9})  {cpu / hand[1]:5.2f}x hand{change}")
    connection.close()


def explain(leads: int, cache: Path, name: str, shape: str = "hand", tile_from: int | None = None) -> None:
    """EXPLAIN ANALYZE of the engine's query and a hand-written shape (for finding what costs)."""
    import duckdb

    query = next((q for q in QUERIES if q.name == name), None)
    if query is None:
        raise SystemExit(f"unknown query {name!r}; the suite's queries: {', '.join(q.name for q in QUERIES)}")
    folder, project = prepare(leads, cache, tile_from=tile_from)
    sql = {"engine": engine_queries(project)[name], shape: hand_shapes(query)[shape]}
    connection = duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True)
    connection.execute("PRAGMA threads=2")
    for side, text in sql.items():
        connection.execute(text).fetchall()  # warm
        plan = json.loads(connection.execute("EXPLAIN (ANALYZE, FORMAT json) " + text).fetchall()[0][1])
        run.say(f"\n===== {name}: {side}\n{text}\n")
        run.say(f"{'operator (CPU seconds of all threads, rows out)':<60}")
        for line in operator_lines(plan["operator"]):
            run.say(line)
    connection.close()


def operator_lines(operators: list, depth: int = 0):
    """One line per operator of a JSON profile: indented by depth, with its time, rows and the
    most telling details (table, groups, aggregates, join condition, CTE name)."""
    for op in operators:
        info = op.get("extra_info") or {}
        details = []
        for key in ("Table", "CTE Name", "CTE Index", "Join Type", "Conditions", "Groups", "Aggregates",
                    "Filters", "Function"):
            if key in info:
                value = info[key]
                value = "; ".join(value) if isinstance(value, list) else str(value)
                details.append(f"{key}: {' '.join(value.split())[:140]}")
        yield (f"{'  ' * depth}{op['name']:<{max(1, 34 - 2 * depth)}} {op.get('timing', 0) * 1000:8.1f} ms "
               f"{op.get('operator_cardinality', op.get('intermediate_rows', 0)):>10,} rows  {' | '.join(details)}")
        yield from operator_lines(op.get("children", []), depth + 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated lead counts (default 1000000)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per query (default 9)")
    parser.add_argument("--shapes", action="store_true", help="also time every other hand-written shape")
    parser.add_argument("--markdown", type=Path, help="append each size's table to this file as markdown")
    parser.add_argument("--explain", metavar="QUERY", help="print EXPLAIN ANALYZE of the engine's and the hand SQL")
    parser.add_argument("--shape", default="hand", help="with --explain: the hand-written shape (default hand)")
    parser.add_argument("--variants", action="store_true",
                        help="time the engine's SQL edited as proposed compiler changes would (engine_variants.py)")
    parser.add_argument("--only", metavar="QUERIES", help="comma-separated query names: run only those")
    parser.add_argument("--cache", type=Path, default=build_warehouse.DEFAULT_CACHE,
                        help="cache folder (default benchmarks/.cache)")
    parser.add_argument("--tile-from", type=int, metavar="N",
                        help="sizes other than N: the generated warehouse of N leads tiled (build_warehouse.py)")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if args.rounds < 1 or not sizes:
        parser.error("need at least one size and one round")
    if build_warehouse.tiling_error(sizes, args.tile_from):
        parser.error(build_warehouse.tiling_error(sizes, args.tile_from))
    only = {name.strip() for name in args.only.split(",") if name.strip()} if args.only else None
    unknown = sorted((only or set()) - {q.name for q in QUERIES})
    if unknown:
        parser.error(f"unknown query {unknown[0]!r}; the suite's queries: {', '.join(q.name for q in QUERIES)}")
    if args.explain:
        explain(sizes[0], args.cache, args.explain, args.shape, tile_from=args.tile_from)
        return
    if args.variants:
        for leads in sizes:
            variants(leads, args.rounds, args.cache, only, tile_from=args.tile_from)
        return
    run.say("# kpi-engine side-by-side suite")
    run.machine()
    run.say(f"command : python benchmarks/sidebyside.py {' '.join(argv if argv is not None else sys.argv[1:])}"
            .rstrip())
    try:
        for leads in sizes:
            suite(leads, args.rounds, args.cache, shapes=args.shapes, markdown=args.markdown, only=only,
                  tile_from=args.tile_from)
    except run.Mismatch as mismatch:
        run.say("")
        run.say(str(mismatch))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

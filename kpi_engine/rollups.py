"""Rollups: day totals of a source by chosen dimensions, materialized ahead of requests.

A rollup (``rollups:`` in a spec file) names a source, dimensions and additive measures. ``kpi-engine
materialize`` computes its day totals with the engine's own grouping of that source (SourceReader
at grain day: the same ``where:``, ``map:``, time zone and relationship joins as any request) and
writes them to a table, with a row in a state table saying which days are materialized.

A request whose aggregates on the source are all among a rollup's measures, and whose dimensions
and --where are among its dimensions, reads the day totals instead of the raw rows: sums of counts
and sums, minimum of minimums, maximum of maximums, grouped into the requested periods. Days after
the last materialized one are read from the raw rows and added (UNION ALL), so an answer is never
staler than the raw table; in a project with a time zone they are also bounded on the stored time
(``SourceReader.stored_bound``), so that a scan skips the materialized rows. The engine reads the state and
hands it to the compiler (``RollupRoutes``); the compiler never queries.

The first and last day of a source's data (the ``complete`` flag, a series' ends: completeness.py)
are read the same way when every grouping of the source in a request reads a rollup: the rollup's
first and last day, with the raw rows after its last materialized day (and before its first, if it
was materialized from a later day). They are then those of the rows the request counts (a day
deleted upstream after materializing still counts in both until a refresh recomputes it); any raw
grouping of the source keeps the raw rows' own extent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from sqlglot import exp

from . import nodes as n
from .calendar import DATE_PARTS, cast
from .errors import KpiEngineError, ProjectInvalid, SpecError, UsageError, did_you_mean
from .plan import formula
from .resolve import Model, dimension_paths, resolve_formula
from .source_sql import PERIOD, SourcePlan, SourceRead, SourceReader, is_date_part
from .sql_build import bound, col, compile_common, date_literal, ident, number, qualified_table, table_ref

ADDITIVE = ("count", "sum", "min", "max")  # day totals add up to any period's total
# Grains whose periods are whole days (custom calendars' too): day totals can be cut into them.
WHOLE_DAYS = ("day", "week", "month", "quarter", "year", "fiscal_quarter", "fiscal_year")
DAY = "day"  # the rollup table's day column
LOCAL_ALIAS = "kpi_rollups"  # the local store, attached to a DuckDB warehouse under this name
LOCAL_FILE = Path(".kpi_engine") / "rollups.duckdb"
STATE_TABLE = "kpi_rollup_state"
DEFAULT_LOOKBACK = 3
ROLLED_UP = "rolled_up"  # the FROM alias of the day rows a routed source is grouped from


@dataclass(frozen=True)
class Rollup:
    """A resolved rollup: its stored aggregates (an avg is kept as its sum and its count) and the
    column of each."""

    name: str
    source: str
    dimensions: tuple[str, ...]
    measures: tuple[tuple[n.Aggregate, str], ...]
    table: str
    store: str  # "local" or "warehouse"
    lookback_days: int

    def column(self, agg: n.Aggregate) -> str | None:
        return dict(self.measures).get(agg)

    @property
    def relation(self) -> exp.Table:
        table = qualified_table(self.table)
        if self.store == "local":  # the attached file's default schema
            table.set("catalog", ident(LOCAL_ALIAS))
            if table.args.get("db") is None:
                table.set("db", ident("main"))
        return table


def components(agg: n.Aggregate) -> list[n.Aggregate] | None:
    """The stored aggregates ``agg`` is computed from (None: it does not add up across days)."""
    if agg.per is not None or agg.fraction is not None:
        return None
    if agg.func in ADDITIVE:
        return [agg]
    if agg.func == "avg":
        return [replace(agg, func="sum"), replace(agg, func="count")]
    return None


_NOT_ADDITIVE = {
    "count_distinct": "distinct counts do not add up across days (one contact on two days is one contact)",
    "last": "a snapshot is taken at one time of the period, not added up over its days",
    "first": "a snapshot is taken at one time of the period, not added up over its days",
}


def resolve_rollups(model: Model) -> tuple[dict[str, Rollup], list[KpiEngineError]]:
    """Every rollup of the project checked against the model; the sound ones and the errors
    (each at the file, line and column of what is wrong)."""
    rollups: dict[str, Rollup] = {}
    errors: list[KpiEngineError] = []
    for name, spec in model.project.rollups.items():
        found = _resolve(model, spec, errors)
        if found is not None:
            rollups[name] = found
    tables: dict[tuple[str, str], str] = {}
    for rollup in list(rollups.values()):
        if rollup.table.split(".")[-1].lower() == STATE_TABLE:
            errors.append(SpecError(f"rollup '{rollup.name}' would write to '{rollup.table}', the table that records "
                                    "what is materialized.", model.project.rollups[rollup.name].where(key=True),
                                    "Rename the rollup, or give it a 'table:'."))
            continue
        key = (rollup.store, rollup.table.lower())
        if key in tables:
            errors.append(SpecError(f"rollups '{tables[key]}' and '{rollup.name}' write to the same table "
                                    f"'{rollup.table}'.", model.project.rollups[rollup.name].where("table"),
                                    "Give one of them another 'table:'."))
        tables[key] = rollup.name
    return rollups, errors


def _resolve(model: Model, spec, errors: list[KpiEngineError]) -> Rollup | None:
    body, name = spec.body, spec.name
    before = len(errors)

    def error(message: str, hint: str, *path) -> None:
        errors.append(SpecError(message, spec.where(*path), hint))

    source = model.sources.get(body["source"])
    if source is None:
        error(f"unknown source '{body['source']}'.", did_you_mean(body["source"], model.sources) or
              "Name a source declared under 'sources:'.", "source")
        return None
    why = ("it has no time column" if not source.time else
           "it is an interval source (time_end): its rows are spread over periods, not days" if source.time_end else
           "it is a conversion source, built from two others at query time" if source.conversion else
           "it is a time axis of another source: roll up that source" if source.axis_of else
           "it is unmapped: it has no rows" if source.unmapped else None)
    if why:
        error(f"source '{source.name}' cannot be rolled up: {why}.",
              "Roll up a source with a 'time:' column whose rows are events.", "source")
        return None
    paths = dimension_paths(model.sources, source.name)
    dimensions = tuple(body.get("dimensions", ()))
    for i, dim in enumerate(dimensions):
        if dim == DAY:
            error(f"a dimension named '{DAY}' clashes with the rollup's day column.",
                  "Rename the dimension, or leave it out of the rollup.", "dimensions", i)
        elif dim not in paths:
            hint = ("Date parts need not be listed: they are computed from the rollup's day."
                    if dim in DATE_PARTS else did_you_mean(dim, paths) or
                    f"Source '{source.name}' has the dimensions {', '.join(sorted(paths)) or '(none)'}.")
            error(f"source '{source.name}' has no dimension '{dim}'.", hint, "dimensions", i)
    stored: dict[n.Aggregate, str] = {}
    plan = SourcePlan(source)
    for i, text in enumerate(body["measures"]):
        try:
            expr, _ = resolve_formula(model, text, "kpi", f"rollup '{name}' measure")
        except ProjectInvalid as invalid:
            first = invalid.errors[0]
            error(f"measure '{text}': {first.message}", first.hint or "Fix the formula.", "measures", i)
            continue
        except KpiEngineError as failure:
            error(f"measure '{text}': {failure.message}", failure.hint or "Fix the formula.", "measures", i)
            continue
        if not isinstance(expr, n.Aggregate) or expr.source != source.name:
            error(f"measure '{text}' is not one aggregate over source '{source.name}'.",
                  f"Write one aggregate such as 'count({source.name})' or 'sum({source.name}.amount where paid)'.",
                  "measures", i)
            continue
        parts = components(expr)
        lookup = any(isinstance(node, n.EntityLookup) for node in expr.walk())
        if parts is None or lookup:
            reason = ("its filter reads per-entity lookups, which depend on rows of other days" if lookup else
                      _NOT_ADDITIVE.get(expr.func, "percentiles and per-entity snapshots do not add up across days"))
            error(f"measure '{text}' cannot be rolled up: {reason}.",
                  "Only count, sum, min, max and avg (kept as a sum and a count) can be rolled up; requests "
                  "that need this aggregate read the raw rows.", "measures", i)
            continue
        for part in parts:
            stored.setdefault(part, plan.column_for(part))
    if len(errors) > before:
        return None
    return Rollup(name, source.name, dimensions, tuple(stored.items()), body.get("table") or f"kpi_rollup_{name}",
                  body.get("store", "local"), body.get("lookback_days", DEFAULT_LOOKBACK))


# -- materializing


def day_totals(model: Model, rollup: Rollup, dialect: str, read_dialect: str, start: dt.date | None,
               end: dt.date | None) -> exp.Select:
    """SELECT day, dimensions, measures: the source's totals per local day from ``start`` to
    ``end`` (exclusive), grouped exactly as a request at grain day groups them."""
    from .compiler import Request

    reader = SourceReader(model, Request(dimensions=rollup.dimensions, grain=DAY, start=start, end=end), dialect,
                          read_dialect)
    plan = SourcePlan(model.sources[rollup.source])
    plan.aggregates.update(dict(rollup.measures))
    read = SourceRead("rollup_days", plan, start)
    query = exp.select(exp.alias_(col(PERIOD, read.name), ident(DAY), copy=False),
                       *[col(d, read.name) for d in rollup.dimensions],
                       *[col(column, read.name) for _, column in rollup.measures], copy=False) \
        .from_(table_ref(read.name), copy=False)
    for name, cte in reader.source_ctes(read, None, marked=False):
        query = query.with_(ident(name), as_=cte, copy=False)
    return query


def fingerprint(model: Model, rollup: Rollup, dialect: str) -> str:
    """What the totals depend on (the source's where:, map:, time zone, joins and the measures),
    as a short hash of the query that computes them: a changed definition is never read."""
    text = day_totals(model, rollup, dialect, dialect, None, None).sql(dialect=dialect)
    return hashlib.sha256(f"{rollup.table}\n{text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RollupState:
    first_day: dt.date | None  # None: from the first day of data
    last_day: dt.date
    rows: int
    refreshed_at: dt.datetime
    fingerprint: str
    table: str  # the table it wrote: the only one a later run may replace


def state_relation(store: str) -> exp.Table:
    table = table_ref(STATE_TABLE)
    if store == "local":
        table.set("db", ident("main"))
        table.set("catalog", ident(LOCAL_ALIAS))
    return table


def state_query(store: str) -> exp.Select:
    return exp.select("rollup", "first_day", "last_day", "row_count", "refreshed_at", "fingerprint", "table_name") \
        .from_(state_relation(store))


def parse_state(rows: Sequence[tuple]) -> dict[str, RollupState]:
    return {row[0]: RollupState(_day(row[1]), _day(row[2]), int(row[3]), row[4], row[5], row[6]) for row in rows}


def _day(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    return value.date() if isinstance(value, dt.datetime) else dt.date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class Refresh:
    """What one materialize run does to one rollup."""

    rollup: Rollup
    start: dt.date | None  # first day recomputed (None: from the first day of data)
    end: dt.date  # exclusive
    full: bool
    why: str
    first_day: dt.date | None  # the materialized range afterwards
    last_day: dt.date


def plan_refresh(rollup: Rollup, state: RollupState | None, current: str, start: dt.date | None,
                 end: dt.date | None, full: bool, today: dt.date, exists: bool) -> Refresh:
    """The days to recompute: all of them (--full, first run, changed definition), or from the
    last materialized day minus the lookback (or --from) up to --to (default: today, excluded:
    a day still receiving rows is read raw). ``exists``: the rollup's table exists already; it is
    replaced only when this rollup wrote it."""
    if exists and (state is None or state.table.lower() != rollup.table.lower()):
        raise UsageError(f"rollup '{rollup.name}' would replace the table {rollup.relation.sql()}, which it did not "
                         "create.", None, "kpi-engine never drops a table it did not write: give the rollup another "
                                          "'table:', or drop that table yourself if it is a leftover.")
    end = end or today
    if start is not None and start >= end:
        raise UsageError(f"--from {start} is not before --to {end}.", None, "Give a range of at least one day.")
    if full or state is None or state.fingerprint != current:
        why = ("--full" if full else "first run" if state is None else
               "the definition changed since the last run (source, measures, dimensions or time zone)")
        return Refresh(rollup, start, end, True, why, start, end - dt.timedelta(days=1))
    if start is not None and start > state.last_day + dt.timedelta(days=1):
        raise UsageError(f"--from {start} would leave a gap after {state.last_day}, the last day rollup "
                         f"'{rollup.name}' has materialized.", None,
                         f"Start on or before {state.last_day + dt.timedelta(days=1)}, or use --full.")
    if start is None:
        start = state.last_day - dt.timedelta(days=rollup.lookback_days)
        if state.first_day is not None:
            start = max(start, state.first_day)
    first = None if state.first_day is None else min(state.first_day, start)
    return Refresh(rollup, start, end, False, f"incremental, {rollup.lookback_days} days of lookback", first,
                   max(state.last_day, end - dt.timedelta(days=1)))


def refresh_statements(model: Model, refresh: Refresh, dialect: str, current: str,
                       now: dt.datetime) -> list[exp.Expression]:
    """The statements of one refresh, to run in one transaction: replace the table (full) or its
    days in range (incremental), then the rollup's row of the state table."""
    rollup = refresh.rollup
    table = rollup.relation
    totals = day_totals(model, rollup, dialect, dialect, refresh.start, refresh.end)
    statements: list[exp.Expression] = [_create_state(rollup.store)]
    if refresh.full:
        statements.append(exp.Drop(tables=[table.copy()], kind="TABLE", exists=True))
        statements.append(exp.Create(this=table.copy(), kind="TABLE", expression=totals))
    else:
        in_range = exp.and_(exp.GTE(this=col(DAY), expression=date_literal(refresh.start)),
                            exp.LT(this=col(DAY), expression=date_literal(refresh.end)), copy=False)
        statements.append(exp.Delete(this=table.copy(), where=exp.Where(this=in_range)))
        statements.append(exp.Insert(this=table.copy(), expression=totals))
    state = state_relation(rollup.store)
    statements.append(exp.Delete(this=state.copy(), where=exp.Where(
        this=exp.EQ(this=col("rollup"), expression=exp.Literal.string(rollup.name)))))
    row = exp.select(exp.Literal.string(rollup.name),
                     date_literal(refresh.first_day) if refresh.first_day else cast(exp.Null(), "DATE"),
                     date_literal(refresh.last_day), exp.Count(this=exp.Star()),
                     cast(exp.Literal.string(now.strftime("%Y-%m-%d %H:%M:%S")), "TIMESTAMP"),
                     exp.Literal.string(current), exp.Literal.string(rollup.table), copy=False) \
        .from_(table.copy(), copy=False)
    statements.append(exp.Insert(this=state, expression=row))
    return statements


def _create_state(store: str) -> exp.Create:
    columns = [("rollup", "TEXT"), ("first_day", "DATE"), ("last_day", "DATE"), ("row_count", "BIGINT"),
               ("refreshed_at", "TIMESTAMP"), ("fingerprint", "TEXT"), ("table_name", "TEXT")]
    schema = exp.Schema(this=state_relation(store), expressions=[
        exp.ColumnDef(this=ident(name), kind=exp.DataType.build(kind)) for name, kind in columns])
    return exp.Create(this=schema, kind="TABLE", exists=True)


# -- routing requests


@dataclass(frozen=True)
class Materialized:
    """A rollup whose table holds the days from ``first_day`` (None: the start of data) to ``last_day``."""

    rollup: Rollup
    first_day: dt.date | None
    last_day: dt.date

    def extent_parts(self, reader: SourceReader, raw_days) -> list[exp.Select]:
        """The parts whose earliest first_day and latest last_day are the extent of the source's
        data as a request routed here reads it: its raw rows before the first materialized day
        (if materialized from a later day), the rollup's days, its raw rows after the last one
        (split on the local time, as ``routed_ctes`` splits them). ``raw_days(condition)``: the
        first and last day of the source's raw rows that meet ``condition``."""
        source = reader.model.sources[self.rollup.source]
        time, is_date = reader.time_column(source)

        def raw_rows(compare, day: dt.date) -> exp.Select:
            condition = compare(this=time.copy(), expression=bound(day, is_date))
            skip = reader.stored_bound(source, compare, day)
            return raw_days(condition if skip is None else exp.and_(skip, condition, copy=False))

        day = col(DAY, "stored")
        kept = [exp.LTE(this=day.copy(), expression=date_literal(self.last_day))]
        parts = []
        if self.first_day is not None:
            kept.append(exp.GTE(this=day.copy(), expression=date_literal(self.first_day)))
            parts.append(raw_rows(exp.LT, self.first_day))
        days = [exp.alias_(cast(func(this=day.copy()), "DATE"), ident(alias), copy=False)
                for func, alias in ((exp.Min, "first_day"), (exp.Max, "last_day"))]
        parts.append(exp.select(*days, copy=False)
                     .from_(exp.alias_(self.rollup.relation, ident("stored"), table=True, copy=False), copy=False)
                     .where(exp.and_(*kept, copy=False), copy=False))
        parts.append(raw_rows(exp.GTE, self.last_day + dt.timedelta(days=1)))
        return parts

    def extent_note(self) -> str:
        before = f"the raw rows before {self.first_day}, " if self.first_day is not None else ""
        return (f"first and last day of data (the complete flag, a series' ends): {before}the days of rollup "
                f"{self.rollup.name} and the raw rows after {self.last_day}")


@dataclass
class RollupRoutes:
    """What the compiler knows of the rollups: the materialized ones it may read, and why each
    other one is not read. Given to SourceReader, which asks ``route`` for each grouping; the
    answers are kept (``reads``) so that the engine reads the sources' extents as the groupings
    are read (``extent_rollups``)."""

    ready: dict[str, Materialized] = field(default_factory=dict)
    not_ready: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (source, why)
    disabled: str | None = None  # why no rollup is read at all (--no-rollups)
    reads: dict[str, dict[str, Materialized | None]] = field(default_factory=dict)  # source -> CTE -> rollup read

    def begin(self) -> None:
        """A new compilation: forget the groupings of the last one."""
        self.reads.clear()

    def extent_rollups(self) -> dict[str, Materialized]:
        """source -> the rollup its first and last day are read from: one its groupings read
        (the one with fewest dimensions), for a source every grouping of which reads a rollup."""
        chosen = {}
        for source, reads in self.reads.items():
            if reads and None not in reads.values():
                chosen[source] = min(reads.values(), key=lambda m: (len(m.rollup.dimensions), m.rollup.name))
        return chosen

    def guess(self, sources: Sequence[str], dimensions: Sequence[str]) -> dict[str, Materialized]:
        """The rollups the extents of ``sources`` are read from before their groupings are known (a
        compilation that needs the extents stops before them): of each source, the one with fewest
        dimensions that keeps the request's ``dimensions`` (or none: raw rows); ``misread`` says
        afterwards which guesses the groupings did not confirm."""
        if self.disabled:
            return {}
        guessed = {}
        for m in sorted(self.ready.values(), key=lambda m: (len(m.rollup.dimensions), m.rollup.name)):
            if m.rollup.source in sources and all(d in m.rollup.dimensions or d in DATE_PARTS for d in dimensions):
                guessed.setdefault(m.rollup.source, m)
        return guessed

    def misread(self, read_from: Mapping[str, Materialized | None]) -> list[str]:
        """The sources whose extent was read from ``read_from[source]`` (None: the raw rows) but
        whose groupings read otherwise: raw rows where a rollup was read from, or the reverse."""
        wrong = []
        for source, m in read_from.items():
            reads = self.reads.get(source, {})
            routed = bool(reads) and None not in reads.values()
            if (m is None and routed) or (m is not None and (not routed or m not in reads.values())):
                wrong.append(source)
        return wrong

    def route(self, reader: SourceReader, read: SourceRead, where: n.Node | None
              ) -> tuple[Materialized | None, list[str]]:
        """The rollup ``read`` is answered from (the one with fewest dimensions that covers it),
        and a note per rollup of the source saying why it is or is not read."""
        source = read.plan.source.name
        if self.disabled:
            self.reads.setdefault(source, {})[read.name] = None
            mine = [name for name, m in self.ready.items() if m.rollup.source == source]
            mine += [name for name, (of, _) in self.not_ready.items() if of == source]
            return None, [f"not read from rollup {name}: {self.disabled}" for name in sorted(mine)]
        notes = [f"not read from rollup {name}: {why}" for name, (of, why) in sorted(self.not_ready.items())
                 if of == source]
        candidates = sorted((m for m in self.ready.values() if m.rollup.source == source),
                            key=lambda m: (len(m.rollup.dimensions), m.rollup.name))
        chosen = None
        for m in candidates:
            why = uncovered(m, reader, read, where)
            if why is None and chosen is None:
                chosen = m
                after = (f"; days after {m.last_day} from the raw rows" if reader.request.end is None
                         or reader.request.end > m.last_day + dt.timedelta(days=1) else "")
                notes.insert(0, f"read from rollup {m.rollup.name} (materialized to {m.last_day}): table "
                                f"{m.rollup.relation.sql()}{after}")
            elif why is not None:
                notes.append(f"not read from rollup {m.rollup.name}: {why}")
        self.reads.setdefault(source, {})[read.name] = chosen
        if chosen is not None and self.extent_rollups().get(source) == chosen:
            notes.insert(1, chosen.extent_note())
        return chosen, notes

    def ctes(self, reader: SourceReader, read: SourceRead, where: n.Node | None, marked: bool,
             chosen: Materialized) -> list[tuple[str, exp.Expression]]:
        return routed_ctes(reader, read, where, marked, chosen)


def uncovered(m: Materialized, reader: SourceReader, read: SourceRead, where: n.Node | None) -> str | None:
    """Why rollup ``m`` cannot answer ``read`` (None: it can)."""
    rollup, source = m.rollup, read.plan.source.name
    grain = reader.grain
    if grain and grain not in WHOLE_DAYS and not reader.calendar.is_custom(grain):
        return f"its days cannot be cut into {grain} periods"  # a grain finer than a day
    cut = next((f"--{word} {value.isoformat(sep=' ')}" for word, value in
                (("from", reader.request.start), ("to", reader.request.end), ("from", read.start))
                if isinstance(value, dt.datetime)), None)
    if cut:
        return f"{cut} cuts a day, and a day total cannot be cut"
    if read.distinct_values:
        return "a distinct count over a window of days reads each day's distinct values"
    for agg in read.plan.aggregates:
        parts = components(agg)
        if parts is None:
            return f"{formula(agg)} does not add up across days"
        missing = [part for part in parts if rollup.column(part) is None]
        if missing:
            return f"{formula(missing[0])} is not among its measures"
    for dim in reader.dims:
        if dim not in rollup.dimensions and not _of_the_day(reader, source, dim):
            return f"it is not kept by {dim}"
    for node in where.walk() if where is not None else ():
        if isinstance(node, (n.EntityLookup, n.Column, n.Aggregate)):
            return "--where reads values of rows, not dimensions"
        if isinstance(node, n.Name) and node.dotted not in rollup.dimensions \
                and not _of_the_day(reader, source, node.dotted):
            return f"--where reads {node.dotted}, which it is not kept by"
    if m.first_day is not None and (read.start is None or read.start < m.first_day):
        return (f"it holds the days from {m.first_day}, and the request reads from "
                f"{read.start or 'the start of data'}")
    return None


def _of_the_day(reader: SourceReader, source: str, dim: str) -> bool:
    """A part of the row's local day (day_of_week, ...), computed from the rollup's day; never a
    part of the time of day (hour_of_day), which a day total has lost."""
    return dim in DATE_PARTS and is_date_part(reader.model, source, dim)


def routed_ctes(reader: SourceReader, read: SourceRead, where: n.Node | None, marked: bool,
                m: Materialized) -> list[tuple[str, exp.Expression]]:
    """The CTE ``read.name`` with the columns source_ctes gives (period, dimensions, one column per
    aggregate, the presence marker), from the rollup's days up to its last materialized day and,
    after it, the raw rows grouped by day the same way."""
    rollup, source = m.rollup, read.plan.source
    kept = [d for d in reader.dims if d in rollup.dimensions]  # the rest are date parts of the day
    columns = list(dict.fromkeys(rollup.column(part) for agg in read.plan.aggregates for part in components(agg)))
    end = reader.request.end

    def dimension(name: str, table: str) -> exp.Expression:
        return col(name, table) if name in rollup.dimensions else reader.calendar.date_part(col(DAY, table), name)

    def condition(table: str) -> exp.Expression:
        def leaf(node: n.Node) -> exp.Expression:
            if isinstance(node, n.Name):
                return dimension(node.dotted, table)
            return compile_common(node, leaf, reader.function)
        return leaf(where)

    stored = rollup.relation
    conditions = [exp.LTE(this=col(DAY, "stored"), expression=date_literal(m.last_day))]
    if read.start:
        conditions.append(exp.GTE(this=col(DAY, "stored"), expression=date_literal(read.start)))
    if end:
        conditions.append(exp.LT(this=col(DAY, "stored"), expression=date_literal(end)))
    if where is not None:
        conditions.append(exp.Paren(this=condition("stored")))
    days = exp.select(col(DAY, "stored"), *[col(d, "stored") for d in kept], *[col(c, "stored") for c in columns],
                      copy=False).from_(exp.alias_(stored, ident("stored"), table=True, copy=False), copy=False) \
        .where(exp.and_(*conditions, copy=False), copy=False)
    ctes: list[tuple[str, exp.Expression]] = []
    fresh_start = m.last_day + dt.timedelta(days=1)
    if end is None or end > fresh_start:  # the days not materialized yet: from the raw rows
        request = replace(reader.request, grain=DAY, dimensions=tuple(kept))
        raw = SourceReader(reader.model, request, reader.dialect, reader.read_dialect, reader.extents, reader.today)
        plan = SourcePlan(source)
        plan.aggregates.update({part: rollup.column(part) for agg in read.plan.aggregates for part in components(agg)})
        fresh = SourceRead(f"{read.name}_fresh", plan, max(read.start, fresh_start) if read.start else fresh_start)
        fresh_ctes = raw.source_ctes(fresh, where, marked=False)
        grouping = fresh_ctes[-1][1]
        skips = [raw.stored_bound(source, compare, day) for compare, day in ((exp.GTE, fresh.start), (exp.LT, end))
                 if day is not None]
        rows = grouping.args.get("from_") if isinstance(grouping, exp.Select) else None
        if skips[0] is not None and rows is not None and rows.this.alias_or_name == source.name:
            grouping.where(exp.and_(*skips, copy=False), copy=False)  # (only where it reads the source's rows)
        ctes += fresh_ctes
        newer = exp.select(exp.alias_(col(PERIOD, fresh.name), ident(DAY), copy=False),
                           *[col(d, fresh.name) for d in kept], *[col(c, fresh.name) for c in columns], copy=False) \
            .from_(table_ref(fresh.name), copy=False)
        days = exp.union(days, newer, distinct=False, copy=False)
    rows = exp.Subquery(this=days, alias=exp.TableAlias(this=ident(ROLLED_UP)))

    selects: list[exp.Expression] = []
    group: list[exp.Expression] = []
    if reader.grain:
        bucket = reader.calendar.bucket(col(DAY, ROLLED_UP), reader.grain, reader.dialect, is_date=True)
        selects.append(exp.alias_(bucket, ident(PERIOD), copy=False))
        group.append(bucket.copy())
    for dim in reader.dims:
        value = dimension(dim, ROLLED_UP)
        selects.append(exp.alias_(value, ident(dim), copy=False))
        group.append(value.copy())
    for agg, alias in read.plan.aggregates.items():
        selects.append(exp.alias_(_regrouped(agg, rollup), ident(alias), copy=False))
    if marked:
        selects.append(exp.alias_(number(1), ident(reader.marker), copy=False))
    query = exp.select(*selects, copy=False).from_(rows, copy=False)
    if group:
        query = query.group_by(*group, copy=False)
    return ctes + [(read.name, query)]


def _regrouped(agg: n.Aggregate, rollup: Rollup) -> exp.Expression:
    """An aggregate over its day totals: count and sum add up, min and max take theirs, avg is
    the sum of sums over the sum of counts (null when no row has a value, as AVG)."""
    def total(part: n.Aggregate) -> exp.Expression:
        value = col(rollup.column(part), ROLLED_UP)
        return {"min": exp.Min, "max": exp.Max}.get(part.func, exp.Sum)(this=value)

    if agg.func == "avg":
        total_sum, count = components(agg)
        return exp.Div(this=cast(total(total_sum), "DOUBLE"),
                       expression=exp.Nullif(this=total(count), expression=number(0)))
    if agg.func == "count":  # a count of no rows is 0
        return exp.Coalesce(this=total(agg), expressions=[number(0)])
    return total(agg)


def store_file(root: Path) -> Path:
    return root / LOCAL_FILE


def routes_offline(rollups: Mapping[str, Rollup], why: str) -> RollupRoutes:
    return RollupRoutes(not_ready={name: (r.source, why) for name, r in rollups.items()})

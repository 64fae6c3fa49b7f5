"""Resolved formulas -> one sqlglot SELECT per request.

Shape of every query (readable with ``kpi-engine compile``):

    WITH <source> AS (            -- one CTE per source, shared by every KPI asked for
      SELECT <time bucket> AS period, <dimensions>, <each aggregate once>
      FROM <table> [LEFT JOIN <related source for a dimension>] [LEFT JOIN <per-entity subquery>]
      WHERE <time range> AND <--where> GROUP BY <bucket>, <dimensions>
    ), keys AS (                  -- with several sources or --fill: every key any of them has
      SELECT period, <dimensions> FROM a UNION SELECT ... FROM b
    )
    SELECT keys.period, <dimensions>, <KPI formulas over the CTE columns>
    FROM keys LEFT JOIN a ON <keys match, null-safe> LEFT JOIN b ON ...
    WHERE <--having> ORDER BY ... LIMIT ...

(On DuckDB the keys and the joins are one step instead: the CTEs stacked with UNION ALL and
grouped by the keys, key_fold.py; and a CTE read once is written in place as a subquery of the
same name, cte_inline.py.)

Aggregating each source before joining is what keeps a cross-source ratio such as
``sum(ad_spend.spend) / count(leads)`` free of join fan-out. Time functions
(previous, cumulative, rolling, share) add two CTEs: ``series`` (the joined grouped
rows) and ``windowed`` (window functions over that series), and the requested range
is applied after the windows, so the first period can see the ones before it (on DuckDB the two
are folded into the output SELECT when nothing filters between, window_merge.py).
Everything is built as sqlglot nodes: identifiers are quoted, values are literals.

Along the data flow: time_ops.py turns time functions into window leaves over aggregates;
source_sql.py builds each source's CTEs; this module joins them, adds the series and windows,
and computes the KPI columns; sql_build.py holds the sqlglot building blocks all of them use.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import sqlglot
from sqlglot import exp

from . import nodes as n
from .calendar import PARTS, SUBDAILY, TIME_PARTS, at_grain, cast
from .custom_calendars import check_reset, unknown_grain
from .errors import Location, QueryError, did_you_mean
from .adhoc import named_formulas, unit_of
from .resolve import Model, aggregates_in, expand, place_on_axis, resolve_formula, unreachable_reason
from .completeness import Extent
from .gc_pause import collector_paused, compiled
from .conversions import events_read_elsewhere
from .source_sql import (PERIOD, PERIOD_INDEX, SNAPSHOTS, ZERO_WHEN_EMPTY, DaySplit, SourcePlan, SourceRead,
                         SourceReader)
from .sql_build import (aliased, col, compile_common, date_literal, ident, keys_match, left_join, not_null, number,
                        period_literal, snapshot_mark, table_ref)
from .plan import Step, window_text
from .plan import formula as plan_text
from .cte_inline import INLINE_DIALECTS, attach_ctes
from .key_fold import FOLD_DIALECTS, fold_key_union
from .time_ops import WindowLeaf, lower_for, lower_time_ops, window_leaves
from .output_fold import fold_output
from .window_merge import merge_window_steps
from .windows import SERIES_CTE, WINDOWED_CTE, TimeWindows
from .values import counts_whole

KEYS_CTE = "keys"


@dataclass(frozen=True)
class Request:
    """What to compute. Names refer to the project's KPIs and dimensions."""

    kpis: tuple[str, ...] = ()
    formulas: tuple[str, ...] = ()  # ad-hoc formulas, 'name=formula' or output as formula, formula_2, ...
    dimensions: tuple[str, ...] = ()
    grain: str | None = None
    start: dt.date | None = None  # inclusive
    end: dt.date | None = None  # exclusive
    where: str | None = None
    having: str | None = None
    order_by: tuple[str, ...] = ()  # output column names; prefix '-' for descending
    limit: int | None = None
    fill: bool = False  # a dense series: every period of the range for every dimension value
    time_axis: str | None = None  # place rows in time by this axis on the sources that have it
    as_of: dt.date | None = None  # "today" (the end of open intervals); None: today in the project's zone
    rollups: bool = True  # False: read every source's raw rows, never a rollup (--no-rollups)


@dataclass(frozen=True)
class OutputColumn:
    name: str
    role: str  # "time", "dimension", "kpi" or "flag"
    unit: str | None = None
    label: str | None = None
    format: str | None = None  # the KPI's display format spec
    whole: bool = False  # a KPI that counts whole things: its whole values are written as integers (values.py)


# Added to every evaluated row by the engine: is the row's period complete (completeness.py)?
COMPLETE_COLUMN = OutputColumn("complete", "flag", None, "whether the period is complete")


# Dialects whose rendering by sqlglot does not change what the tree says (others, such as
# Snowflake, BigQuery and T-SQL, rewrite FILTER clauses in the tree while rendering it).
_RENDERED_IN_PLACE = frozenset({"duckdb", "postgres", "spark", "databricks", "trino", "redshift", "mysql",
                                "oracle", "clickhouse"})


@dataclass(frozen=True)
class CompiledQuery:
    expression: exp.Select
    columns: tuple[OutputColumn, ...]
    dialect: str
    sources: tuple[str, ...] = field(default=())
    # source -> the rollup (rollups.Materialized) its first and last day are read from: the engine
    # sets it to the one its groupings read (extent_query)
    extent_rollups: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)
    _texts: dict[bool, str] = field(default_factory=dict, compare=False, repr=False)
    _plan: Callable[[], Step] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        compiled(self)  # (gc_pause: the next compile collects young garbage only once this one is dropped)

    @property
    def plan(self) -> Step | None:
        """The logical plan (plan.py), built when asked: compiling does not pay for it."""
        return self._plan() if self._plan else None

    def sql(self, pretty: bool = True) -> str:
        """The query as text. sqlglot refuses (instead of silently degrading) what the dialect
        cannot express; that becomes a QueryError naming the dialect.

        In the dialects of ``_RENDERED_IN_PLACE`` the tree is rendered without sqlglot's
        defensive deep copy (a fifth of the time of compiling a KPI): the compiler built it for
        this query alone, and sqlglot's preparation for those dialects leaves a tree that
        renders the same again when an adapter runs it (tests/test_dialects.py checks it). The
        text is kept for later calls."""
        from .parser import _deep_recursion
        from .render import render

        if pretty in self._texts:
            return self._texts[pretty]
        try:
            with _deep_recursion(), collector_paused():
                self._texts[pretty] = render(self.expression, self.dialect, pretty,
                                             copy=self.dialect not in _RENDERED_IN_PLACE)
                return self._texts[pretty]
        except RecursionError:
            raise QueryError("the query is too deeply nested to write out.", None,
                             "Split long formulas into KPIs that reference each other.") from None
        except sqlglot.errors.UnsupportedError as error:
            reason = (str(error).strip().splitlines() or ["an unsupported construct"])[0].rstrip(".")
            raise QueryError(f"the query cannot be written in the {self.dialect} dialect: {reason}.", None,
                             "Drop the option that needs it (e.g. --fill), or install an adapter plugin for "
                             "this warehouse that rewrites it.") from None


_KNOWN_DIALECTS: set[str] = set()


def check_dialect(dialect: str) -> str:
    from sqlglot.dialects.dialect import Dialect

    if dialect in _KNOWN_DIALECTS:  # looked up once: every compile names one
        return dialect
    try:
        Dialect.get_or_raise(dialect)
        _KNOWN_DIALECTS.add(dialect)
    except ValueError:
        from sqlglot.dialects import DIALECTS

        known = [d.lower() for d in DIALECTS]
        raise QueryError(f"unknown SQL dialect '{dialect}'.", None, did_you_mean(dialect.lower(), known)) from None
    return dialect


# Names derived from a source's CTE name; none may be a table's name (see cte_names).
_CTE_SUFFIXES = ("", "_days", "_last", "_first", "_history", "values_table")


class _Compiler:
    """Assembles the query of a request: the sources' CTEs (SourceReader), the keys they are
    joined on, the series and windows of the time functions, and the KPI columns."""

    def __init__(self, model: Model, request: Request, dialect: str, read_dialect: str,
                 extents: Mapping[str, Extent] | None = None, today: dt.date | None = None, rollups=None):
        self.model = model
        self.request = request
        self.dialect = dialect
        self.extents = extents or {}
        self.reader = SourceReader(model, request, dialect, read_dialect, extents, today, rollups)
        self.windows = TimeWindows(model, request, dialect, self.reader, self.extents)
        self.grain = request.grain
        self.dims = self.reader.dims
        self.keys = ([PERIOD] if self.grain else []) + list(self.dims)

    @property
    def calendar(self):  # (a named granularity narrows it to the days read: TimeWindows.span_custom_periods)
        return self.reader.calendar

    # -- checks
    def check_request(self) -> None:
        request = self.request
        if not request.kpis and not request.formulas:
            raise QueryError("nothing to compute.", None, "Name one or more KPIs, or pass --formula.")
        if request.grain is not None and request.grain not in self.calendar.grains:
            raise unknown_grain(request.grain, self.calendar.grains)
        if request.start and request.end and at_grain(request.start, "second") >= at_grain(request.end, "second"):
            raise QueryError(f"the time range is empty: --from {request.start} is not before --to {request.end}.",
                             None, "--from is inclusive and --to exclusive; pick a later --to.")
        if request.limit is not None and request.limit < 0:
            raise QueryError("--limit must be zero or more.", None, None)
        if request.fill and not (request.grain and request.start and request.end):
            raise QueryError("--fill needs --grain, --from and --to.", None,
                             "A dense series lists every period of a range: give the range and the grain.")

    def check_date_parts(self, leaves: Sequence[WindowLeaf]) -> None:
        """previous() and rolling() look at the periods before, in the same --by group: a date
        part with one value per period (month_of_year by month) leaves every group one period
        apart from the next, so they would read nothing. Refused rather than shown as 0."""
        comparing = [leaf for leaf in leaves if leaf.kind in ("previous", "rolling")]
        if not comparing or not self.grain:
            return
        for dim in self.dims:
            if dim in PARTS and not any(dim in self.reader.paths(source) for source in self.model.sources) \
                    and self.calendar.constant_within(dim, self.grain):
                raise QueryError(f"--by {dim} with --grain {self.grain} gives each period a single {dim}, so "
                                 f"{comparing[0].kind}() cannot read the earlier periods of the same {dim}.", None,
                                 "Use a coarser --grain or a finer date part: --grain year --by month_of_year "
                                 "compares each month with the same month a year earlier.")

    def on_time_axis(self, outputs: list, having: n.Node | None) -> tuple[list, n.Node | None]:
        """--time-axis: every aggregate over a source with that time axis reads it (those that
        chose an axis in their formula keep theirs)."""
        axis, sources = self.request.time_axis, self.model.sources
        moved = [(column, place_on_axis(expr, axis, sources)[0]) for column, expr in outputs]
        if having is not None:
            having = place_on_axis(having, axis, sources)[0]
        bases = {sources[s].axis_of[0] if sources[s].axis_of else s
                 for s in {agg.source for _, expr in moved for agg in aggregates_in(expr)}}
        axes = sorted({a for s in bases for a in (sources[s].time, *sources[s].time_axes) if a})
        if axis not in axes:
            raise QueryError(f"--time-axis {axis}: no source of this request has that time axis.", None,
                             (did_you_mean(axis, axes) or "") + f" Axes of its sources: {', '.join(axes) or 'none'}.")
        return moved, having

    def check_dimensions(self, plans: dict[str, SourcePlan]) -> None:
        for dim in self.dims:
            if dim == PERIOD:
                raise QueryError("'period' is the time column; use --grain, not --by period.", None, None)
            missing = [name for name in plans if not self.reader.has_dimension(name, dim)]
            for name in missing:
                reason = unreachable_reason(self.model.sources, name, dim)
                if reason:
                    raise QueryError(f"cannot slice by '{dim}': {reason[0]}", None, reason[1])
            if missing:
                everywhere = self.model.dimensions_of(plans)
                anywhere = {d for name in plans for d in self.reader.paths(name)}
                if len(missing) == len(plans) and dim not in anywhere:
                    hint = did_you_mean(dim, anywhere) or None
                else:
                    hint = (f"Dimensions available on every source of this request: {', '.join(everywhere) or 'none'}. "
                            f"Or declare '{dim}' on {', '.join(missing)} (or a relationship to a source that has it).")
                raise QueryError(f"cannot slice by '{dim}': sources {', '.join(sorted(missing))} do not have it.",
                                 None, hint)

    def check_clock(self, plans: dict[str, SourcePlan], filtered: Sequence[str] = ()) -> None:
        """A sub-daily grain, hour_of_day (minute_of_hour) in --by or in --where (``filtered``) and
        a range that starts or ends within a day read the local time of day: a source whose time
        is a DATE has none, and an interval source's rows are active on whole days."""
        request = self.request
        ends = (("from", request.start), ("to", request.end))
        cut = next((f"--{word} {value.isoformat(sep=' ')}" for word, value in ends if isinstance(value, dt.datetime)),
                   None)
        for plan in plans.values():
            source = plan.source
            if not source.time:
                continue
            parts = [(option, d) for option, names in (("--by", self.dims), ("--where", filtered)) for d in names
                     if d in TIME_PARTS and self.reader.is_date_part(source.name, d)]
            needs = f"--grain {self.grain}" if self.grain in SUBDAILY else (" ".join(parts[0]) if parts else cut)
            if needs is None:
                continue
            if source.time_end:
                raise QueryError(f"{needs} reads the time of day, but interval source '{source.name}' "
                                 f"({source.time} to {source.time_end}) counts its rows as active on whole days.",
                                 source.where(key=True), "Use --grain day or coarser and a range of whole days "
                                                         "(--from/--to as dates) for it.")
            if self.model.column_type(source.name, source.time) == "date":
                raise QueryError(f"{needs} reads the time of day, but source '{source.name}' has its time in "
                                 f"column '{source.time}', a DATE.", source.where(key=True),
                                 "Use --grain day or coarser and --from/--to as dates for it, or point its "
                                 "'time:' at a TIMESTAMP column.")

    def check_filter_dimension(self, plans: dict[str, SourcePlan], name: n.Name) -> None:
        dim = name.dotted
        for source in plans:
            reason = unreachable_reason(self.model.sources, source, dim) if len(name.parts) == 1 else None
            if reason and not self.reader.has_dimension(source, dim):
                raise QueryError(f"--where uses '{dim}': {reason[0]}", Location(obj="--where filter"), reason[1])
        if len(name.parts) != 1 or any(not self.reader.has_dimension(source, dim) for source in plans):
            everywhere = self.model.dimensions_of(plans)
            raise QueryError(f"--where uses '{dim}', which is not a dimension of every source read "
                             f"({', '.join(plans)}).", Location(obj="--where filter"),
                             (did_you_mean(dim, everywhere) or "") + f" Filterable dimensions: {', '.join(everywhere) or 'none'}.")

    # -- main
    def compile(self) -> CompiledQuery:
        self.check_request()
        model, request = self.model, self.request
        cache = model.expansions  # KPI -> its expanded formula, shared by the model's queries
        outputs: list[tuple[OutputColumn, n.Node]] = []
        fill_values: dict[str, float] = {}  # KPI -> fill_nulls_with
        for name in dict.fromkeys(request.kpis):
            kpi = model.kpi(name)
            column = OutputColumn(name, "kpi", kpi.spec.unit, kpi.spec.label, kpi.spec.format,
                                  counts_whole(model, kpi.expr, kpi.spec.unit))
            if name not in cache:
                cache[name] = expand(model, kpi.expr, cache)
            outputs.append((column, cache[name]))
            if kpi.spec.fill_nulls_with is not None:
                fill_values[name] = kpi.spec.fill_nulls_with
        for name, text, label in named_formulas(model, request.formulas):
            expr, _ = resolve_formula(model, text, "kpi", label)
            unit, number_format = unit_of(model, expr)
            column = OutputColumn(name, "kpi", unit, text, number_format, counts_whole(model, expr, unit))
            outputs.append((column, expand(model, expr, cache)))
        having = None
        if request.having:
            having_expr, _ = resolve_formula(model, request.having, "having", "--having condition")
            having = expand(model, having_expr, cache)

        # --order by a KPI not asked for: computed for the ORDER BY alone, never output.
        shown = set(self.keys) | {column.name for column, _ in outputs}
        hidden = {name: expand(model, model.kpi(name).expr, cache) for name in
                  dict.fromkeys(item.lstrip("-+") for item in request.order_by) if name not in shown and name in model.kpis}
        fill_values.update({name: model.kpis[name].spec.fill_nulls_with for name in hidden
                            if model.kpis[name].spec.fill_nulls_with is not None})

        if request.time_axis:
            outputs, having = self.on_time_axis(outputs, having)
            hidden = {name: place_on_axis(expr, request.time_axis, model.sources)[0] for name, expr in hidden.items()}
        outputs = [(column, lower_for(column.name, expr, self.grain, self.calendar)) for column, expr in outputs]
        hidden = {name: lower_for(name, expr, self.grain, self.calendar) for name, expr in hidden.items()}
        having = lower_time_ops(having, self.grain, self.calendar) if having is not None else None
        expressions = [expr for _, expr in outputs] + ([having] if having is not None else []) + list(hidden.values())
        leaves = list(dict.fromkeys(leaf for expr in expressions for leaf in window_leaves(expr)))
        self.check_date_parts(leaves)

        # An aggregate read only by windows counted from days (rolling(count_distinct(x), '30 days'))
        # comes from its own read of the source's days: the source's grouping leaves it out (a
        # distinct count per period that nothing reads was the costliest step of such a query).
        grouped = {agg for expr in expressions for agg in _grouped_aggregates(expr, self.windows.over_days)}
        plans: dict[str, SourcePlan] = {}
        labels: dict[n.Aggregate, str] = {}  # aggregate -> its name in the series (and in window columns)
        for expr in expressions:
            for agg in aggregates_in(expr):
                plan = plans.setdefault(agg.source, SourcePlan(model.sources[agg.source]))
                column = plan.column_for(agg) if agg in grouped else SourcePlan(plan.source).column_for(agg)
                labels.setdefault(agg, f"{agg.source}__{column}")
        if not plans:
            raise QueryError("the request reads no source: every formula is a constant.", None,
                             "Use at least one aggregate such as 'count(leads)'.")
        self.check_dimensions(plans)
        time_needed = self.grain is not None or request.start is not None or request.end is not None
        for plan in plans.values():
            if (time_needed or plan.snapshots) and not plan.source.time:
                raise QueryError(f"source '{plan.source.name}' has no time column, so it cannot be cut by time.",
                                 plan.source.where(key=True),
                                 "Declare 'time: <column>' on the source, or drop --grain/--from/--to "
                                 "(and last()/first(), which need a time).")
        where = None
        if request.where:
            where, _ = resolve_formula(model, request.where, "dimension", "--where filter")
            for name in (node for node in where.walk() if isinstance(node, n.Name)):
                self.check_filter_dimension(plans, name)
        self.check_clock(plans, [node.dotted for node in where.walk() if isinstance(node, n.Name)] if where else [])

        # Time functions read earlier periods than --from. When --from falls inside a period, the
        # plain aggregates still count from --from and only the windows read the whole periods
        # before it, so the sources they read are grouped a second time over the longer range.
        history_start = self.windows.widened_start(leaves)
        resets = {leaf.reset for leaf in leaves if leaf.reset}
        if self.calendar.is_custom(self.grain) or any(self.calendar.is_custom(reset) for reset in resets):
            self.windows.span_custom_periods(history_start, plans)
            for reset in sorted(resets):
                check_reset(self.calendar, self.grain, reset)
        # Leaves over aggregates read the series; a leaf over another leaf reads the stage before it.
        history_leaves = [leaf for leaf in leaves if leaf.kind != "total" and leaf.depth == 1]
        stages = max((leaf.depth for leaf in leaves), default=0)
        split = (bool(history_leaves) and history_start != request.start
                 and self.calendar.period_start(request.start, self.grain) != request.start)
        history: dict[str, SourcePlan] = {}
        if split:
            for leaf in (leaf for leaf in history_leaves if not self.windows.over_days(leaf)):
                history.setdefault(leaf.agg.source, SourcePlan(model.sources[leaf.agg.source])).column_for(leaf.agg)
        self.cte = self.cte_names(plans)
        ranges = {name: SourceRead(self.cte[name], plan, request.start if split else history_start)
                  for name, plan in plans.items()}
        histories = {name: SourceRead(f"{self.cte[name]}_history", plan, history_start) for name, plan in history.items()}

        kpi_sources = {name: {agg.source for agg in aggregates_in(expr)}
                       for name, expr in [(column.name, expr) for column, expr in outputs] + list(hidden.items())}
        day_leaves = [leaf for leaf in history_leaves if self.windows.over_days(leaf)]
        # Rows read before --from for the windows (a wider range, or the days of windows counted
        # from days) must not bring dimension values into the rows --fill lists.
        widened = bool(history_leaves) and (history_start != request.start or bool(day_leaves))
        # A time function over another reads the inner one in periods where no source has a row
        # (a running total goes on through an empty month): the series lists every period.
        dense = self.windows.series_range(list(plans), history_start) if stages > 1 else None
        day_ctes, day_columns, window_steps = self.windows.day_windows(day_leaves, history_start, where, self.cte) if day_leaves \
            else ([], {}, [])
        masked, row_filter = self.row_sets(kpi_sources, set(plans), split or dense is not None or bool(day_leaves),
                                           widened)
        self.marked = bool(masked) or row_filter
        # A conversion source whose base source the request reads too gets the base events' keys
        # from that read: its own rows are the conversions alone (a third scan of the base saved).
        readers = list(kpi_sources.values()) + ([{agg.source for agg in aggregates_in(having)}] if having else [])
        rollups = self.reader.rollups
        alone = events_read_elsewhere(model, ranges, readers, {leaf.base.source for leaf in leaves},
                                      lambda name: rollups is not None
                                      and rollups.route(self.reader, ranges[name], where)[0] is not None)
        ranges = {name: replace(read, conversions_only=True) if name in alone else read
                  for name, read in ranges.items()}
        reads = list(ranges.values()) + list(histories.values())
        rows_may_be_missing = len(reads) > 1 or request.fill or not self.keys or bool(leaves)

        # On DuckDB the key union and its joins are usually folded away (key_fold.py), and the day
        # totals of several sources stacked: what that replaces is built only if it is not done.
        foldable = dense is None and not request.fill and self.dialect in FOLD_DIALECTS  # (--fill: dense below)
        ctes: list[tuple[str, exp.Expression | DaySplit]] = []
        for read in reads:
            ctes += self.reader.source_ctes(read, where, marked=self.marked and read in ranges.values(),
                                            deferred=foldable)
        if request.fill:  # every period of the range, and of the history the stages read (if any)
            first = history_start if isinstance(history_start, dt.date) else request.start
            dense = (min(first, dense[0] or first) if dense else first, request.end)
        ctes += day_ctes
        window_reads = list(dict.fromkeys(table for table, _ in day_columns.values()))
        joined = [read.name for read in reads] + window_reads
        key_table, body, key_ctes = self.join_sources(joined, dense, deferred=foldable)
        lined_up = body  # (the SELECT that holds the joins to the keys, whatever body becomes below)
        ctes += key_ctes
        values_of = {}  # source -> relation holding its observed dimension values (under --fill)
        if request.fill and self.dims and self.marked:
            for name, read in ranges.items():
                values_of[name] = self.join_observed_values(body, read, self.windows.first_period() if widened else None)
        snapshot_joined = set()
        if rows_may_be_missing:
            for read in reads:
                for snapshot in read.snapshot_ctes():
                    self.join_snapshot_periods(body, snapshot, key_table)
                    snapshot_joined.add(snapshot)

        columns = self.key_columns()
        for column, _ in outputs:
            if column.name in self.keys or column.name == COMPLETE_COLUMN.name:
                raise QueryError(f"KPI '{column.name}' has the same name as an output column "
                                 f"({', '.join(self.keys + [COMPLETE_COLUMN.name])}).", None,
                                 "Rename the KPI or the dimension.")
            columns.append(column)

        def value(read: SourceRead, agg: n.Aggregate) -> exp.Expression:
            """An aggregate at the current key, by the empty rule: no rows count 0 and sum 0, a period
            with no snapshot at all has no last()/first() value, other aggregates are null."""
            column = col(read.plan.aggregates[agg], read.name)
            # A count read from the one source's own grouped rows is never NULL (at least one row
            # per key, and COUNT of rows or a sum of day counts is a number): no COALESCE needed.
            never_null = agg.func in ("count", "count_distinct") and not rows_may_be_missing
            if (agg.func in ZERO_WHEN_EMPTY or agg.func in SNAPSHOTS) and not never_null:
                column = exp.Coalesce(this=column, expressions=[number(0)])
            snapshot = read.snapshot_cte(agg)
            if snapshot in snapshot_joined:
                column = exp.Case(ifs=[exp.If(this=snapshot_mark(snapshot), true=column)])
            return column

        def presence(source: str) -> exp.Expression:
            return col(self.marker, values_of.get(source, ranges[source].name))

        def never_zero(node: n.Node) -> bool:
            """count(source) read from the one source's own grouped rows: each key is a group of
            that source's rows, so it counts at least 1 and a division by it needs no NULLIF (a
            filtered count, a count of a column and the rows of interval, history and conversion
            sources can be 0; snapshots add rows of their own)."""
            if rows_may_be_missing or not (isinstance(node, n.Aggregate) and node.func == "count"
                                           and node.arg is None and node.where is None and node.per is None):
                return False
            read, source = ranges.get(node.source), model.sources[node.source]
            return (read is not None and not read.conversions_only and not read.plan.snapshots
                    and source.time_end is None and source.valid_from is None and source.conversion is None)

        if leaves:
            # series: the joined grouped rows; windowed: window functions over that series.
            series_columns = {agg: label for agg, label in labels.items() if agg in grouped}
            history_columns = {leaf.agg: f"{series_columns[leaf.agg]}__history" for leaf in history_leaves
                               if leaf.agg in (histories[leaf.agg.source].plan.aggregates
                                               if leaf.agg.source in histories else ())}
            presence_columns = {source: f"{source}__present" for source in plans} if self.marked else {}
            series_selects = [col(k, key_table) for k in self.keys]
            if self.grain:
                index = self.calendar.period_index(col(PERIOD, key_table), self.grain)
                series_selects.append(aliased(index, PERIOD_INDEX))
            series_selects += [aliased(value(ranges[agg.source], agg), alias)
                               for agg, alias in series_columns.items()]
            series_selects += [aliased(value(histories[agg.source], agg), alias)
                               for agg, alias in history_columns.items()]
            series_selects += [aliased(presence(source), alias)
                               for source, alias in presence_columns.items()]
            day_series = {leaf: f"{labels[leaf.agg]}__{table}" for leaf, (table, _) in day_columns.items()}
            for leaf, alias in day_series.items():
                table, column = day_columns[leaf]
                value = col(column, table)
                if leaf.agg.func in ZERO_WHEN_EMPTY:
                    value = exp.Coalesce(this=value, expressions=[number(0)])
                series_selects.append(aliased(value, alias))
            ctes.append((SERIES_CTE, body.select(*series_selects, copy=False)))
            leaf_columns = {leaf: f"{leaf.kind}_{labels[leaf.base]}_{i + 1}" for i, leaf in enumerate(leaves)}
            # windowed: the leaves over aggregates; windowed_2, _3...: a stage per level of nesting,
            # each over the one before it.
            source_table = SERIES_CTE
            for depth in range(1, stages + 1):
                stage = WINDOWED_CTE if depth == 1 else f"{WINDOWED_CTE}_{depth}"
                windowed = exp.select(exp.Column(this=exp.Star(), table=ident(source_table)), copy=False) \
                    .from_(table_ref(source_table), copy=False)
                for leaf, alias in leaf_columns.items():
                    if leaf.depth != depth:
                        continue
                    if self.windows.over_days(leaf):  # added up over its days already (nothing to add up without data)
                        value = col(day_series[leaf], source_table) if leaf in day_series else \
                            number(0) if leaf.base.func in ZERO_WHEN_EMPTY else exp.Null()
                        windowed.select(aliased(value, alias), copy=False)
                        continue
                    if depth > 1:
                        column = leaf_columns[leaf.agg]
                    else:
                        column = history_columns.get(leaf.agg, series_columns[leaf.agg]) if leaf.kind != "total" \
                            else series_columns[leaf.agg]
                    value = self.windows.shifted_value(windowed, leaf, column, source_table) if leaf.months or leaf.start_of \
                        else self.windows.window(leaf, column, source_table)
                    windowed.select(aliased(value, alias), copy=False)
                ctes.append((stage, windowed))
                source_table = stage
            key_table, body = source_table, exp.select(copy=False).from_(table_ref(source_table), copy=False)
            conditions = []
            if request.start and self.grain:
                # Earlier periods were read only for the windows; show the requested ones.
                conditions.append(exp.GTE(this=col(PERIOD, key_table), expression=period_literal(self.windows.first_period())))
            if row_filter:  # keys of the longer range that no source has in the requested one
                conditions.append(exp.or_(*[not_null(col(alias, key_table)) for alias in presence_columns.values()],
                                          copy=False))
            if conditions:
                body = body.where(exp.and_(*conditions, copy=False), copy=False)
            backs = {}
            for leaf in history_leaves:
                if leaf.kind == "previous" and leaf.agg.func in SNAPSHOTS:
                    read = histories.get(leaf.agg.source, ranges[leaf.agg.source])
                    backs[leaf] = self.windows.join_snapshot_back(body, read.snapshot_cte(leaf.agg), leaf, key_table)

            def window_value(leaf: WindowLeaf) -> exp.Expression:
                column = col(leaf_columns[leaf], key_table)
                if leaf in backs:  # no row N periods back: 0 if that period has a snapshot, else null
                    fallback = exp.Case(ifs=[exp.If(this=snapshot_mark(backs[leaf]), true=number(0))])
                    return exp.Coalesce(this=column, expressions=[fallback])
                return column

            measure = _Measure(lambda agg: col(series_columns[agg], key_table), window_value, self.reader.function)
            present_column = lambda source: col(presence_columns[source], key_table)  # noqa: E731
        else:
            measure = _Measure(lambda agg: value(ranges[agg.source], agg), None, self.reader.function, never_zero)
            present_column = presence

        def kpi_value(name: str, expr: n.Node) -> exp.Expression:
            result = measure(expr)
            if name in fill_values:
                result = exp.Coalesce(this=result, expressions=[number(fill_values[name])])
            if name in masked:  # outside the KPI's own rows its cell is empty
                present = exp.or_(*[not_null(present_column(s)) for s in sorted(kpi_sources[name])], copy=False)
                result = exp.Case(ifs=[exp.If(this=present, true=result)])
            return cast(result, "DOUBLE")

        selects = [aliased(col(k, key_table), k) for k in self.keys]
        for column, expr in outputs:
            selects.append(aliased(kpi_value(column.name, expr), column.name))
        query = body.select(*selects, copy=False)
        if having is not None:
            query = query.where(measure(having), copy=False)
        # A source that only the --order KPIs read adds no rows: keep the rows of the others (a dense
        # series keeps its rows whatever the sources).
        others = {source for column, _ in outputs for source in kpi_sources[column.name]}
        others |= {agg.source for agg in aggregates_in(having)} if having is not None else set()
        if self.keys and not request.fill and others and set(plans) - others:
            query = query.where(exp.or_(*[not_null(present_column(s)) for s in sorted(others)], copy=False), copy=False)
        query = self.order_and_limit(query, columns, {name: kpi_value(name, expr) for name, expr in hidden.items()})
        folded, days_stacked = None, False
        if key_ctes and foldable:
            by_name = dict(ctes)

            def day_source(name: str):  # (asked by the fold only once the rest of the query allows it)
                split = by_name.get(name)
                return self.reader.day_source(split) if isinstance(split, DaySplit) else None

            folded = fold_key_union(lined_up, self.keys, joined, KEYS_CTE, by_name, day_source)
            if folded is not None:  # (the fold may stack the CTEs' day totals instead: those CTEs are gone)
                days_stacked = any(name not in by_name for name in joined)
                ctes = [(name, folded if name == KEYS_CTE else by_name[name]) for name, _ in ctes if name in by_name]
            else:
                ctes = [(name, self.key_union(joined, dense) if name == KEYS_CTE else cte) for name, cte in ctes]
                for join in lined_up.args["joins"][:len(joined)]:
                    join.set("on", keys_match(self.keys, KEYS_CTE, join.this.name))
        ctes = [(name, self.reader.periods_of(cte) if isinstance(cte, DaySplit) else cte) for name, cte in ctes]
        if leaves and self.dialect in INLINE_DIALECTS:
            query, ctes = merge_window_steps(query, ctes)
        query = attach_ctes(query, ctes, self.dialect)
        if self.dialect in INLINE_DIALECTS:
            query = fold_output(query)

        def plan() -> Step:
            lookup = folded.args.get("joins") if folded is not None else None  # the lookup joined once
            inputs = [self.reader.describe(read, where, days_stacked) for read in reads] + [make() for make in window_steps]
            step = inputs[0]
            if len(inputs) > 1 or dense is not None:
                stacked = "the inputs' day totals stacked" if days_stacked else "the inputs stacked"
                how = "each input joined to it (null-safe; " if folded is None else \
                    f"{stacked}, {lookup[0].this.name} joined once to them, grouped by it (" if lookup \
                    else f"{stacked} and grouped by it ("
                notes = [f"every {', '.join(self.keys) or 'row'} that an input has, {how}no rows counts 0)"
                         if self.keys else "one row per input, side by side"]
                if dense is not None:
                    notes.append(f"and every {self.grain} from {dense[0]} to {dense[1]} (end excluded) for each "
                                 "dimension value seen" + ("" if request.fill else
                                                          " (a time function over another reads empty periods)"))
                step = Step("Keys", notes, inputs)
            for depth in range(1, stages + 1):
                step = Step(f"Window stage {depth}: by period" + (f", within each {', '.join(self.dims)}"
                                                                  if self.dims else ""),
                            [window_text(leaf) for leaf in leaves if leaf.depth == depth], [step])
            filters = []
            if leaves and request.start and self.grain:
                filters.append(f"period >= {self.windows.first_period()}: the requested periods (earlier ones were read "
                               "for the windows)")
            if row_filter:
                filters.append("rows that a source has in the requested range")
            if filters:
                step = Step("Filter", filters, [step])
            notes = [f"{column.name} = {plan_text(expr)}" for column, expr in outputs]
            notes += [f"{name}: empty where none of {', '.join(sorted(kpi_sources[name]))} has a row"
                      for name in masked if name in {column.name for column, _ in outputs}]
            notes += [f"{name}: {value} where it has no value (fill_nulls_with)" for name, value in fill_values.items()]
            if having is not None:
                notes.append(f"--having {plan_text(having)}")
            if request.order_by or request.limit is not None:
                notes.append(f"order by {', '.join(request.order_by) or ', '.join(self.keys)}"
                             + (f", first {request.limit} rows" if request.limit is not None else ""))
            return Step(f"Output: {', '.join(c.name for c in columns)}", notes, [step])

        return CompiledQuery(query, tuple(columns), self.dialect, tuple(plans), _plan=plan)

    def row_sets(self, kpi_sources: dict[str, set[str]], sources: set[str], split: bool,
                 widened: bool) -> tuple[set[str], bool]:
        """Which output columns must be blanked outside their own row set (docs/semantics.md), and
        whether rows that no source has in the requested range must be dropped.

        The keys are every source's rows: a KPI that reads only some sources is blanked where
        none of its own has a row. ``split``: the keys also hold the rows the windows read before
        --from, so every KPI is blanked there and those rows are dropped. Under --fill the dense
        rows are a KPI's own when its sources have those dimension values; ``widened`` (rows read
        for the windows only) must not bring dimension values in either."""
        fill, dims = self.request.fill, bool(self.dims)
        masked = set()
        for name, read in kpi_sources.items():
            if not self.keys or not read:
                continue  # one total row, or a constant: on every row
            if (dims and (widened or read != sources)) if fill else (split or read != sources):
                masked.add(name)
        return masked, (split and not fill) or (fill and dims and widened)

    def cte_names(self, plans: dict[str, SourcePlan]) -> dict[str, str]:
        """<source>_agg for each source's CTE (and the CTEs named after it: day totals, snapshot
        times, the longer range of the windows), never the name of a table the query reads (a CTE
        would hide that table from the CTEs after it)."""
        names = {}
        for source in plans:
            name = self.model.derived.get(("cte", source))  # the same for every query of the model
            if name is None:
                tables = {spec.table.rsplit(".", 1)[-1].lower() for spec in self.model.sources.values() if spec.table}
                name = f"{source}_agg"
                while ({f"{name}{suffix}{more}".lower() for suffix in _CTE_SUFFIXES for more in _CTE_SUFFIXES}
                       & tables or name in (KEYS_CTE, SERIES_CTE, WINDOWED_CTE)):
                    name += "_"
                self.model.derived[("cte", source)] = name
            names[source] = name
        self.marker = "present"
        while self.marker in self.dims:
            self.marker += "_"
        self.reader.marker = self.marker
        return names

    def key_columns(self) -> list[OutputColumn]:
        columns = [OutputColumn(PERIOD, "time", None, self.grain)] if self.grain else []
        return columns + [OutputColumn(dim, "dimension") for dim in self.dims]

    def order_and_limit(self, query: exp.Select, columns: list[OutputColumn],
                        hidden: Mapping[str, exp.Expression] | None = None) -> exp.Select:
        """ORDER BY output columns, or (``hidden``) the values of KPIs that are not output."""
        names = [c.name for c in columns]
        hidden = hidden or {}
        terms = []
        for item in self.request.order_by or tuple(self.keys):
            desc = item.startswith("-")
            name = item.lstrip("-+")
            if name not in names and name not in hidden:
                raise QueryError(f"cannot order by '{name}': it is neither an output column nor a KPI of the project.",
                                 None, did_you_mean(name, names + list(self.model.kpis)) or None)
            terms.append(exp.Ordered(this=col(name) if name in names else hidden[name], desc=desc, nulls_first=False))
        if self.request.order_by:  # ties broken by the keys, so --limit keeps the same rows on every run
            named = {item.lstrip("-+") for item in self.request.order_by}
            terms += [exp.Ordered(this=col(k), desc=False, nulls_first=False) for k in self.keys if k not in named]
        if terms and query.args.get("order") is None:  # (Select.order_by wraps each term in a throwaway ORDER BY)
            query.set("order", exp.Order(expressions=terms))
        elif terms:
            query = query.order_by(*terms, copy=False)
        if self.request.limit is not None:
            query = query.limit(self.request.limit, copy=False)
        return query

    # -- joining the sources
    def join_sources(self, names: list[str], dense: tuple[dt.date | None, dt.date | None] | None,
                     deferred: bool = False) -> tuple[str, exp.Select, list]:
        """FROM clause over the grouped CTEs ``names``: the table that holds the keys, the SELECT
        with its FROM and joins, and the CTEs it needs (the keys). ``dense``: the range [start, end)
        whose every period is a key for every observed dimension value. ``deferred``: the key
        union (None in its place) and the joins' conditions are left for the caller to build."""
        keys = self.keys
        if len(names) == 1 and dense is None:
            return names[0], exp.select(copy=False).from_(table_ref(names[0]), copy=False), []
        if not keys:  # no grain, no dimensions: every CTE is one row
            body = exp.select(copy=False).from_(table_ref(names[0]), copy=False)
            for name in names[1:]:
                body.append("joins", exp.Join(this=table_ref(name), kind="CROSS"))
            return names[0], body, []
        body = exp.select(copy=False).from_(table_ref(KEYS_CTE), copy=False)
        for name in names:
            left_join(body, table_ref(name), None if deferred else keys_match(keys, KEYS_CTE, name))
        return KEYS_CTE, body, [(KEYS_CTE, None if deferred else self.key_union(names, dense))]

    def key_union(self, names: list[str], dense: tuple[dt.date | None, dt.date | None] | None) -> exp.Expression:
        """Every key that one of the grouped CTEs ``names`` has (and, with ``dense``, every period of
        that range for each dimension value)."""
        union = None
        for name in names:
            part = exp.select(*[col(k, name) for k in self.keys], copy=False).from_(table_ref(name), copy=False)
            union = part if union is None else exp.union(union, part, distinct=True, copy=False)
        return self.windows.dense_keys(union, *dense) if dense is not None else union

    def join_observed_values(self, body: exp.Select, read: "SourceRead", first: dt.date | None) -> str:
        """Join the dimension values a source has anywhere in range (--fill lists every period for
        them), from the period ``first`` on when earlier ones were read for the windows; returns the
        alias, whose marker is null for values the source never has."""
        alias = f"{read.name}values_table"
        values = exp.select(*[col(d, read.name) for d in self.dims], aliased(number(1), self.marker),
                            copy=False).distinct(copy=False).from_(table_ref(read.name), copy=False)
        if first is not None:
            values = values.where(exp.GTE(this=col(PERIOD, read.name), expression=period_literal(first)), copy=False)
        left_join(body, exp.Subquery(this=values, alias=exp.TableAlias(this=ident(alias))),
                   keys_match(self.dims, KEYS_CTE, alias))
        return alias

    def join_snapshot_periods(self, body: exp.Select, snapshot: str, key_table: str) -> None:
        """Join a source's snapshot times to the keys by period (one row per period, or the one
        row without a grain), to tell a period without any snapshot from one with no rows here."""
        if self.grain:
            left_join(body, table_ref(snapshot), exp.EQ(this=col(PERIOD, key_table), expression=col(PERIOD, snapshot)))
        else:
            body.append("joins", exp.Join(this=table_ref(snapshot), kind="CROSS"))


def _grouped_aggregates(expr: n.Node, over_days: Callable[[WindowLeaf], bool]) -> list[n.Aggregate]:
    """The aggregates of ``expr`` that its sources' groupings compute: all but those that only
    windows counted from days read."""
    if not window_leaves(expr):  # then every aggregate (a walk kept on the node, not a rebuild per query)
        return aggregates_in(expr)
    found: list[n.Aggregate] = []

    def visit(node: n.Node) -> n.Node:
        if isinstance(node, WindowLeaf):
            if not over_days(node):
                node.agg.map(visit, stop=WindowLeaf)
        elif isinstance(node, n.Aggregate):
            found.append(node)
        return node

    expr.map(visit, stop=(WindowLeaf, n.Aggregate))
    return found


class _Measure:
    """Compiles KPI-level expressions: aggregates and window leaves become columns."""

    def __init__(self, aggregate: Callable[[n.Aggregate], exp.Expression],
                 window: Callable[[WindowLeaf], exp.Expression] | None, function,
                 never_zero: Callable[[n.Node], bool] | None = None):
        self.aggregate = aggregate
        self.window = window
        self.function = function
        self.never_zero = never_zero

    def __call__(self, node: n.Node) -> exp.Expression:
        if isinstance(node, n.Aggregate):
            return self.aggregate(node)
        if isinstance(node, WindowLeaf):
            return self.window(node)
        return compile_common(node, self, self.function, self.never_zero)


def extent_query(model: Model, sources: Sequence[str], dialect: str, read_dialect: str = "duckdb",
                 today: dt.date | None = None, clock: bool = False,
                 rollups: Mapping[str, object] | None = None) -> exp.Expression:
    """SELECT 'source', first day, last day FROM source UNION ALL ...: the extent of each source's
    data (time column read through its map, rows through its where:), as local days (with
    ``clock``, for sub-daily grains: as local times). An interval source's data runs to the last
    day a row is active, today for a row still open. A source in ``rollups`` (source ->
    rollups.Materialized, at whole days) is read off the rollup and the raw rows it has not
    materialized (``Materialized.extent_parts``)."""
    reader = SourceReader(model, Request(), dialect, read_dialect, today=today)
    parts = []
    for name in sources:
        source = model.sources[name]
        time, _ = reader.time_column(source)
        last = time
        if source.time_end:
            ends, now = reader.day_of(source, source.time_end), date_literal(reader.today)
            still_open = exp.or_(exp.Is(this=ends.copy(), expression=exp.Null()), exp.GT(this=ends.copy(), expression=now),
                                 copy=False)
            last = exp.Case(ifs=[exp.If(this=still_open, true=now.copy())],
                            default=exp.DateAdd(this=ends.copy(), expression=number(-1), unit=exp.var("DAY")))

        def raw_days(condition: exp.Expression | None = None, source=source, time=time, last=last) -> exp.Select:
            days = [exp.alias_(cast(func(this=value.copy()), "TIMESTAMP" if clock else "DATE"), ident(alias),
                               copy=False) for func, value, alias in ((exp.Min, time, "first_day"), (exp.Max, last, "last_day"))]
            query = exp.select(*days, copy=False).from_(reader.relation(source), copy=False)
            return query.where(condition, copy=False) if condition is not None else query

        label = exp.alias_(exp.Literal.string(name), ident("source_name"), copy=False)
        routed = None if clock else (rollups or {}).get(name)
        if routed is None:
            query = raw_days()
            query.set("expressions", [label, *query.expressions])
        else:
            pieces = routed.extent_parts(reader, raw_days)
            union = pieces[0]
            for piece in pieces[1:]:
                union = exp.union(union, piece, distinct=False, copy=False)
            query = exp.select(label, *[exp.alias_(func(this=col(alias)), ident(alias), copy=False)
                                        for func, alias in ((exp.Min, "first_day"), (exp.Max, "last_day"))],
                               copy=False).from_(exp.Subquery(this=union, alias=exp.TableAlias(this=ident("parts"))),
                                                 copy=False)
        parts.append(query)
    query = parts[0]
    for part in parts[1:]:
        query = exp.union(query, part, distinct=False, copy=False)
    return query


def compile_request(model: Model, request: Request, dialect: str, read_dialect: str = "duckdb",
                    extents: Mapping[str, Extent] | None = None, today: dt.date | None = None,
                    rollups=None) -> CompiledQuery:
    """Build the query for ``request`` in ``dialect``; ``sql:`` sources are read as ``read_dialect``.
    ``extents``: the days some sources have data for, where the query depends on them (ExtentsNeeded
    asks for them);
    ``today``: the day open intervals run to (today in the project's time zone by default);
    ``rollups``: the materialized rollups a source's grouping may read (rollups.RollupRoutes)."""
    from .parser import _deep_recursion

    check_dialect(dialect)
    if request.grain in SUBDAILY:  # periods are local datetimes: so are the ends of the range
        request = replace(request, start=request.start and at_grain(request.start, request.grain),
                          end=request.end and at_grain(request.end, request.grain))
    try:
        with _deep_recursion(), collector_paused(young_first=True):
            return _Compiler(model, request, dialect, read_dialect, extents, today, rollups).compile()
    except RecursionError:
        raise QueryError("the formulas chain too many operators to compile.", None,
                         "Split long formulas into KPIs that reference each other.") from None

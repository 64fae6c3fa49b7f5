"""One source's rows, grouped for a request: the first stage of every query.

For each source a request reads, ``SourceReader.source_ctes`` builds the CTEs that group its rows
by period and dimensions: optionally its day totals first (cut into periods afterwards), the
snapshot time of each period for last()/first(), and the grouped rows with one column per
aggregate. The compiler then joins those CTEs (compiler.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from sqlglot import exp

from . import history
from . import nodes as n
from .calendar import PARTS, SUBDAILY, TIME_PARTS, cast
from .completeness import Extent
from .plan import Step, formula
from .conversions import conversion_relation, converted_only
from .errors import QueryError
from .key_fold import SLOT, DaySource, one_column
from .resolve import TIMESTAMP, DimensionPath, Model, parse_source_sql
from .spec import Relationship, SourceSpec
from .sql_build import (aggregate_sql, aliased, bound, col, compile_common, copy_of, date_literal, existence_test,
                        ident, number, qualified_table, scalar_function, select_from, snapshot_mark, table_ref,
                        values_table, wrap)

if TYPE_CHECKING:
    from .compiler import Request

PERIOD = "period"
PERIOD_INDEX = "period_index"
SPINE_CTE = "spine"
ZERO_WHEN_EMPTY = {"count", "count_distinct", "sum"}  # no rows means 0, not null
SNAPSHOTS = {"last", "first"}  # no snapshot in the period means null; no rows at the snapshot 0
REGROUPABLE = {"count", "sum", "min", "max", "last", "first"}  # day totals add up to period totals
MAX_FILL_PERIODS = 100_000
# Columns an interval source's rows gain when spread over the periods they overlap (interval_rows).
INTERVAL_DAY, ACTIVE_AT_END, ACTIVE_AT_START = "__kpi_period_day", "__kpi_active_at_end", "__kpi_active_at_start"


def source_relation(source: SourceSpec, read_dialect: str, alias: str | None = None) -> exp.Expression:
    """The FROM item of a source: its table, or its ``sql:`` parsed into a subquery.

    A ``sql:`` source is parsed with sqlglot in the warehouse's dialect and must be
    one SELECT; it is re-rendered from the tree like everything else.
    """
    if source.sql:
        query = [parse_source_sql(source, read_dialect)]
        return exp.Subquery(this=query[0], alias=exp.TableAlias(this=ident(alias or source.name)))
    table = qualified_table(source.table)
    return aliased(table, alias or source.name, table=True)


@dataclass(frozen=True)
class DaySplit:
    """A source's day totals to cut into periods (SourceReader.days_to_periods), not built yet."""
    read: "SourceRead"
    days: str
    marked: bool
    late: Mapping[str, str]
    late_keys: Mapping[str, Sequence[str]]


@dataclass
class SourcePlan:
    source: SourceSpec
    aggregates: dict[n.Aggregate, str] = field(default_factory=dict)  # aggregate -> CTE column

    def column_for(self, agg: n.Aggregate) -> str:
        """A readable, unique CTE column name such as count, sum_amount or count_where_customer_at."""
        if agg not in self.aggregates:
            parts = [agg.func]
            if isinstance(agg.arg, n.Column):
                parts.append(agg.arg.name)
            if agg.where is not None:
                columns = n.found_below(agg.where, n.Column, "_columns")
                first = columns[0].name if columns else "filter"
                parts += ["where", first]
            base = "_".join(parts)
            name, i = base, 2
            while name in self.aggregates.values() or name in (PERIOD, PERIOD_INDEX) or self.source.dimension(name):
                name, i = f"{base}_{i}", i + 1
            self.aggregates[agg] = name
        return self.aggregates[agg]

    @property
    def snapshots(self) -> bool:
        return any(agg.func in ("last", "first") for agg in self.aggregates)


@dataclass(frozen=True)
class SourceRead:
    """One grouping of a source's rows: its CTE name, what it aggregates, and the first day read
    (the requested range, or the longer one of the windows)."""

    name: str
    plan: SourcePlan
    start: dt.date | None
    distinct_values: bool = False  # the distinct values of count_distinct per key, to be counted later
    window_days: bool = False  # the days a window counted from days reads (windows.py day_windows)
    conversions_only: bool = False  # a conversion source without its base events (the base's read has their keys)

    def snapshot_cte(self, agg: n.Aggregate) -> str | None:
        """The CTE of the snapshot times a last()/first() aggregate is taken at (one per kind). A
        per-entity one (``per key``) is taken at each entity's own time, but reads the CTE too: a
        period without it holds no snapshot at all, so its value is null, not 0 (as last(x))."""
        return f"{self.name}_{agg.func}" if agg.func in SNAPSHOTS else None

    @property
    def days_cte(self) -> str:
        """The CTE of the day totals, when the source is grouped by day first."""
        return f"{self.name}_days"

    def snapshots(self) -> dict[str, n.Aggregate]:
        # snapshot_cte written out: asked several times per read, for every aggregate
        return {f"{self.name}_{agg.func}": agg for agg in self.plan.aggregates if agg.func in SNAPSHOTS}

    def snapshot_ctes(self) -> list[str]:
        return list(self.snapshots())


def has_dimension(model: Model, source: str, dim: str) -> bool:
    """A declared (or related) dimension of the source, or a date part of its time column."""
    return dim in model.dimension_paths(source) or is_date_part(model, source, dim)


def is_date_part(model: Model, source: str, dim: str) -> bool:
    """A date part (day_of_week, ...) the source has through its time column, unless it declares
    a dimension of that name."""
    return (dim in PARTS and bool(model.sources[source].time)
            and dim not in model.dimension_paths(source))


class ExtentsNeeded(QueryError):
    """The query depends on the first (or last) day of some sources' data, which the compiler does
    not know: the caller finds them (``extent_query``) and compiles again with ``extents``."""

    def __init__(self, sources: Sequence[str], why: str, hint: str):
        self.sources = tuple(sources)
        super().__init__(f"{why}, which is not known without asking the warehouse.", None, hint)


def interval_start_needed(source: str) -> ExtentsNeeded:
    return ExtentsNeeded([source], f"interval source '{source}' is read from the start of its data",
                         "Give --from (and no time function that reads all history), or run the request through "
                         "a project connected to its warehouse.")


class SourceReader:
    """Builds the CTEs that read and group one source's rows for a request: its relation (table
    or sql, map and where), dimensions through relationships, per-entity lookups, interval
    sources spread over periods, day totals and snapshot times."""

    def __init__(self, model: Model, request: Request, dialect: str, read_dialect: str,
                 extents: Mapping[str, Extent] | None = None, today: dt.date | None = None, rollups=None):
        self.model = model
        self.rollups = rollups  # rollups.RollupRoutes: the materialized day totals a grouping may read instead
        self.request = request
        self.dialect = dialect
        self.read_dialect = read_dialect
        self.extents = extents or {}  # source -> the days it has data for, where the query needs them
        self.calendar = model.project.config.calendar
        self.today = today or request.as_of or self.calendar.today()
        self.grain = request.grain
        self.dims = tuple(dict.fromkeys(request.dimensions))
        self.marker = "present"  # the presence marker's column name (the compiler picks it)

    def function(self, name: str, args: list[exp.Expression], local: bool = True) -> exp.Expression:
        plugin = self.model.functions.get(name)
        if plugin is None:
            value = scalar_function(name, args, self.dialect)
            # Unix time is UTC: seen in the project's time zone, as a stored timestamp is
            return self.calendar.local_time(value, local) if name == "from_unixtime" else value
        result = plugin.compile(args, self.dialect)
        if not isinstance(result, exp.Expression):
            raise QueryError(f"the plugin function '{name}' returned {type(result).__name__}, not a sqlglot expression.",
                             None, "Fix the plugin: compile() must build its result from sqlglot nodes.")
        return result

    def paths(self, source: str) -> Mapping[str, DimensionPath]:
        return self.model.dimension_paths(source)

    def has_dimension(self, source: str, dim: str) -> bool:
        return has_dimension(self.model, source, dim)

    def is_date_part(self, source: str, dim: str) -> bool:
        return is_date_part(self.model, source, dim)

    def column(self, source: SourceSpec, name: str, table: str | None = None, local: bool = True) -> exp.Expression:
        """A column of a source: the warehouse column, or what the source's ``map:`` binds it to
        (a formula over the table's columns). Timestamps are seen in the project's time zone
        (unless ``local`` is False: keys and dimensions are compared as stored)."""
        table = table or source.name
        mapped = self.model.mapped(source.name, name)
        if mapped is None:
            return self.warehouse_column(source, name, table, local)

        def leaf(node: n.Node) -> exp.Expression:
            if isinstance(node, n.Column):
                return self.warehouse_column(source, node.name, table, local)
            return compile_common(node, leaf, function)

        def function(name: str, args: list[exp.Expression]) -> exp.Expression:
            return self.function(name, args, local)

        return wrap(leaf(mapped))

    def warehouse_column(self, source: SourceSpec, name: str, table: str, local: bool = True) -> exp.Expression:
        column_type = self.model.warehouse.get(source.name, {}).get(name) or source.columns.get(name)
        return self.calendar.local_time(col(name, table), local and column_type == TIMESTAMP)

    def hop(self, fact: SourceSpec, owner: SourceSpec, table: str, rel: Relationship,
            alias: str) -> tuple[exp.Expression, exp.Expression]:
        """The relation a relationship of ``owner`` (read as ``table``) joins as ``alias``, and the
        join condition: every key column, and for a history source the version held at the fact
        row's time (or the latest one). Keys and validity are compared as stored."""
        target = self.model.sources[rel.to]
        on = [exp.EQ(this=self.column(owner, here, table, local=False),
                     expression=self.column(target, there, alias, local=False)) for here, there in rel.columns]
        if not target.valid_from:
            return self.relation(target, alias), exp.and_(*on, copy=False) if len(on) > 1 else on[0]
        history.check_dialect(self.dialect, rel)
        latest = rel.as_of == "latest"
        if not latest:
            history.check_fact_time(fact, rel)

        def column(name: str, at: str) -> exp.Expression:
            return self.column(target, name, at, local=False)

        relation = history.versions(target, self.relation(target, alias), alias, [b for _, b in rel.columns], column,
                                    latest)
        if not latest:
            time = self.column(fact, fact.time, local=False)
            kinds = (self.model.column_type(fact.name, fact.time),
                     self.model.column_type(target.name, target.valid_from))
            if set(kinds) == {"date", TIMESTAMP}:  # a DATE is its midnight; some warehouses compare neither mixed
                time = cast(time, "DATE" if kinds[1] == "date" else "TIMESTAMP")
            on.append(history.held_at(target, alias, column, time))
        return relation, exp.and_(*on, copy=False)

    def row_formula(self, source: SourceSpec, node: n.Node, table: str | None = None) -> exp.Expression:
        """A formula over one row of a source (an entity lookup's value, a where: condition)."""
        if isinstance(node, n.Column):
            return self.column(source, node.name, table)
        return compile_common(node, lambda child: self.row_formula(source, child, table), self.function)

    def relation(self, source: SourceSpec, alias: str | None = None, conversions_only: bool = False) -> exp.Expression:
        """The FROM item of a source (``source_relation``), keeping only the rows its ``where:``
        conditions let through; a conversion source's rows are built from its two sources (with
        ``conversions_only``, without the base events it otherwise carries)."""
        if source.conversion is not None:
            return conversion_relation(self, source, alias or source.name, events=not conversions_only)
        relation = source_relation(source, self.read_dialect, alias)
        condition = self.model.condition(source.name)
        if condition is None:
            return relation
        name = alias or source.name
        rows = select_from([exp.Star()], relation, where=self.row_formula(source, condition, name))
        return exp.Subquery(this=rows, alias=exp.TableAlias(this=ident(name)))

    def time_column(self, source: SourceSpec, name: str | None = None) -> tuple[exp.Expression, bool]:
        """The source's time column (or its column ``name``) in the project's time zone, and
        whether it is a DATE."""
        name = name or source.time
        return self.column(source, name), self.model.column_type(source.name, name) == "date"

    def day_of(self, source: SourceSpec, name: str) -> exp.Expression:
        """The local day of a date or timestamp column."""
        time, is_date = self.time_column(source, name)
        return time if is_date else cast(time, "DATE")

    def rows(self, source: SourceSpec, start: dt.date | None, conversions_only: bool = False
             ) -> tuple[exp.Expression, exp.Expression, bool]:
        """The FROM item a source is grouped from, from the day ``start`` on; its time column; and
        whether that is a DATE. An interval source's rows are spread over the periods first."""
        if source.time_end:
            return self.interval_rows(source, start), col(INTERVAL_DAY, source.name), True
        time, is_date = self.time_column(source)
        return self.relation(source, conversions_only=conversions_only), time, is_date

    def interval_rows(self, source: SourceSpec, start: dt.date | None) -> exp.Expression:
        """An interval source's rows, one copy per period of the request that each overlaps (from
        ``start``, up to --to and never beyond today: an open row is active until now), as of the
        period's last day, with two flags: active at the end of that day (what last() reads) and
        at the end of the period's first day (first()). A row is active on the days from its
        ``time`` up to the day before its ``time_end``."""
        if start is None and source.name not in self.extents:
            raise interval_start_needed(source.name)
        first = start or self.extents[source.name].first or self.today
        end = self.today + dt.timedelta(days=1)
        end = min(end, self.request.end) if self.request.end else end
        spans = [(first, end - dt.timedelta(days=1))]
        if self.grain and first < end:
            periods = self.calendar.periods(first, end, self.grain)
            if len(periods) > MAX_FILL_PERIODS:
                raise QueryError(f"interval source '{source.name}' would be spread over {len(periods):,} periods; "
                                 f"the limit is {MAX_FILL_PERIODS:,}.", None, "Use a coarser --grain or a shorter range.")
            spans = [(max(p, first), min(self.calendar.shift(p, self.grain, 1), end) - dt.timedelta(days=1))
                     for p in periods]
        spine = values_table([(date_literal(a), date_literal(b)) for a, b in spans], SPINE_CTE, ["first_day", "last_day"])
        starts, ends = self.day_of(source, source.time), self.day_of(source, source.time_end)
        first_day, last_day = col("first_day", SPINE_CTE), col("last_day", SPINE_CTE)

        def active_at(day: exp.Expression) -> exp.Expression:
            return exp.or_(exp.Is(this=copy_of(ends), expression=exp.Null()),
                           exp.GT(this=copy_of(ends), expression=day),
                           copy=False)

        def flag(condition: exp.Expression) -> exp.Expression:
            return exp.Case(ifs=[exp.If(this=condition, true=number(1))], default=number(0))

        # Active on some day of the period: from a day on or before its last, to a day after its
        # first and after the row's own first (a row that starts and ends on one day never is).
        overlaps = exp.and_(exp.LTE(this=copy_of(starts), expression=copy_of(last_day)),
                            wrap(active_at(copy_of(first_day))),
                            wrap(active_at(copy_of(starts))), copy=False) if first < end else exp.false()
        spread = exp.select(exp.Column(this=exp.Star(), table=ident(source.name)),
                            aliased(copy_of(last_day), INTERVAL_DAY),
                            aliased(flag(active_at(copy_of(last_day))), ACTIVE_AT_END),
                            aliased(flag(exp.and_(exp.LTE(this=copy_of(starts), expression=copy_of(first_day)),
                                                  wrap(active_at(copy_of(first_day))), copy=False)), ACTIVE_AT_START),
                            copy=False) \
            .from_(self.relation(source), copy=False)
        spread.append("joins", exp.Join(this=spine, on=overlaps))
        return exp.Subquery(this=spread, alias=exp.TableAlias(this=ident(source.name)))

    def source_ctes(self, read: "SourceRead", where: n.Node | None, marked: bool,
                    deferred: bool = False) -> list[tuple[str, exp.Expression | DaySplit]]:
        """The CTEs that group one source's rows from ``read.start``: [its day totals], [the snapshot
        time of each period], then its rows grouped by key (with a presence marker when ``marked``).
        A grouping a materialized rollup answers reads its day totals instead (rollups.py).
        ``deferred``: the day totals' cut into periods comes as a DaySplit, to build (periods_of)
        unless the compiler stacks the day totals instead."""
        if self.rollups is not None:
            chosen, _ = self.rollups.route(self, read, where)
            if chosen is not None:
                return self.rollups.ctes(self, read, where, marked, chosen)
        plan, start = read.plan, read.start
        source = plan.source
        name = source.name
        joins: dict[str, exp.Expression] = {}  # alias -> ON condition, in join order
        relations: dict[str, exp.Expression] = {}

        def reach(hops: Sequence[tuple[str, Relationship]]) -> tuple[str, SourceSpec]:
            """Join the rows to each source of ``hops`` in turn: the alias and source of the last."""
            table, owner = name, source
            for _, rel in hops:
                alias = f"{table}__{rel.path_name}"
                target = self.model.sources[rel.to]
                if alias not in joins:
                    relations[alias], joins[alias] = self.hop(source, owner, table, rel, alias)
                table, owner = alias, target
            return table, owner

        def dimension_column(dim: str) -> exp.Expression:
            if self.is_date_part(name, dim):  # of the row's local day (local time for hour_of_day)
                local = copy_of(time) if is_date or dim in TIME_PARTS else cast(copy_of(time), "DATE")
                return self.calendar.date_part(local, dim)
            path = self.paths(name)[dim]
            table, owner = reach(path.joins)
            return self.column(owner, path.dimension.column, table, local=False)

        lookups: dict[tuple[n.EntityLookup, bool], str] = {}  # (lookup, keys only) -> alias

        def lookup_join(lookup: n.EntityLookup, keys_only: bool) -> str:
            word = "with" if keys_only else "per"
            alias = lookups.setdefault((lookup, keys_only), f"{lookup.source}_{word}_{lookup.key}_{len(lookups) + 1}")
            if alias not in joins:
                relations[alias] = self.entity_subquery(lookup, alias, keys_only)
                joins[alias] = exp.EQ(this=self.column(source, lookup.key, local=False),
                                      expression=col(lookup.key, alias))
            return alias

        def row_value(node: n.Node) -> exp.Expression:
            if isinstance(node, n.Column):
                return self.column(source, node.name)
            if isinstance(node, n.Name):  # a dimension in --where
                return dimension_column(node.dotted)
            existence = existence_test(node)
            if existence is not None:
                lookup, present = existence
                key = col(lookup.key, lookup_join(lookup, keys_only=True))
                return exp.Is(this=key, expression=exp.Not(this=exp.Null()) if present else exp.Null())
            if isinstance(node, n.EntityLookup):
                value = col("value", lookup_join(node, keys_only=False))
                return exp.Coalesce(this=value, expressions=[number(0)]) if node.func in ZERO_WHEN_EMPTY else value
            return compile_common(node, row_value, self.function)

        rows, time, is_date = self.rows(source, start, read.conversions_only) if source.time \
            else (self.relation(source), None, False)
        # Rows have few distinct days: grouping them by day first and cutting the days into
        # periods afterwards truncates (and marks snapshots on) a few thousand day rows instead
        # of every row. Only aggregates that add up across days allow it, and a TIMESTAMP source
        # only without snapshots (taken at an exact time, not on a day). Its day is the local one.
        rows = self.entity_snapshot_marks(plan, rows, time, is_date, start)
        by_day = self.groups_by_day(read, is_date)
        days = read.days_cte
        ctes: list[tuple[str, exp.Expression]] = []
        if not by_day:  # (grouped by day, the snapshot days are marked in days_to_periods)
            for snapshot, agg in read.snapshots().items():
                ctes.append((snapshot, self.snapshot_times(agg, start)))
                if any(other.func == agg.func and other.per is None for other in plan.aggregates):
                    # (rows are marked at the source-wide snapshot; a per-entity one marks its own)
                    joins[snapshot] = exp.EQ(this=copy_of(time), expression=col("snapshot_time", snapshot))
                    relations[snapshot] = table_ref(snapshot)
        selects: list[exp.Expression] = []
        group: list[exp.Expression] = []
        if self.grain:
            # A window's days of a TIMESTAMP as the day totals of other reads take them (CAST AS
            # DATE), not truncated; in a project time zone the converted time keeps today's form.
            if by_day or (read.window_days and self.grain == "day" and not is_date and not self.calendar.timezone):
                bucket = copy_of(time) if is_date else cast(copy_of(time), "DATE")
            else:
                bucket = self.calendar.bucket(time, self.grain, self.dialect, is_date)
            selects.append(aliased(bucket, PERIOD))
            group.append(copy_of(bucket))
        # A dimension table reached through a key is joined to the day totals, grouped by the key
        # (late_joins), rather than to every row: the days are few (see days_to_periods).
        late = self.joined_on_days(read, where) if by_day else {}
        late_keys: dict[str, list[str]] = {}  # alias of the dimension table -> the key columns of the days
        for dim in self.dims:
            if dim in late:
                hops = self.paths(name)[dim].joins
                alias = late[dim]
                if alias not in late_keys:
                    table, owner = reach(hops[:-1])
                    late_keys[alias] = []
                    for here, _ in hops[-1][1].columns:
                        key = f"__kpi_key_{sum(map(len, late_keys.values())) + 1}"
                        column = self.column(owner, here, table, local=False)
                        selects.append(aliased(column, key))
                        group.append(copy_of(column))
                        late_keys[alias].append(key)
                continue
            column = dimension_column(dim)
            selects.append(aliased(column, dim))
            group.append(copy_of(column))
        # What lets a row's value into a distinct count: the aggregate's filter and, on a
        # conversion source, being a conversion (not one of the base events it carries).
        filters: dict[n.Aggregate, exp.Expression | None] = {}
        for agg in plan.aggregates if read.distinct_values else ():
            parts = [converted_only(name)] if source.conversion is not None else []
            parts += [wrap(row_value(agg.where))] if agg.where is not None else []
            filters[agg] = exp.and_(*parts, copy=False) if len(parts) > 1 else (parts[0] if parts else None)
        # A row no filter lets through would only form a NULL value, which COUNT(DISTINCT)
        # ignores, so when every value has a filter the filters (ORed) skip those rows in the
        # WHERE. (The rows to show come from the range read; under --fill the window reads'
        # keys are observed values, so there every row still counts.)
        filtered = (not self.request.fill and bool(filters)
                    and all(condition is not None for condition in filters.values()))
        for agg, alias in plan.aggregates.items():
            if read.distinct_values:  # grouped by, so each value is one row per key
                value = row_value(agg.arg)
                if filters[agg] is not None and not (filtered and len(filters) == 1):
                    value = exp.Case(ifs=[exp.If(this=copy_of(filters[agg]), true=value)])
                selects.append(aliased(value, alias))
                group.append(copy_of(value))
                continue
            selects.append(aliased(self.aggregate(agg, read, row_value, at_snapshot=not by_day, time=time), alias))
        if marked and not by_day:
            selects.append(aliased(number(1), self.marker))

        conditions = self.range_conditions(time, is_date, start, source) if source.time else []
        if where is not None:  # before the joins are added: a --where dimension may need one of its own
            conditions.append(wrap(row_value(where)))
        if filtered:
            kept = [wrap(copy_of(condition)) for condition in filters.values()]
            conditions.append(wrap(exp.or_(*kept, copy=False)) if len(kept) > 1 else kept[0])
        query = select_from(selects, rows, joins=[(relations[alias], condition) for alias, condition in joins.items()],
                            where=exp.and_(*conditions, copy=False) if conditions else None, group=group)
        if not by_day:
            return ctes + [(read.name, query)]
        # Without --where the day totals see every row in range, so the snapshot days can be
        # read off them and the source is scanned once; with it they need a scan of their own.
        ctes.append((days, query))
        for snapshot, agg in read.snapshots().items():
            ctes.append((snapshot, self.snapshot_times(agg, start, days if where is None else None)))
        split = DaySplit(read, days, marked, late, late_keys)
        return ctes + [(read.name, split if deferred else self.periods_of(split))]

    def periods_of(self, split: "DaySplit") -> exp.Select:
        return self.days_to_periods(split.read, split.days, split.marked, split.late, split.late_keys)

    def day_source(self, split: "DaySplit") -> DaySource | None:
        """What stacking these day totals with others' needs (key_fold.DaySource), read off what
        days_to_periods would build, without building it; None when they cannot be stacked: a
        snapshot aggregate (its period keeps only its snapshot days), a lookup joined on more
        than one column or not a plain table, more than one, or a key that is not one column."""
        read, days, late = split.read, split.days, split.late
        if read.snapshots() or len(set(late.values())) > 1:
            return None
        source = read.plan.source
        table = key = day_key = None
        attributes: dict[str, str] = {}
        if late:
            alias = next(iter(late.values()))
            rel = self.paths(source.name)[next(iter(late))].joins[-1][1]
            target = self.model.sources[rel.to]
            relation = self.relation(target, alias)
            if type(relation) is not exp.Table or len(rel.columns) != 1:
                return None
            there = self.column(target, rel.columns[0][1], alias, local=False)
            if type(there) is not exp.Column or there.table != alias:
                return None
            table, key, day_key = relation, there.name, split.late_keys[alias][0]
            table.set("alias", None)
            for dim in late:
                value = self.column(target, self.paths(source.name)[dim].dimension.column, alias, local=False)
                if type(value) is not exp.Column or value.table != alias:
                    return None
                attributes[dim] = value.name
        # The period's expression over the day column: at a built-in grain the same for every source
        # of the model in a dialect, so worked out once (read only: stacking copies it); a named
        # granularity's depends on the days the request reads (TimeWindows.span_custom_periods).
        shape_key = ("period shape", self.grain, self.dialect)
        period = None if self.calendar.is_custom(self.grain) else self.model.derived.get(shape_key)
        if period is None:
            period = one_column(self.calendar.bucket(col(PERIOD, days), self.grain, self.dialect, is_date=True),
                                days) or ()
            if not self.calendar.is_custom(self.grain):
                self.model.derived[shape_key] = period
        if not period:
            return None
        key_columns = {PERIOD: period, **{dim: (dim, col(SLOT)) for dim in self.dims if dim not in late}}
        columns: dict[str, tuple[str | None, type]] = {
            alias: (alias, {"min": exp.Min, "max": exp.Max}.get(agg.func, exp.Sum))
            for agg, alias in read.plan.aggregates.items()}
        if split.marked:
            columns[self.marker] = (None, exp.Max)
        if set(columns) & (set(key_columns) | set(attributes)):
            return None
        return DaySource(days, table, key, day_key, attributes, key_columns, columns)

    def joined_on_days(self, read: "SourceRead", where: n.Node | None) -> dict[str, str]:
        """The dimensions (of a source grouped by day) whose table is joined to the day totals
        instead of the rows, and the alias it is joined as: one reached through a many-to-one
        relationship on the whole primary key of a lookup table (no time column: a table of
        entities with a time of their own, such as customers, has about as many keys as the
        rows have, so grouping the days by its key would not make them fewer) without history
        (a versioned one is joined at each row's time), whose join no other column of the read
        needs (the --where or another dimension reached through it). Every day total of a key
        meets the same dimension rows as each of its rows would, so sums, counts, min and max
        are unchanged, and a key that is NULL or not in the table gets a NULL dimension as it
        would."""
        name = read.plan.source.name
        paths = self.paths(name)

        def aliases(hops) -> list[str]:
            table, found = name, []
            for _, rel in hops:
                table = f"{table}__{rel.path_name}"
                found.append(table)
            return found

        # the dimensions named in the --where and in the aggregates (each once: kept on their nodes)
        names = [node.dotted for node in n.found_below(where, n.Name, "_names")] if where is not None else []
        for agg in read.plan.aggregates:
            names += [node.dotted for part in (agg.arg, agg.where) if part is not None
                      for node in n.found_below(part, n.Name, "_names")]
        candidates: dict[str, str] = {}
        needed: set[str] = set()  # aliases the rows must be joined to
        for dim in list(self.dims) + names:
            path = None if self.is_date_part(name, dim) else paths.get(dim)
            if path is None or not path.joins:
                continue
            hops = aliases(path.joins)
            rel = path.joins[-1][1]
            target = self.model.sources[rel.to]
            keyed = set(target.primary_key) == {there for _, there in rel.columns} and bool(target.primary_key)
            if (dim in self.dims and dim not in names and rel.type == "many_to_one" and keyed
                    and not target.time and not target.valid_from and target.conversion is None):
                candidates[dim] = hops[-1]
                needed.update(hops[:-1])
            else:
                needed.update(hops)
        return {dim: alias for dim, alias in candidates.items() if alias not in needed}

    def groups_by_day(self, read: "SourceRead", is_date: bool) -> bool:
        """Whether the source is grouped by local day first and the days cut into periods."""
        return (self.grain not in (None, "day", *SUBDAILY) and not read.distinct_values
                and all(agg.func in REGROUPABLE and agg.per is None for agg in read.plan.aggregates)
                and (is_date or not read.plan.snapshots))

    def describe(self, read: "SourceRead", where: n.Node | None, days_stacked: bool = False) -> Step:
        """The plan step of ``source_ctes``: the rows read, how they are grouped, the aggregates.
        ``days_stacked``: the day totals are stacked with the other inputs' and cut into periods
        there, a dimension table joined once to the stack (key_fold.py): no second step here."""
        source = read.plan.source
        keys = ([PERIOD] if self.grain else []) + list(self.dims)
        notes = [f"rows: {_rows_of(source)} of source '{source.name}'"
                 + (f" where {formula(self.model.condition(source.name))}" if self.model.condition(source.name) else "")]
        if read.conversions_only:
            notes.append(f"the conversions only: the rows where there are base events come from the request's "
                         f"read of '{source.conversion.from_}'")
        routed, late = False, {}
        if self.rollups is not None:
            chosen, said = self.rollups.route(self, read, where)
            notes, routed = said + notes, chosen is not None
        if source.time:
            is_date = self.model.column_type(source.name, source.time) == "date"
            start = read.start.isoformat() if read.start else "the start of data"
            end = self.request.end.isoformat() if self.request.end else "the end of data"
            zone = f", in {self.calendar.timezone}" if self.calendar.timezone and not is_date else ""
            notes.append(f"time: {source.time} ({'date' if is_date else 'timestamp'}{zone}) from {start} to {end} "
                         "(end excluded)" + (f"; each row active from {source.time} to {source.time_end}"
                                             if source.time_end else ""))
            late = self.joined_on_days(read, where) if self.groups_by_day(read, is_date) and not routed else {}
            if self.grain:
                notes.append(f"period: the {self.grain} of {'the rollup day' if routed else source.time}"
                             + (", cut from the day totals once stacked with the other inputs'" if days_stacked
                                else ", from day totals (grouped by day first)" if self.groups_by_day(read, is_date)
                                and not routed else ""))
        for dim in self.dims:
            if self.is_date_part(source.name, dim):
                notes.append(f"{dim}: of {source.time}")
            elif self.paths(source.name)[dim].joins:
                hops = " -> ".join([source.name] + [rel.to for _, rel in self.paths(source.name)[dim].joins])
                notes.append(f"{dim}: through {hops} (many-to-one)"
                             + ("" if dim not in late else ", the day totals grouped by its key, the table joined "
                                "once to the stack" if days_stacked else ", joined to the day totals"))
        if where is not None:
            notes.append(f"--where {formula(where)}")
        for agg, alias in read.plan.aggregates.items():
            if read.distinct_values:
                notes.append(f"{alias}: the distinct values of {formula(agg)} per day, counted per window")
            else:
                notes.append(f"{alias} = {formula(agg)}")
        for snapshot, agg in read.snapshots().items():
            notes.append(f"{snapshot}: the {'last' if agg.func == 'last' else 'first'} snapshot time of each period")
        if days_stacked:  # grouped by day (and a dimension table's key) only
            keys = ["day"] + [f"the key of {self.paths(source.name)[dim].joins[-1][1].to}" if dim in late else dim
                              for dim in self.dims]
            return Step(f"Aggregate {read.days_cte}: {source.name} by {', '.join(dict.fromkeys(keys))}", notes)
        return Step(f"Aggregate {read.name}: {source.name} by {', '.join(keys) or 'nothing (one row)'}", notes)

    def range_conditions(self, time: exp.Expression, is_date: bool, start: dt.date | None,
                         source: SourceSpec | None = None) -> list[exp.Expression]:
        """A row belongs to the period of its time; a row without one belongs to none. With
        ``source``, a time read in the project's time zone is also bounded as stored (see
        ``stored_bound``)."""
        conditions: list[exp.Expression] = [exp.Is(this=copy_of(time), expression=exp.Not(this=exp.Null()))]
        for compare, day in ((exp.GTE, start), (exp.LT, self.request.end)):
            if day:
                conditions.append(compare(this=copy_of(time), expression=bound(day, is_date)))
                stored = self.stored_bound(source, compare, day) if source is not None else None
                if stored is not None:
                    conditions.append(stored)
        return conditions

    def stored_bound(self, source: SourceSpec, compare, day: dt.date) -> exp.Expression | None:
        """A bound on the stored time implied by ``compare(local time, day)`` (GTE or LT), for a
        timestamp column read in the project's time zone (None otherwise). Converted, the time is an
        expression no scan can skip row groups by: this bound, two days wider than any zone's
        offset, lets the warehouse skip the rows outside the range (zone maps) without changing
        which rows meet the exact condition."""
        if source.time_end or source.conversion:
            return None  # rows spread over periods, or pairs of events: the time is not a stored column
        time, _ = self.time_column(source)
        stored = self.column(source, source.time, local=False)
        if stored == time or self.model.mapped(source.name, source.time) is not None:
            return None  # no conversion (a DATE, no time zone), or a map: formula
        wide = day + dt.timedelta(days=-2 if compare is exp.GTE else 2)
        return compare(this=cast(stored, "TIMESTAMP"), expression=bound(wide, False))

    def days_to_periods(self, read: "SourceRead", days: str, marked: bool, late: Mapping[str, str] | None = None,
                        late_keys: Mapping[str, Sequence[str]] | None = None) -> exp.Select:
        """Second stage of a source grouped by day: cut the days into periods and add up the
        day totals; snapshot aggregates keep the days that are their period's snapshot. The
        dimension tables of ``late`` (dimension -> alias, see joined_on_days) are joined here,
        on the key columns ``late_keys`` the days were grouped by."""
        late, late_keys = late or {}, late_keys or {}
        bucket = self.calendar.bucket(col(PERIOD, days), self.grain, self.dialect, is_date=True)
        selects = [aliased(bucket, PERIOD)]
        group = [copy_of(bucket)]
        joined: dict[str, tuple[exp.Expression, exp.Expression]] = {}  # alias -> (relation, ON)
        for dim in self.dims:
            value = col(dim, days)
            if dim in late:
                alias, rel = late[dim], self.paths(read.plan.source.name)[dim].joins[-1][1]
                target = self.model.sources[rel.to]
                if alias not in joined:
                    on = [exp.EQ(this=col(key, days), expression=self.column(target, there, alias, local=False))
                          for key, (_, there) in zip(late_keys[alias], rel.columns)]
                    joined[alias] = (self.relation(target, alias), exp.and_(*on, copy=False) if len(on) > 1 else on[0])
                value = self.column(target, self.paths(read.plan.source.name)[dim].dimension.column, alias, local=False)
            selects.append(aliased(value, dim))
            group.append(copy_of(value))
        for agg, alias in read.plan.aggregates.items():
            day_total = col(alias, days)
            if agg.func in SNAPSHOTS:
                value = aggregate_sql("sum", day_total, snapshot_mark(read.snapshot_cte(agg)), self.dialect)
                if agg.arg is None:  # a count of no rows is 0, a sum of none is NULL
                    value = exp.Coalesce(this=value, expressions=[number(0)])
            else:
                value = {"min": exp.Min, "max": exp.Max}.get(agg.func, exp.Sum)(this=day_total)
            selects.append(aliased(value, alias))
        if marked:
            selects.append(aliased(number(1), self.marker))
        snapshots = [(table_ref(snapshot), exp.EQ(this=col(PERIOD, days), expression=col("snapshot_time", snapshot)))
                     for snapshot in read.snapshots()]
        return select_from(selects, table_ref(days), joins=list(joined.values()) + snapshots, group=group)

    def aggregate(self, agg: n.Aggregate, read: "SourceRead", row_value: Callable[[n.Node], exp.Expression],
                  at_snapshot: bool = True, time: exp.Expression | None = None) -> exp.Expression:
        """The aggregate over a source's rows. With ``at_snapshot=False`` a snapshot aggregate
        covers every row (days_to_periods keeps the snapshot days later)."""
        arg = row_value(agg.arg) if agg.arg is not None else None
        where = row_value(agg.where) if agg.where is not None else None
        if read.plan.source.conversion is not None and not read.conversions_only:  # (else every row is one)
            converted = converted_only(read.plan.source.name)
            where = converted if where is None else exp.and_(converted, wrap(where), copy=False)
        if agg.per is not None:  # each entity's own latest (earliest) row of the period
            own = exp.EQ(this=copy_of(time), expression=col(_entity_mark(agg), read.plan.source.name))
            where = own if where is None else exp.and_(own, wrap(where), copy=False)
            return aggregate_sql("sum" if arg is not None else "count", arg, where, self.dialect)
        if agg.func in SNAPSHOTS and read.plan.source.time_end:  # the rows active at the period's end (start)
            active = exp.EQ(this=col(ACTIVE_AT_END if agg.func == "last" else ACTIVE_AT_START, read.plan.source.name),
                            expression=number(1))
            where = active if where is None else exp.and_(active, wrap(where), copy=False)
        if agg.func in SNAPSHOTS and not at_snapshot:
            return aggregate_sql("sum" if arg is not None else "count", arg, where, self.dialect)
        if agg.func in SNAPSHOTS:
            # Semi-additive: only rows of the period's last (first) snapshot count, summed across entities.
            marked = snapshot_mark(read.snapshot_cte(agg))
            where = marked if where is None else exp.and_(marked, wrap(where), copy=False)
            return aggregate_sql("sum" if arg is not None else "count", arg, where, self.dialect)
        return aggregate_sql(agg.func, arg, where, self.dialect, agg.fraction)

    def entity_snapshot_marks(self, plan: SourcePlan, rows: exp.Expression, time: exp.Expression | None,
                              is_date: bool, start: dt.date | None) -> exp.Expression:
        """The source's rows in range with, for each last(x per key) / first(x per key), the time
        of the key's latest (earliest) row in the row's period: a window over the rows of the
        range only, so an entity's row outside it never hides the ones inside."""
        marks = {_entity_mark(agg): agg for agg in plan.aggregates if agg.per is not None}
        if not marks:
            return rows
        source = plan.source
        selects: list[exp.Expression] = [exp.Column(this=exp.Star(), table=ident(source.name))]
        for name, agg in marks.items():
            partition = [self.column(source, agg.per, local=False)]
            if self.grain:
                partition.append(self.calendar.bucket(copy_of(time), self.grain, self.dialect, is_date))
            pick = exp.Max if agg.func == "last" else exp.Min
            selects.append(aliased(exp.Window(this=pick(this=copy_of(time)), partition_by=partition), name))
        in_range = exp.and_(*self.range_conditions(time, is_date, start), copy=False)
        query = select_from(selects, rows, where=in_range)
        return exp.Subquery(this=query, alias=exp.TableAlias(this=ident(source.name)))

    def snapshot_times(self, agg: n.Aggregate, start: dt.date | None, days: str | None = None) -> exp.Select:
        """The period and the last (first) snapshot time of each period with rows, over all the
        source's rows in range: SELECT period, MAX(time) ... GROUP BY period. Joined to the rows on
        the time column itself (a cheap hash join, never a fan-out), it marks the rows at the
        snapshot; joined to the keys on the period, it tells a period without any snapshot.
        ``days`` names a CTE of the source's day totals (days_to_periods) to read them off."""
        pick = exp.Max if agg.func == "last" else exp.Min

        def per_period(time: exp.Expression, relation: exp.Expression, is_date: bool) -> exp.Select:
            selects = [aliased(pick(this=copy_of(time)), "snapshot_time")]
            if self.grain:
                bucket = self.calendar.bucket(copy_of(time), self.grain, self.dialect, is_date)
                selects.insert(0, aliased(bucket, PERIOD))
            query = exp.select(*selects, copy=False).from_(relation, copy=False)
            return query.group_by(copy_of(bucket), copy=False) if self.grain else query

        if days is not None:
            return per_period(col(PERIOD, days), table_ref(days), is_date=True)
        source = self.model.sources[agg.source]
        relation, time, is_date = self.rows(source, start)
        in_range = exp.and_(*self.range_conditions(time, is_date, start), copy=False)
        if not (is_date and self.grain):
            return per_period(time, relation, is_date=False).where(in_range, copy=False)
        # The distinct days first, then the periods: as in days_to_periods, few values to truncate.
        distinct_days = exp.select(aliased(copy_of(time), PERIOD), copy=False) \
            .from_(relation, copy=False).where(in_range, copy=False).group_by(copy_of(time), copy=False)
        return per_period(col(PERIOD, "snapshot_days"),
                          exp.Subquery(this=distinct_days, alias=exp.TableAlias(this=ident("snapshot_days"))), is_date=True)

    def entity_subquery(self, lookup: n.EntityLookup, alias: str, keys_only: bool = False) -> exp.Expression:
        """One row per key value of the inner source: cannot fan out when joined on the key.
        With ``keys_only``, just the distinct keys that have a row (see existence_test)."""
        inner = self.model.sources[lookup.source]

        def inner_value(node: n.Node) -> exp.Expression:
            return self.row_formula(inner, node)

        # The condition filters the rows before grouping: a key left without rows is
        # missing from the subquery, which reads as 0 for counts and sums and NULL
        # otherwise, exactly what the aggregate over no rows gives.
        conditions = [wrap(inner_value(lookup.where))] if lookup.where is not None else []
        if inner.conversion is not None:
            conditions.append(converted_only(inner.name))
        key = self.column(inner, lookup.key, local=False)
        selects = [aliased(key, lookup.key)]
        if keys_only:
            if lookup.arg is not None:  # count(x.col per key) counts the rows where col is not null
                conditions.append(exp.Is(this=wrap(inner_value(lookup.arg)), expression=exp.Not(this=exp.Null())))
        else:
            value = aggregate_sql(lookup.func, inner_value(lookup.arg) if lookup.arg is not None else None, None,
                                   self.dialect)
            selects.append(aliased(value, "value"))
        subquery = select_from(selects, self.relation(inner), group=[copy_of(key)],
                               where=exp.and_(*conditions, copy=False) if conditions else None)
        return exp.Subquery(this=subquery, alias=exp.TableAlias(this=ident(alias)))


def _entity_mark(agg: n.Aggregate) -> str:
    """The column holding the time of each entity's latest (earliest) row: last(x per key)."""
    return f"__kpi_{agg.func}_per_{agg.per}"


def _rows_of(source) -> str:
    """What a source's rows are, in a plan's words."""
    spec = source.conversion
    if spec is not None:
        within = f" within {spec.within[0]} {spec.within[1]}" if spec.within else ""
        return f"the rows of '{spec.to}' that follow a row of '{spec.from_}' of the same {spec.per}{within}"
    return source.table or "the sql: query"

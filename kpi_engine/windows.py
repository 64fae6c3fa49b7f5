"""Time windows of a request: how far back its sources are read, the series with every period
where a time function reads another, the window functions of each time function, the shifted
periods of previous(x, '1 year') and at_start(), and the windows counted from a source's days
(rolling(x, '30 days') at a coarser grain, running and rolling distinct counts).

compiler.py asks this module for each of them as it assembles the query; SourceReader
(source_sql.py) builds the per-source CTEs these windows read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from sqlglot import exp

from . import nodes as n
from .calendar import SUBDAILY, at_grain, cast, grain_rank
from .completeness import Extent
from .errors import QueryError
from .plan import Step, window_how, window_text
from .plan import formula as plan_text
from .source_sql import (MAX_FILL_PERIODS, PERIOD, PERIOD_INDEX, SPINE_CTE, ZERO_WHEN_EMPTY, ExtentsNeeded,
                         SourcePlan, SourceRead, SourceReader)
from .sql_build import aliased, col, date_literal, ident, keys_match, left_join, number, period_literal, table_ref, values_table
from .time_ops import WindowLeaf

if TYPE_CHECKING:
    from .compiler import Request
    from .resolve import Model

SERIES_CTE, WINDOWED_CTE = "series", "windowed"
# Windows listed as (period, day) rows (window_spine) up to this many rows in all and windows of
# up to this many days; beyond, each window is its first and last day (a range join).
MAX_WINDOW_DAYS, MAX_WINDOW_LENGTH = 20_000, 400


class TimeWindows:
    """The time side of one request's query (see the module's docstring). ``reader`` holds the
    project's calendar, which a named granularity narrows to the days read (span_custom_periods)."""

    def __init__(self, model: "Model", request: "Request", dialect: str, reader: SourceReader,
                 extents: Mapping[str, Extent]):
        self.model = model
        self.request = request
        self.dialect = dialect
        self.reader = reader
        self.extents = extents
        self.grain = request.grain
        self.dims = reader.dims
        self.keys = ([PERIOD] if self.grain else []) + list(self.dims)

    @property
    def calendar(self):
        return self.reader.calendar

    def span_custom_periods(self, history_start: dt.date | None, plans: Mapping[str, SourcePlan]) -> None:
        """A named granularity is cut in SQL by the boundaries of the days the query reads: from
        the first day read (earlier than --from for the windows) to --to; an open end is the
        data's first or last day, asked of the warehouse (ExtentsNeeded)."""
        first, end = history_start, self.request.end
        if first is None or end is None:
            timed = [name for name, plan in plans.items() if plan.source.time]
            if any(name not in self.extents for name in timed):
                raise ExtentsNeeded(timed, f"--grain {self.grain} is cut by the boundaries of the days read, and the "
                                    "range is open: it needs the first and last day of the data",
                                    "Give --from and --to, or run the request through a project connected to its "
                                    "warehouse.")
            known = [self.extents[name] for name in timed if self.extents[name].first]
            data_first = min((extent.first for extent in known), default=None)
            data_last = max((extent.last for extent in known), default=None)
            first = first or data_first or end or self.reader.today
            end = end or (data_last + dt.timedelta(days=1) if data_last else first + dt.timedelta(days=1))
        end = max(end, first + dt.timedelta(days=1))
        self.reader.calendar = self.calendar.spanning(first, end)

    def first_period(self) -> dt.date:
        """The first period shown: the one --from falls in."""
        return self.calendar.period_start(self.request.start, self.grain)

    def widened_start(self, leaves: Sequence[WindowLeaf]) -> dt.date | None | bool:
        """The first day source rows are read from: earlier than --from when a time
        function needs earlier periods; None when it needs all history. (share() reads the
        requested range only.)"""
        start = self.request.start
        leaves = [leaf for leaf in leaves if leaf.kind != "total"]
        if start is None or not leaves:
            return start
        if not self.grain:  # only cumulative and share are allowed without a grain
            if any(leaf.kind == "cumulative" for leaf in leaves):
                raise QueryError("cumulative() without --grain cannot be combined with --from: the one total row "
                                 "cannot both start at --from and include earlier history.", None,
                                 "Add --grain (the last period then holds the running total), or drop --from.")
            return start
        first = self.calendar.period_start(start, self.grain)
        earliest = first
        for leaf in leaves:
            before = self.reach(first, leaf)
            if before is None:
                return None
            earliest = min(earliest, at_grain(before, self.grain))
        return earliest

    def reach(self, first: dt.date, leaf: WindowLeaf) -> dt.date | None:
        """The first period ``leaf`` reads to give its value at period ``first`` (through the
        leaves below it); None for all history. An earlier period before year 1 holds no rows:
        then every row up to --to is read (None) too."""
        if leaf.kind == "previous" and leaf.start_of:
            before = self.calendar.try_period_start(first, leaf.start_of)
        elif leaf.kind == "previous" and leaf.months:
            before = self.calendar.try_period_start(self.calendar.months_back(first, leaf.months), self.grain)
        elif leaf.kind == "previous":
            before = self.calendar.try_shift(first, self.grain, -leaf.periods)
        elif self.over_days(leaf):  # its own read of the source's days goes back as far as it needs
            before = first
        elif leaf.kind == "rolling":
            before = self.calendar.try_shift(first, self.grain, -(leaf.periods - 1))
        elif leaf.kind == "cumulative":
            before = self.calendar.try_period_start(first, leaf.reset) if leaf.reset else None
        else:  # share(): the same period
            before = first
        if before is None or not isinstance(leaf.agg, WindowLeaf):
            return before
        return self.reach(before, leaf.agg)

    def series_range(self, sources: Sequence[str], start, why: str = "a time function over another time function"
                     ) -> tuple[dt.date | None, dt.date | None]:
        """[start, end) of a series with every period (time functions over time functions, windows
        in days): from ``start`` (the first period the windows read) or else the first day of the
        ``sources``' data, to --to or else the day after their last."""
        timed = [name for name in sources if self.model.sources[name].time]
        needs_data = not isinstance(start, dt.date) or self.request.end is None
        if needs_data and any(name not in self.extents for name in timed):
            raise ExtentsNeeded(timed, f"{why} lists every period from the first to the last day of the data",
                                "Give --from and --to (with no time function that reads all history, such as "
                                "cumulative() without a restart), or run the request through a project connected "
                                "to its warehouse.")
        known = [self.extents[name] for name in timed if name in self.extents and self.extents[name].first]
        if not isinstance(start, dt.date):
            start = min((extent.first for extent in known), default=None)
        end = self.request.end or max((extent.end for extent in known), default=None)
        return start, end

    def dense_keys(self, observed: exp.Expression, start: dt.date | None, end: dt.date | None) -> exp.Expression:
        """Observed keys plus every period of [start, end) for every observed dimension value."""
        # Sub-daily periods are counted before they are listed: a year of seconds is not listed one by one.
        bounded = start is not None and end is not None
        about = self.calendar.count_periods(start, end, self.grain) if bounded and self.grain in SUBDAILY else 0
        periods = self.calendar.periods(start, end, self.grain) if bounded and about <= MAX_FILL_PERIODS else []
        if about > MAX_FILL_PERIODS or len(periods) > MAX_FILL_PERIODS:
            count = f"about {about:,}" if about > MAX_FILL_PERIODS else f"{len(periods):,}"
            why = "--fill" if self.request.fill else "A time function over another time function"
            raise QueryError(f"{why} would list {count} periods; the limit is {MAX_FILL_PERIODS:,}.", None,
                             "Use a coarser --grain or a shorter range.")
        if not periods:  # a range that ends before the data starts: nothing to add (and VALUES needs a row)
            return observed
        spine = values_table([(period_literal(p),) for p in periods], SPINE_CTE, [PERIOD])
        dense = exp.select(col(PERIOD, SPINE_CTE), *[col(d, "observed") for d in self.dims], copy=False).from_(spine, copy=False)
        if self.dims:
            combos = exp.select(*[col(d) for d in self.dims], copy=False).distinct(copy=False).from_(
                exp.Subquery(this=observed.copy(), alias=exp.TableAlias(this=ident("observed_keys"))), copy=False)
            dense = dense.join(exp.Subquery(this=combos, alias=exp.TableAlias(this=ident("observed"))),
                               join_type="CROSS", copy=False)
        return exp.union(observed, dense, distinct=True, copy=False)

    def over_days(self, leaf: WindowLeaf) -> bool:
        """Windows added up from the source's days rather than framed over the period series: a
        window in days at a coarser grain, and a running or rolling distinct count (distinct
        counts of periods do not add up: the same contact in two months is one contact)."""
        return leaf.depth == 1 and (leaf.days is not None or (leaf.kind == "rolling" and leaf.months) or (
            self.grain is not None and leaf.kind in ("rolling", "cumulative") and leaf.agg.func == "count_distinct"))

    def day_windows(self, leaves: Sequence[WindowLeaf], start, where: n.Node | None, cte: Mapping[str, str]
                    ) -> tuple[list[tuple[str, exp.Expression]], dict[WindowLeaf, tuple[str, str]], list[Callable]]:
        """The windows a frame over the period series cannot give (see ``over_days``): each
        period's window of days, [first day, last day], joined to the source's day totals (or, for
        a distinct count, its distinct values per day) and added up (counted) per period and
        dimensions. A window ends on the period's last day (the day before --to, for a period it
        cuts). Returns the CTEs, per leaf the CTE and column holding its value, and a plan step maker
        per window CTE."""
        if self.grain in SUBDAILY:
            raise QueryError(f"{window_text(leaves[0])} is counted from the source's days, which --grain {self.grain} "
                             "cuts into smaller periods.", None,
                             "Use --grain day or coarser for running and rolling distinct counts and windows in days "
                             "or months, or a window in whole periods (rolling(x, 24) by hour).")
        first, end = self.series_range([leaf.agg.source for leaf in leaves], start, "this window")
        periods = self.calendar.periods(first, end, self.grain) if first and end else []
        if len(periods) > MAX_FILL_PERIODS:
            raise QueryError(f"the windows would list {len(periods):,} periods; the limit is {MAX_FILL_PERIODS:,}.",
                             None, "Use a coarser --grain or a shorter range.")
        day_reader = SourceReader(self.model, replace(self.request, grain="day"), self.dialect,
                                  self.reader.read_dialect, self.extents, self.reader.today, self.reader.rollups)
        ctes, columns, steps = [], {}, []
        groups: dict[tuple, list[WindowLeaf]] = {}
        for leaf in leaves:  # one read per source and window; a distinct count reads its values alone
            distinct = leaf.agg if leaf.agg.func == "count_distinct" else None
            groups.setdefault((leaf.agg.source, leaf.kind, leaf.days, leaf.periods, leaf.reset, distinct), []).append(leaf)
        for i, ((source, *_), group) in enumerate(groups.items()):
            if not periods:
                continue  # no data and no range: no rows to show
            name = f"{cte[source]}_window_{i + 1}"
            plan = SourcePlan(self.model.sources[source])
            for leaf in group:
                plan.column_for(leaf.agg)
            spans = [self.days_of_window(group[0], period, end) for period in periods]
            read_start = min(day for day, _ in spans)
            totals = SourceRead(f"{name}_days", plan, read_start if read_start > dt.date.min else None,
                                distinct_values=group[0].agg.func == "count_distinct", window_days=True)
            ctes += day_reader.source_ctes(totals, where, marked=False)
            spine, inside = self.window_spine(periods, spans, col(PERIOD, totals.name))
            selects = [aliased(col(PERIOD, "windows"), PERIOD)]
            selects += [aliased(col(d, totals.name), d) for d in self.dims]
            for agg, alias in plan.aggregates.items():
                value = col(alias, totals.name)
                if agg.func == "count_distinct":
                    total = exp.Count(this=exp.Distinct(expressions=[value]))
                else:
                    total = {"min": exp.Min, "max": exp.Max}.get(agg.func, exp.Sum)(this=value)
                selects.append(aliased(total, alias))
            query = exp.select(*selects, copy=False).from_(spine, copy=False) \
                .join(table_ref(totals.name), on=inside, join_type="INNER", copy=False) \
                .group_by(col(PERIOD, "windows"), *[col(d, totals.name) for d in self.dims], copy=False)
            ctes.append((name, query))
            columns.update({leaf: (name, plan.aggregates[leaf.agg]) for leaf in group})
            steps.append(lambda name=name, group=group, totals=totals: Step(
                f"Windows {name}: each period's window of days, by {', '.join(self.keys)}",
                [f"{plan_text(leaf.agg)}: {leaf.kind}, {window_how(leaf)} (a period cut by --to: to the day "
                 "before --to)" for leaf in group], [day_reader.describe(totals, where)]))
        return ctes, columns, steps

    @staticmethod
    def window_spine(periods: Sequence[dt.date], spans: Sequence[tuple[dt.date, dt.date]], day: exp.Expression
                     ) -> tuple[exp.Expression, exp.Expression]:
        """The windows as a relation and the condition that puts a ``day`` in one. Each window's
        days as (period, day) rows, joined on the day (a hash join): the windows' first days and
        lengths, times the offsets 0, 1, ... of the longest. Windows from the start of data, longer
        than MAX_WINDOW_LENGTH days or more than MAX_WINDOW_DAYS days in all stay (period,
        first_day, last_day) rows joined by BETWEEN (a range join, slower on many day rows).
        The offsets are crossed with the windows and kept in WHERE: some engines (ClickHouse)
        join on equalities only."""
        lengths = [(b - a).days + 1 for a, b in spans]
        longest = max(lengths, default=0)
        if (all(a > dt.date.min for a, _ in spans) and 0 < longest <= MAX_WINDOW_LENGTH
                and sum(max(length, 0) for length in lengths) <= MAX_WINDOW_DAYS):
            starts = values_table([(date_literal(period), date_literal(a), number(length))
                                   for period, (a, _), length in zip(periods, spans, lengths)],
                                  "spans", [PERIOD, "first_day", "days"])
            offsets = values_table([(number(i),) for i in range(longest)], "offsets", ["day_offset"])
            listed_day = cast(exp.DateAdd(this=col("first_day", "spans"), expression=col("day_offset", "offsets"),
                                          unit=exp.var("DAY")), "DATE")
            listed = exp.select(aliased(col(PERIOD, "spans"), PERIOD),
                                aliased(listed_day, "day"), copy=False) \
                .from_(starts, copy=False).join(offsets, join_type="CROSS", copy=False) \
                .where(exp.LT(this=col("day_offset", "offsets"), expression=col("days", "spans")), copy=False)
            return (exp.Subquery(this=listed, alias=exp.TableAlias(this=ident("windows"))),
                    exp.EQ(this=day, expression=col("day", "windows")))
        spine = values_table([(date_literal(period), date_literal(a), date_literal(b))
                              for period, (a, b) in zip(periods, spans)], "windows", [PERIOD, "first_day", "last_day"])
        return spine, exp.Between(this=day, low=col("first_day", "windows"), high=col("last_day", "windows"))

    def days_of_window(self, leaf: WindowLeaf, period: dt.date, series_end: dt.date) -> tuple[dt.date, dt.date]:
        """The first and last day of ``leaf``'s window for ``period`` (date.min: from the start).
        Only --to cuts a window short: without it, the last period's window still ends on the
        period's last day, not on the last day of data, which depends on the other sources of the
        request (a KPI asked alone or with others must give the same number)."""
        after = self.calendar.try_shift(period, self.grain, 1) or series_end
        cut = self.request.end
        last = (min(after, cut) if cut else after) - dt.timedelta(days=1)
        if leaf.days:
            first = last - dt.timedelta(days=leaf.days - 1) if last.toordinal() > leaf.days else dt.date.min
        elif leaf.kind == "rolling" and leaf.months:  # from the day after the same day that many months back
            first = self.calendar.months_back(last, leaf.months) + dt.timedelta(days=1)
        elif leaf.kind == "rolling":
            first = self.calendar.try_shift(period, self.grain, -(leaf.periods - 1)) or dt.date.min
        elif leaf.reset:  # cumulative with a restart: from the first period that starts in this restart period
            first = self.first_in_reset(period, leaf.reset)
        else:  # cumulative: from the start of data
            first = dt.date.min
        return first, last

    def first_in_reset(self, period: dt.date, reset: str) -> dt.date:
        """The first day of the first ``grain`` period that starts inside the ``reset`` period holding
        ``period``'s first day: a running total restarted every ``reset`` adds up the periods that
        start in it (a week starting on 30 December counts with the year before, as the count's
        window partitions by the restart period of each period's first day), so a window of days
        must not reach back to days of a period that belongs to the previous restart (the 1st to
        the 5th of January, there)."""
        start = self.calendar.try_period_start(period, reset)
        if start is None:
            return dt.date.min
        holding = self.calendar.period_start(start, self.grain)
        return start if holding == start else (self.calendar.try_shift(holding, self.grain, 1) or start)

    def window(self, leaf: WindowLeaf, column: str, table: str = SERIES_CTE) -> exp.Expression:
        """The ``leaf``'s window over ``column`` of ``table`` (the series, or the stage before)."""
        value = col(column, table)
        func = {"min": exp.Min, "max": exp.Max}.get(leaf.base.func, exp.Sum)
        dims = [col(d, table) for d in self.dims]
        if leaf.kind == "total":
            partition = [col(PERIOD, table)] if self.grain else []
            return exp.Window(this=func(this=value), partition_by=partition)
        if not self.grain:  # cumulative over the whole range: the total from the start of data
            return value
        # The index is never null; say so in the dialect's own default so none has to emulate NULLS LAST.
        from sqlglot.dialects.dialect import Dialect

        nulls_first = Dialect.get_or_raise(self.dialect).NULL_ORDERING == "nulls_are_small"
        order = exp.Order(expressions=[exp.Ordered(this=col(PERIOD_INDEX, table), nulls_first=nulls_first)])
        step = self.calendar.index_step(self.grain)
        if leaf.kind == "cumulative":
            # A ROWS frame needs only the order, which the period itself gives (the index is a
            # number for RANGE frames; ordering by the period spares computing it).
            order = exp.Order(expressions=[exp.Ordered(this=col(PERIOD, table), nulls_first=nulls_first)])
            partition = dims
            if leaf.reset:
                built_in = not (self.calendar.is_custom(self.grain) or self.calendar.is_custom(leaf.reset))
                if built_in and grain_rank(leaf.reset) < grain_rank(self.grain):
                    raise QueryError(f"cumulative(x, '{leaf.reset}') restarts more often than the --grain "
                                     f"'{self.grain}' periods it adds up.", None,
                                     f"Use a coarser restart than '{self.grain}', or a finer --grain.")
                partition = dims + [self.calendar.bucket(col(PERIOD, table), leaf.reset, self.dialect,
                                                         is_date=self.grain not in SUBDAILY)]
            spec = exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")
            return exp.Window(this=func(this=value), partition_by=partition, order=order, spec=spec)
        if leaf.kind == "rolling":
            spec = exp.WindowSpec(kind="RANGE", start=number((leaf.periods - 1) * step), start_side="PRECEDING",
                                  end="CURRENT ROW")
            return exp.Window(this=func(this=value), partition_by=dims, order=order, spec=spec)
        # previous: a frame of exactly the period N back holds that period's row, or none.
        offset = number(leaf.periods * step)
        spec = exp.WindowSpec(kind="RANGE", start=offset, start_side="PRECEDING", end=offset.copy(),
                              end_side="PRECEDING")
        window = exp.Window(this=exp.Max(this=value), partition_by=dims, order=order, spec=spec)
        return exp.Coalesce(this=window, expressions=[number(0)]) if leaf.base.func in ZERO_WHEN_EMPTY else window

    def shifted_period(self, table: str, leaf: WindowLeaf) -> exp.Expression:
        """The period (of the grain) a previous() ``leaf`` reads from ``table``'s period: the one
        holding the day ``leaf.months`` months before its start (the warehouse stops at a shorter
        month's last day), or the first period of its ``leaf.start_of`` period (at_start)."""
        if leaf.start_of:
            shifted = self.calendar.bucket(col(PERIOD, table), leaf.start_of, self.dialect,
                                           is_date=self.grain not in SUBDAILY)
        else:
            shifted = exp.DateAdd(this=col(PERIOD, table), expression=number(-leaf.months), unit=exp.var("MONTH"))
        return self.calendar.bucket(shifted, self.grain, self.dialect, is_date=True)

    def shifted_value(self, windowed: exp.Select, leaf: WindowLeaf, column: str, table: str = SERIES_CTE
                      ) -> exp.Expression:
        """previous(x, '1 year') at a day or week grain, at_start(x, 'month'): the value of the
        ``table`` row of the period read, joined on it (no window frame has a fixed length in days)."""
        alias = f"{table}_{_shift_name(leaf)}"
        if not any(join.alias_or_name == alias for join in windowed.args.get("joins") or []):
            on = exp.and_(exp.EQ(this=col(PERIOD, alias), expression=self.shifted_period(table, leaf)),
                          *([keys_match(self.dims, table, alias)] if self.dims else []), copy=False)
            left_join(windowed, aliased(table_ref(table), alias, table=True), on)
        value = col(column, alias)
        return exp.Coalesce(this=value, expressions=[number(0)]) if leaf.base.func in ZERO_WHEN_EMPTY else value

    def join_snapshot_back(self, body: exp.Select, snapshot: str, leaf: WindowLeaf, table: str) -> str:
        """Join the snapshot times of the period the previous() ``leaf`` reads, back from each
        row of ``table`` (the last window stage); returns the alias."""
        alias = f"{snapshot}_{_shift_name(leaf)}"
        if not any(join.alias_or_name == alias for join in body.args.get("joins") or []):
            if leaf.months or leaf.start_of:
                on = exp.EQ(this=col(PERIOD, alias), expression=self.shifted_period(table, leaf))
            else:
                index = self.calendar.period_index(col(PERIOD, alias), self.grain)
                back = exp.Sub(this=col(PERIOD_INDEX, table),
                               expression=number(leaf.periods * self.calendar.index_step(self.grain)))
                on = exp.EQ(this=index, expression=back)
            left_join(body, aliased(table_ref(snapshot), alias, table=True), on)
        return alias


def _shift_name(leaf: WindowLeaf) -> str:
    """A name for the period a previous() leaf reads: back_3, back_12_months, start_of_month."""
    if leaf.start_of:
        return f"start_of_{leaf.start_of}"
    return f"back_{leaf.months}_months" if leaf.months else f"back_{leaf.periods}"

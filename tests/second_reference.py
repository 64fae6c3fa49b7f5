"""Plain-Python reference values for the bike_rentals test project (tests/projects/bike_rentals).

Written from the semantics a KPI must follow whatever else is asked (issue 12), without the engine,
SQL or the project's YAML: rows are read with ``second_project.read_tables``, periods are cut by
the calendar below, and values are counted and summed with exact arithmetic (``int``, ``Decimal``,
``Fraction``), converted to ``float`` only at the end.

Calendar: ``day``, ``week`` (Monday to Sunday, the project's ``week_start``), ``month``,
``quarter`` and ``year``; a period is labelled by its first day. A row belongs to the day of its
time column (no time zone).

Semantics, for a request (grain or none, ``start``/``end`` as the half-open ``[start, end)``,
``by`` dimensions, one ``where`` condition on a dimension, ``fill``):

* A plain aggregate counts the rows whose day is inside ``[start, end)`` and inside the period,
  so the first and last periods may be partial.
* ``previous(x, n)`` at P is ``x`` over all rows of the period n before P (not cut by ``start``).
  ``cumulative(x)`` adds up all rows from the start of the data (or of the year, for
  ``cumulative(x, 'year')``) to the end of P, leaving out rows on or after ``end``.
  ``rolling(x, n)`` adds up all rows of the n periods ending with P, leaving out rows on or after
  ``end``. ``share(x)`` is ``x`` over its total across all dimension values at the period.
* Snapshots: ``last``/``first`` sum over the rows at the period's latest/earliest day on which the
  source has any row (within the range, whatever ``where`` and the dimensions say); null when the
  source has no row in the period, 0 for a dimension value with no row on that day.
* Empty: count, sum and count_distinct over no rows are 0; avg is null; a ratio whose denominator
  is 0 or null is null; ``previous`` of an empty period is 0 for counts and sums, null for snapshots.
* A KPI's rows (its keys): the (period, dimension values) at which a source it reads has a row
  inside the range after ``where``; with neither grain nor ``by``, the single key ``()``. With
  ``fill``: every period of the range for every combination of dimension values seen in its sources'
  rows inside the range after ``where``.
* ``where`` compares like SQL: a NULL value satisfies no comparison, only ``is null``.
* The per-member count in ``repeat_member_revenue`` reads every rental (all time, every status,
  whatever the request); a rental without a member id has a count of 0.
* A row is complete when its period lies inside ``[start, end)`` and inside the coverage (first to
  last day with a row) of every source the request reads; without a grain, when ``[start, end)``
  lies inside those coverages.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Iterable

GRAINS = ("day", "week", "month", "quarter", "year")
_MONTHS = {"month": 1, "quarter": 3, "year": 12}
ONE_DAY = dt.timedelta(days=1)

# --- calendar --------------------------------------------------------------------------------------


def period_start(day: dt.date, grain: str) -> dt.date:
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())  # Monday
    months = _MONTHS[grain]
    return dt.date(day.year, (day.month - 1) // months * months + 1, 1)


def shift(start: dt.date, grain: str, periods: int) -> dt.date:
    """The first day of the period ``periods`` after the one that starts on ``start``."""
    if grain == "day":
        return start + dt.timedelta(days=periods)
    if grain == "week":
        return start + dt.timedelta(weeks=periods)
    month = start.year * 12 + start.month - 1 + periods * _MONTHS[grain]
    return dt.date(month // 12, month % 12 + 1, 1)


def periods_overlapping(start: dt.date, end: dt.date, grain: str) -> list[dt.date]:
    result, current = [], period_start(start, grain)
    while current < end:
        result.append(current)
        current = shift(current, grain, 1)
    return result


# --- requests ----------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Where:
    """One condition on a dimension: op is =, !=, in, not in, is null or is not null."""

    dimension: str
    op: str
    values: tuple[str, ...] = ()

    def text(self) -> str:
        if self.op in ("is null", "is not null"):
            return f"{self.dimension} {self.op}"
        if self.op in ("in", "not in"):
            return f"{self.dimension} {self.op} ({', '.join(map(_quote, self.values))})"
        return f"{self.dimension} {self.op} {_quote(self.values[0])}"

    def holds(self, value: str | None) -> bool:
        if self.op == "is null":
            return value is None
        if value is None:
            return False
        if self.op == "is not null":
            return True
        if self.op == "=":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        return (value in self.values) == (self.op == "in")


@dataclass(frozen=True)
class Request:
    grain: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    by: tuple[str, ...] = ()
    where: Where | None = None
    fill: bool = False

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``KpiProject.evaluate``."""
        return dict(grain=self.grain, start=self.start, end=self.end, by=list(self.by),
                    where=self.where.text() if self.where else None, fill=self.fill)

    def command_line(self) -> str:
        """The same request as kpi-engine evaluate options, for failure messages."""
        parts = [f"--grain {self.grain}" if self.grain else "", f"--from {self.start}" if self.start else "",
                 f"--to {self.end}" if self.end else "", f"--by {','.join(self.by)}" if self.by else "",
                 f'--where "{self.where.text()}"' if self.where else "", "--fill" if self.fill else ""]
        return " ".join(part for part in parts if part)

    def in_range(self, day: dt.date) -> bool:
        return (self.start is None or day >= self.start) and (self.end is None or day < self.end)

    def before_end(self, day: dt.date) -> bool:
        return self.end is None or day < self.end


# --- the project's sources ----------------------------------------------------------------------------

# source -> (table, time column, {dimension: column of the source's own table})
SOURCES = {
    "rentals": ("rentals", "started_at", {"bike_type": "bike_type", "channel": "channel"}),
    "repairs": ("repairs", "repair_day", {"bike_type": "bike_class"}),
    "fleet": ("fleet_snapshots", "snapshot_day", {"bike_type": "bike_type"}),
}
SHOP_DIMENSIONS = ("region", "tier")  # reached through shop_code -> shops.code


def dimensions_of(source: str) -> tuple[str, ...]:
    return tuple(SOURCES[source][2]) + SHOP_DIMENSIONS


@dataclass(frozen=True, eq=False)  # compared by identity: two filters never look alike
class Agg:
    """An aggregate over one source: func of column over the rows where ``when`` holds."""

    source: str
    func: str  # count, sum, avg, min, max, count_distinct, last, first
    column: str | None = None
    when: Callable[[dict], bool] | None = None

    def fold(self, rows: Iterable[dict]) -> Any:
        """The aggregate over ``rows`` (all already in the key): int, Decimal, Fraction or None."""
        kept = [row for row in rows if self.when is None or self.when(row)]
        if self.func in ("count", "last", "first") and self.column is None:
            return len(kept)
        values = [row[self.column] for row in kept if row[self.column] is not None]
        if self.func == "count_distinct":
            return len(set(values))
        if self.func == "avg":
            return Fraction(sum(values, Decimal(0))) / len(values) if values else None
        if self.func in ("min", "max"):
            return (min if self.func == "min" else max)(values, default=None)
        return sum(values, Decimal(0))  # sum, and last/first of a column


def _div(numerator, denominator, scale: int = 1) -> Fraction | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return Fraction(scale) * Fraction(numerator) / Fraction(denominator)


def _growth(current, before) -> Fraction | None:
    """100 * (current - before) / before; null when either is null or before is 0."""
    if current is None or before is None:
        return None
    return _div(Fraction(current) - Fraction(before), before, 100)


# --- evaluation ----------------------------------------------------------------------------------------


class Readings:
    """A reference's KPIs, each read at the keys of a request. A subclass sets ``kpis`` (name ->
    (sources read, value at a key)) and gives ``row_set(kpi, request)`` and ``at(request)``,
    which returns a function of (period, dimension values) -> the place formulas are read at."""

    kpis: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]]
    shift = staticmethod(shift)  # the calendar's: a subclass with other grains gives its own

    def sources_of(self, kpi: str) -> tuple[str, ...]:
        return self.kpis[kpi][0]

    def evaluate(self, kpi: str, request: Request) -> dict[tuple, float | None]:
        """The KPI alone: {key: value} over exactly its row set."""
        at, compute = self.at(request), self.kpis[kpi][1]
        values = {}
        for key in self.row_set(kpi, request):
            value = compute(at(key[0], key[1:]) if request.grain else at(None, key))
            values[key] = None if value is None else float(value)
        return values

    def complete(self, kpis: Iterable[str], request: Request, key: tuple) -> bool:
        """Whether the row at ``key`` of a request for ``kpis`` is complete: its period (the range,
        without a grain) inside the range and inside the first and last day of the data of every
        source the KPIs read (``extent``, by default ``self.coverage[source]``)."""
        if request.grain:
            first, after = key[0], self.shift(key[0], request.grain, 1)
        else:
            first, after = request.start, request.end
        if (request.start is not None and first < request.start) or (request.end is not None and after > request.end):
            return False
        extents = [self.extent(source, request) for kpi in kpis for source in self.sources_of(kpi)]
        return all(begin <= first and after - ONE_DAY <= end for begin, end in extents)

    def extent(self, source: str, request: Request) -> tuple[dt.date, dt.date]:
        return self.coverage[source]


class Reference(Readings):
    """The bike_rentals KPIs over the rows of ``read_tables``."""

    def __init__(self, tables: dict[str, list[dict]]):
        shops = {row["code"]: row for row in tables["shops"]}
        self.rows: dict[str, list[dict]] = {}
        for source, (table, time_column, own) in SOURCES.items():
            rows = []
            for raw in tables[table]:
                time = raw[time_column]
                day = time.date() if isinstance(time, dt.datetime) else time
                shop = shops.get(raw["shop_code"], {})
                dims = {name: raw[column] for name, column in own.items()}
                dims.update({name: shop.get(name) for name in SHOP_DIMENSIONS})
                rows.append({**raw, "_day": day, "_dims": dims})
            self.rows[source] = rows
        self.coverage = {source: (min(r["_day"] for r in rows), max(r["_day"] for r in rows))
                         for source, rows in self.rows.items()}
        rentals_per_member = Counter(row["member_id"] for row in self.rows["rentals"] if row["member_id"] is not None)
        done = lambda row: row["status"] == "done"  # noqa: E731
        rentals = Agg("rentals", "count")
        revenue = Agg("rentals", "sum", "fee", done)
        minutes = Agg("rentals", "avg", "minutes")
        members = Agg("rentals", "count_distinct", "member_id")
        repair_cost = Agg("repairs", "sum", "cost")
        fleet_value = Agg("fleet", "last", "book_value")
        bikes_at_first_count = Agg("fleet", "first")
        repeat = Agg("rentals", "sum", "fee", lambda row: done(row) and rentals_per_member[row["member_id"]] > 1)
        # name -> (sources read, value at a key)
        self.kpis: dict[str, tuple[tuple[str, ...], Callable[[_At], Any]]] = {
            "rentals": (("rentals",), lambda at: at.current(rentals)),
            "rental_revenue": (("rentals",), lambda at: at.current(revenue)),
            "avg_ride_minutes": (("rentals",), lambda at: at.current(minutes)),
            "active_members": (("rentals",), lambda at: at.current(members)),
            "repair_cost": (("repairs",), lambda at: at.current(repair_cost)),
            "repair_cost_per_rental": (("repairs", "rentals"),
                                       lambda at: _div(at.current(repair_cost), at.current(rentals))),
            "fleet_value": (("fleet",), lambda at: at.current(fleet_value)),
            "fleet_at_start": (("fleet",), lambda at: at.current(bikes_at_first_count)),
            "revenue_growth": (("rentals",), lambda at: _growth(at.current(revenue), at.previous(revenue, 1))),
            "fleet_value_growth": (("fleet",),
                                   lambda at: _growth(at.current(fleet_value), at.previous(fleet_value, 1))),
            "revenue_to_date": (("rentals",), lambda at: at.cumulative(revenue)),
            "revenue_ytd": (("rentals",), lambda at: at.cumulative(revenue, "year")),
            "rentals_3_periods": (("rentals",), lambda at: at.rolling(rentals, 3)),
            "rental_share": (("rentals",), lambda at: _div(at.current(rentals), at.total(rentals), 100)),
            "repeat_member_revenue": (("rentals",), lambda at: at.current(repeat)),
            "members_30d": (("rentals",), lambda at: at.days_back(members, 30)),
            "members_ever": (("rentals",), lambda at: at.days_back(members, None)),
            "revenue_30d": (("rentals",), lambda at: at.days_back(revenue, 30)),
            "repair_cost_30d": (("repairs",), lambda at: at.days_back(repair_cost, 30)),
            "repair_cost_per_rental_30d": (("repairs", "rentals"),
                                           lambda at: _div(at.days_back(repair_cost, 30), at.days_back(rentals, 30))),
            "revenue_to_date_before": (("rentals",), lambda at: at.earlier(1).cumulative(revenue)),
            "revenue_to_date_growth": (("rentals",),
                                       lambda at: _growth(at.cumulative(revenue), at.earlier(1).cumulative(revenue))),
        }

    def at(self, request: Request) -> Callable[[Any, tuple], _At]:
        frame = _Frame(self, request)
        return lambda period, dims: _At(frame, period, dims)

    def row_set(self, kpi: str, request: Request) -> set[tuple]:
        seen = set()
        for source in self.sources_of(kpi):
            for row in self.rows[source]:
                if request.in_range(row["_day"]) and _passes(request, row):
                    period = (period_start(row["_day"], request.grain),) if request.grain else ()
                    seen.add((period, tuple(row["_dims"][d] for d in request.by)))
        if request.fill:
            combos = {dims for _, dims in seen} if request.by else {()}
            return {(period, *dims) for period in periods_overlapping(request.start, request.end, request.grain)
                    for dims in combos}
        if not request.grain and not request.by:
            return {()}
        return {(*period, *dims) for period, dims in seen}

def _passes(request: Request, row: dict) -> bool:
    return request.where is None or request.where.holds(row["_dims"][request.where.dimension])


class _Frame:
    """One request's rows grouped by (period, dimension values), and the days of each source's
    rows per period (for snapshots)."""

    def __init__(self, reference: Reference, request: Request):
        self.request = request
        self.groups: dict[str, dict[tuple, list[dict]]] = {}
        self.days: dict[str, dict[Any, list[dt.date]]] = {}
        needed = set(request.by) | ({request.where.dimension} if request.where else set())
        for source, rows in reference.rows.items():
            if not needed <= set(dimensions_of(source)):
                continue  # a source the request cannot read
            groups, days = defaultdict(list), defaultdict(set)
            for row in rows:
                period = self.period(row["_day"])
                days[period].add(row["_day"])
                if _passes(request, row):
                    groups[(period, tuple(row["_dims"][d] for d in request.by))].append(row)
            self.groups[source] = groups
            self.days[source] = {period: sorted(found) for period, found in days.items()}
        self._running: dict[tuple, tuple[list, list]] = {}
        self._totals: dict[Agg, dict] = {}

    def period(self, day: dt.date):
        return period_start(day, self.request.grain) if self.request.grain else None

    def rows(self, source: str, period, dims: tuple, keep: Callable[[dt.date], bool]) -> list[dict]:
        return [row for row in self.groups[source].get((period, dims), []) if keep(row["_day"])]

    def snapshot_day(self, agg: Agg, period, keep: Callable[[dt.date], bool]) -> dt.date | None:
        days = [day for day in self.days[agg.source].get(period, []) if keep(day)]
        if not days:
            return None
        return days[-1] if agg.func == "last" else days[0]

    def value(self, agg: Agg, period, dims: tuple, keep: Callable[[dt.date], bool]) -> Any:
        """The aggregate over the rows of one key whose day passes ``keep``."""
        if agg.func in ("last", "first"):
            day = self.snapshot_day(agg, period, keep)
            if day is None:
                return None
            return agg.fold(row for row in self.groups[agg.source].get((period, dims), []) if row["_day"] == day)
        return agg.fold(self.rows(agg.source, period, dims, keep))

    def running(self, agg: Agg, dims: tuple) -> tuple[list, list]:
        """Periods of ``dims`` with rows before the end, and the running totals up to each."""
        cache_key = (agg, dims)
        if cache_key not in self._running:
            periods = sorted(p for (p, d) in self.groups[agg.source] if d == dims)
            totals, total = [], 0
            for period in periods:
                total += agg.fold(self.rows(agg.source, period, dims, self.request.before_end))
                totals.append(total)
            self._running[cache_key] = (periods, totals)
        return self._running[cache_key]

    def rows_of(self, source: str, dims: tuple) -> list[dict]:
        """Every row of ``dims`` (after ``where``), whatever its period."""
        return [row for (_, each), rows in self.groups[source].items() if each == dims for row in rows]

    def total(self, agg: Agg, period) -> Any:
        """The aggregate in range at ``period`` across every dimension value (for share)."""
        if agg not in self._totals:
            totals: dict[Any, Any] = defaultdict(int)
            for (each, dims) in self.groups[agg.source]:
                totals[each] += agg.fold(self.rows(agg.source, each, dims, self.request.in_range))
            self._totals[agg] = totals
        return self._totals[agg].get(period, 0)


@dataclass(frozen=True)
class _At:
    """One key of a request: where KPI formulas are evaluated."""

    frame: _Frame
    period: Any  # the period's first day, or None without a grain
    dims: tuple

    def current(self, agg: Agg):
        return self.frame.value(agg, self.period, self.dims, self.frame.request.in_range)

    def previous(self, agg: Agg, periods: int):
        earlier = shift(self.period, self.frame.request.grain, -periods)
        return self.frame.value(agg, earlier, self.dims, lambda day: True)

    def rolling(self, agg: Agg, periods: int):
        grain = self.frame.request.grain
        return sum((self.frame.value(agg, shift(self.period, grain, -k), self.dims, self.frame.request.before_end)
                    for k in range(periods)), 0)

    def cumulative(self, agg: Agg, reset: str | None = None):
        periods, totals = self.frame.running(agg, self.dims)
        if self.period is None:  # no grain: everything before the end
            return totals[-1] if totals else 0
        upto = bisect.bisect_right(periods, self.period)
        total = totals[upto - 1] if upto else 0
        if reset:
            before = bisect.bisect_left(periods, period_start(self.period, reset))
            total -= totals[before - 1] if before else 0
        return total

    def total(self, agg: Agg):
        return self.frame.total(agg, self.period)

    def earlier(self, periods: int) -> "_At":
        """The same key ``periods`` periods before (for a time function over a time function)."""
        return _At(self.frame, shift(self.period, self.frame.request.grain, -periods), self.dims)

    def days_back(self, agg: Agg, days: int | None):
        """The aggregate over the rows of the ``days`` days ending on the period's last day (or on
        the day before the end, for a period the end cuts), all earlier days when ``days`` is None;
        counted from the rows, so a member seen on two days of the window counts once."""
        request = self.frame.request
        last = shift(self.period, request.grain, 1) - ONE_DAY if self.period is not None else None
        if request.end is not None:  # only the end cuts a window short (docs/time.md)
            last = request.end - ONE_DAY if last is None else min(last, request.end - ONE_DAY)
        first = None if days is None else last - dt.timedelta(days=days - 1)
        return agg.fold(row for row in self.frame.rows_of(agg.source, self.dims)
                        if (first is None or row["_day"] >= first) and (last is None or row["_day"] <= last))

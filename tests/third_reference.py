"""Plain-Python reference values for the saas_billing test project (tests/projects/saas_billing).

Written from docs/semantics.md and docs/time.md, without the engine, SQL or the project's YAML;
rows come from ``third_project.read_tables``, values are computed with exact arithmetic and
converted to ``float`` at the end. The request shapes (``Where``, ``Request``), the aggregates
(``Agg``) and the helpers for ratios and growth are second_reference's; what is new here:

* Local days. A TIMESTAMP (UTC in the warehouse) belongs to its day in the project's time zone
  (America/New_York; ``zone=None`` reads it as UTC, for SQLite). Weeks start on Sunday, fiscal
  years in April (``fiscal_quarter``, ``fiscal_year``).
* Every row has a span of days: an event's is its day; a subscription's runs from its start's day
  to the day before its end's day (never active when they are the same day), and never after
  today (the request's ``as_of``), up to which it runs while it has no end. A row counts at a key
  when its span meets the key's days: the period's days inside ``[from, to)`` (for the interval
  source also never after today, nor before its first day of data when there is no ``--from``).
* ``last``/``first`` over the interval source sum the rows active on the last (first) of those
  days; null when there are none. ``last(x per account_id)`` takes each account's latest row of the
  key's days, whatever ``--where`` says, then keeps it when it passes ``--where``.
* ``previous(x, n)`` reads the whole period n back (up to today); for the interval snapshot it is
  null when no row at all is active in that period, else the rows active on its last day.
  ``rolling(x, n)`` adds up the n periods ending with P, cut only by ``--to`` and today.
  ``cumulative(x)`` adds up every row up to the end of P (for ``cumulative(x, 'year')``, from the
  first period that starts in the year holding P's first day), cut by ``--to``; over the interval
  source, the periods' own counts added up. ``rolling(x, 'N days')`` of a distinct count counts the N days ending on P's last day,
  or on the day before ``--to`` (not at today); of a count over the interval source, it adds up
  the 30 days' own counts (subscription-days). ``share(x)`` divides by the total over every
  dimension value of the period, in the range, after ``--where``.
* The per-entity condition ``count(usage per account_id) > 0`` reads every usage row, whatever the
  request.
* Row sets: the keys at which a source the KPI reads has a row (an active day, for the interval
  source) inside the range after ``--where``; the single key ``()`` without grain and ``--by``;
  under ``--fill`` every period of the range for every dimension combination seen.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

import second_reference
from second_reference import Agg, Readings, Where, _div, _growth  # noqa: F401  (Where: for the tests)

AS_OF = dt.date(2026, 1, 20)  # "today" for every request: open subscriptions run to it
ZONE = "America/New_York"
ONE_DAY = dt.timedelta(days=1)
NEVER, ALWAYS = dt.date.min, dt.date.max
GRAINS = ("day", "week", "month", "quarter", "year", "fiscal_quarter", "fiscal_year")
FISCAL_START = 4  # the project's fiscal_year_start: fiscal years start in April
_FISCAL_MONTHS = {"fiscal_quarter": 3, "fiscal_year": 12}

# source -> (table, time column, end column or None, its own dimensions)
SOURCES = {
    "subscriptions": ("subscriptions", "started_at", "ended_at", ("plan",)),
    "invoices": ("invoices", "issued_at", None, ("plan", "status")),
    "usage": ("usage_events", "used_on", None, ("feature",)),
}
ACCOUNT_DIMENSIONS = ("country", "segment", "sales_team")  # country one join away, the others two
CHURN = "subscriptions__at__ended_at"  # the subscriptions placed by their end (a time axis), named as the engine does


def dimensions_of(source: str) -> tuple[str, ...]:
    return SOURCES[source.split("__at__")[0]][3] + ACCOUNT_DIMENSIONS


def _or_zero(value):
    return 0 if value is None else value  # fill_nulls_with: 0


# --- calendar: weeks start on Sunday, fiscal years in April ----------------------------------------------


def period_start(day: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return day - dt.timedelta(days=(day.weekday() + 1) % 7)
    if grain in _FISCAL_MONTHS:
        months = _FISCAL_MONTHS[grain]
        index = (day.year * 12 + day.month - FISCAL_START) // months * months + FISCAL_START - 1
        return dt.date(index // 12, index % 12 + 1, 1)
    return second_reference.period_start(day, grain)


def shift(start: dt.date, grain: str, periods: int) -> dt.date:
    """The first day of the period ``periods`` after the one that starts on ``start``."""
    if grain in _FISCAL_MONTHS:
        return second_reference.shift(start, "month", periods * _FISCAL_MONTHS[grain])
    return second_reference.shift(start, grain, periods)


def period_days(start: dt.date, grain: str) -> tuple[dt.date, dt.date]:
    """First and last day of the period that starts on ``start``."""
    return start, shift(start, grain, 1) - ONE_DAY


def periods_overlapping(first: dt.date, last: dt.date, grain: str) -> list[dt.date]:
    """Periods holding a day of ``[first, last]``."""
    result, current = [], period_start(first, grain)
    while current <= last:
        result.append(current)
        current = shift(current, grain, 1)
    return result


# --- requests: second_reference's, with "today" pinned ----------------------------------------------------


@dataclass(frozen=True)
class Request(second_reference.Request):
    as_of: dt.date = AS_OF

    def options(self) -> dict[str, Any]:
        return {**super().options(), "as_of": self.as_of}

    def command_line(self) -> str:
        return f"{super().command_line()} --as-of {self.as_of}".strip()


def pinned(request: second_reference.Request, as_of: dt.date = AS_OF) -> Request:
    """``request`` (as test_consistency draws it) with today pinned."""
    return Request(**{field.name: getattr(request, field.name) for field in dataclasses.fields(request)},
                   as_of=as_of)


@dataclass(frozen=True, eq=False)
class PerEntity(Agg):
    """``last(source.column per key)`` (``first``): each entity's latest (earliest) row of the key's
    days, summed."""

    key: str = "account_id"


# --- rows ----------------------------------------------------------------------------------------------------


def local_day(value: Any, zone: ZoneInfo | None) -> dt.date:
    if isinstance(value, dt.datetime):
        if zone is not None:
            value = value.replace(tzinfo=dt.timezone.utc).astimezone(zone)
        return value.date()
    return value


class Reference(Readings):
    """The saas_billing KPIs over the rows of ``third_project.read_tables``."""

    shift = staticmethod(shift)  # for Readings.complete

    def __init__(self, tables: dict[str, list[dict]], zone: str | None = ZONE):
        tz = ZoneInfo(zone) if zone else None
        accounts = {row["account_id"]: row for row in tables["accounts"]}
        segments = {row["segment_code"]: row for row in tables["segments"]}
        self.rows: dict[str, list[dict]] = {}
        for source, (table, time_column, end_column, own) in SOURCES.items():
            rows = []
            for raw in tables[table]:
                account = accounts.get(raw["account_id"], {})
                segment = segments.get(account.get("segment_code"), {})
                dims = {name: raw[name] for name in own}
                dims.update(country=account.get("country"), segment=segment.get("segment"),
                            sales_team=segment.get("sales_team"))
                day = local_day(raw[time_column], tz)
                # the last day the row counts on: its own day, the day before its end, or open (None)
                if end_column is None:
                    last = day
                else:
                    last = None if raw[end_column] is None else local_day(raw[end_column], tz) - ONE_DAY
                rows.append({**raw, "_dims": dims, "_day": day, "_last": last, "_interval": end_column is not None})
            self.rows[source] = rows
        # the rows of the churn axis: each ended subscription as an event at its end's day
        self.rows[CHURN] = [{**row, "_day": row["_last"] + ONE_DAY, "_last": row["_last"] + ONE_DAY, "_interval": False}
                            for row in self.rows["subscriptions"] if row["_last"] is not None]
        self.first_day = {source: min(row["_day"] for row in rows) for source, rows in self.rows.items()}
        users = {row["account_id"] for row in self.rows["usage"]}
        subscribers = {row["account_id"] for row in self.rows["subscriptions"]}
        seats = PerEntity("usage", "last", "seats")
        at_start = Agg("subscriptions", "first")
        paid = lambda row: row["status"] == "paid"  # noqa: E731
        invoices, billed = Agg("invoices", "count"), Agg("invoices", "sum", "amount")
        collected = Agg("invoices", "sum", "amount", paid)
        accounts_invoiced = Agg("invoices", "count_distinct", "account_id")
        paying = Agg("invoices", "count_distinct", "account_id", paid)
        active = Agg("subscriptions", "count")
        mrr, opening_mrr = Agg("subscriptions", "last", "mrr"), Agg("subscriptions", "first", "mrr")
        subscribed = Agg("subscriptions", "count_distinct", "account_id")
        usage = Agg("usage", "sum", "quantity")
        growth = lambda agg: lambda at: _growth(at.current(agg), at.previous(agg, 1))  # noqa: E731
        # name -> (sources read, value at a key)
        self.kpis: dict[str, tuple[tuple[str, ...], Callable[[_At], Any]]] = {
            "invoices_issued": (("invoices",), lambda at: at.current(invoices)),
            "billed": (("invoices",), lambda at: at.current(billed)),
            "collected": (("invoices",), lambda at: at.current(collected)),
            "avg_invoice": (("invoices",), lambda at: at.current(Agg("invoices", "avg", "amount"))),
            "priced_invoices": (("invoices",), lambda at: at.current(Agg("invoices", "count", None,
                                                                         lambda r: r["amount"] is not None))),
            "unpaid_invoices": (("invoices",), lambda at: at.current(Agg("invoices", "count", None,
                                                                         lambda r: r["status"] != "paid"))),
            "paying_accounts": (("invoices",), lambda at: at.current(paying)),
            "collection_rate": (("invoices",), lambda at: _div(at.current(collected), at.current(billed), 100)),
            "active_subscriptions": (("subscriptions",), lambda at: at.current(active)),
            "subscriptions_at_end": (("subscriptions",), lambda at: at.current(Agg("subscriptions", "last"))),
            "mrr": (("subscriptions",), lambda at: at.current(mrr)),
            "opening_mrr": (("subscriptions",), lambda at: at.current(opening_mrr)),
            "pro_mrr": (("subscriptions",), lambda at: at.current(Agg("subscriptions", "last", "mrr",
                                                                      lambda r: r["plan"] == "pro"))),
            "subscribed_accounts": (("subscriptions",), lambda at: at.current(subscribed)),
            "mrr_growth": (("subscriptions",), growth(mrr)),
            "subscriptions_change": (("subscriptions",), lambda at: at.current(active) - at.previous(active, 1)),
            "mrr_per_account": (("subscriptions",), lambda at: _div(at.current(mrr), at.current(subscribed))),
            "subscriptions_3_periods": (("subscriptions",), lambda at: at.rolling(active, 3)),
            "collected_per_subscription": (("invoices", "subscriptions"),
                                           lambda at: _div(at.current(collected), at.current(active))),
            "collected_growth": (("invoices",), growth(collected)),
            "collected_to_date": (("invoices",), lambda at: at.cumulative(collected)),
            "collected_ytd": (("invoices",), lambda at: at.cumulative(collected, "year")),
            "collected_3_periods": (("invoices",), lambda at: at.rolling(collected, 3)),
            "invoiced_accounts_90d": (("invoices",), lambda at: at.days_back(accounts_invoiced, 90)),
            "collected_from_users": (("invoices",), lambda at: at.current(Agg(
                "invoices", "sum", "amount", lambda r: paid(r) and r["account_id"] in users))),
            "usage_quantity": (("usage",), lambda at: at.current(usage)),
            "usage_share": (("usage",), lambda at: _div(at.current(usage), at.total(usage), 100)),
            "seats": (("usage",), lambda at: at.current(seats)),
            "opening_seats": (("usage",), lambda at: at.current(PerEntity("usage", "first", "seats"))),
            "seats_before": (("usage",), lambda at: at.previous(seats, 1)),
            "usage_accounts_30d": (("usage",), lambda at: at.days_back(Agg("usage", "count_distinct", "account_id"),
                                                                        30)),
            "avg_mrr": (("subscriptions",), lambda at: at.current(Agg("subscriptions", "avg", "mrr"))),
            "churned_subscriptions": ((CHURN,), lambda at: at.current(Agg(CHURN, "count"))),
            "subscribers_ever": (("subscriptions",), lambda at: at.cumulative(subscribed)),
            "mrr_share": (("subscriptions",), lambda at: _div(at.current(mrr), at.total(mrr), 100)),
            "mrr_at_quarter_start": (("subscriptions",), lambda at: at.at_start(mrr, "quarter")),
            "mrr_last_year": (("subscriptions",), lambda at: at.year_before(mrr)),
            "subscriptions_at_start": (("subscriptions",), lambda at: at.current(at_start)),
            "churn_rate": ((CHURN, "subscriptions"), lambda at: _div(at.current(Agg(CHURN, "count")),
                                                                       at.current(at_start), 100)),
            "subscribers_this_year": (("subscriptions",), lambda at: at.cumulative(subscribed, "year")),
            "subscriptions_30d": (("subscriptions",), lambda at: at.days_back(
                Agg("subscriptions", "count_distinct", "subscription_id"), 30)),
            "subscription_periods_to_date": (("subscriptions",), lambda at: at.running(active)),
            "subscription_days_30d": (("subscriptions",), lambda at: at.days_back(active, 30, day_by_day=True)),
            "largest_invoice": (("invoices",), lambda at: at.current(Agg("invoices", "max", "amount"))),
            "collection_rate_to_date": (("invoices",), lambda at: _div(at.cumulative(collected), at.cumulative(billed),
                                                                       100)),
            "collection_rate_or_zero": (("invoices",), lambda at: _or_zero(_div(at.current(collected),
                                                                                 at.current(billed), 100))),
            "invoices_of_subscribers": (("invoices",), lambda at: at.current(Agg(
                "invoices", "count", None, lambda r: r["account_id"] in subscribers))),
            "usage_per_paying_account": (("usage", "invoices"),
                                         lambda at: _div(at.current(usage), at.current(paying))),
        }

    def at(self, request: Request) -> Callable[[Any, tuple], _At]:
        frame = _Frame(self, request)
        return lambda period, dims: _At(frame, period, dims)

    def extent(self, source: str, request: Request) -> tuple[dt.date, dt.date]:
        """First and last day of a source's data (the interval source's runs to today while a row
        is open)."""
        rows = self.rows[source]
        return min(row["_day"] for row in rows), max(_last_of(row, request.as_of) for row in rows)

    def range_days(self, source: str, request: Request) -> tuple[dt.date, dt.date]:
        """First and last day a request reads of ``source``: the interval source starts with its
        data when there is no --from (first() reads that day) and stops at today."""
        if source != "subscriptions":
            return request.start or NEVER, request.end - ONE_DAY if request.end else ALWAYS
        first = request.start or self.first_day[source]
        return first, min(request.end - ONE_DAY, request.as_of) if request.end else request.as_of

    def row_set(self, kpi: str, request: Request) -> set[tuple]:
        seen = set()
        for source in self.sources_of(kpi):
            first, last = self.range_days(source, request)
            for row in self.rows[source]:
                if not _passes(request, row):
                    continue
                low, high = max(row["_day"], first), min(_last_of(row, request.as_of), last)
                if low > high:
                    continue
                dims = tuple(row["_dims"][d] for d in request.by)
                periods = periods_overlapping(low, high, request.grain) if request.grain else [None]
                seen.update((period, dims) for period in periods)
        if request.fill:
            combos = {dims for _, dims in seen} if request.by else {()}
            return {(period, *dims) for period in periods_overlapping(request.start, request.end - ONE_DAY,
                                                                       request.grain)
                    for dims in combos}
        if not request.grain and not request.by:
            return {()}
        return {((period,) if request.grain else ()) + dims for period, dims in seen}


def _passes(request: Request, row: dict) -> bool:
    return request.where is None or request.where.holds(row["_dims"][request.where.dimension])


def _last_of(row: dict, today: dt.date) -> dt.date:
    """The last day a row counts on: a subscription never after today (nothing is known of later
    days), an event on its own day."""
    if row["_last"] is None:
        return today
    return min(row["_last"], today) if row["_interval"] else row["_last"]


class _Frame:
    """One request: each source's rows after --where, grouped by their --by values."""

    def __init__(self, reference: Reference, request: Request):
        self.reference, self.request = reference, request
        self.groups: dict[str, dict[tuple, list[dict]]] = {}
        for source, rows in reference.rows.items():
            groups = defaultdict(list)
            if {*request.by, *([request.where.dimension] if request.where else [])} <= set(dimensions_of(source)):
                for row in rows:
                    if _passes(request, row):
                        groups[tuple(row["_dims"][d] for d in request.by)].append(row)
            self.groups[source] = groups

    def meeting(self, rows: Iterable[dict], first: dt.date, last: dt.date) -> list[dict]:
        """The rows whose span meets the days ``[first, last]``."""
        return [row for row in rows if max(row["_day"], first) <= min(_last_of(row, self.request.as_of), last)]

    def value(self, agg: Agg, dims: tuple | None, first: dt.date, last: dt.date) -> Any:
        """``agg`` over the days ``[first, last]`` at the dimension values ``dims`` (None: all)."""
        rows = self.groups[agg.source].get(dims, []) if dims is not None else \
            [row for group in self.groups[agg.source].values() for row in group]
        if first > last:
            return None if agg.func in ("last", "first") else agg.fold([])
        if isinstance(agg, PerEntity):
            picked: dict[Any, dict] = {}
            for row in self.meeting(self.reference.rows[agg.source], first, last):  # whatever --where says
                held = picked.get(row[agg.key])
                if held is None or (row["_day"] > held["_day"]) == (agg.func == "last"):
                    picked[row[agg.key]] = row
            chosen = {id(row) for row in picked.values()}
            return agg.fold(row for row in rows if id(row) in chosen)
        if agg.func in ("last", "first"):
            day = last if agg.func == "last" else first
            return agg.fold(self.meeting(rows, day, day))
        return agg.fold(self.meeting(rows, first, last))

    def has_snapshot(self, source: str, first: dt.date, last: dt.date) -> bool:
        return bool(self.meeting(self.reference.rows[source], first, last))


@dataclass(frozen=True)
class _At:
    """One key of a request: where KPI formulas are evaluated."""

    frame: _Frame
    period: dt.date | None
    dims: tuple

    @property
    def request(self) -> Request:
        return self.frame.request

    def days(self, source: str, period: dt.date | None, cut_start: bool = True) -> tuple[dt.date, dt.date]:
        """The days of ``period`` (the whole range without a grain) a value at it reads."""
        first, last = self.frame.reference.range_days(source, self.request)
        if period is None:
            return first, last
        begin, end = period_days(period, self.request.grain)
        return (max(begin, first) if cut_start else begin), min(end, last)

    def read(self, agg: Agg, first: dt.date, last: dt.date):
        """``agg`` over the days ``[first, last]``: a snapshot is null when no row at all (whatever
        --where and the dimensions say) counts on those days (an empty period under --fill, or
        one previous() reads), and 0 when rows do but none of this key's."""
        if agg.func in ("last", "first") and not self.frame.has_snapshot(agg.source, first, last):
            return None
        return self.frame.value(agg, self.dims, first, last)

    def current(self, agg: Agg):
        return self.read(agg, *self.days(agg.source, self.period))

    def previous(self, agg: Agg, periods: int, period: dt.date | None = None):
        period = period or shift(self.period, self.request.grain, -periods)
        return self.read(agg, *self.days(agg.source, period, cut_start=False))

    def rolling(self, agg: Agg, periods: int):
        return sum((self.frame.value(agg, self.dims, *self.days(agg.source, shift(self.period, self.request.grain, -k),
                                                                 cut_start=False))
                    for k in range(periods)), 0)

    def cumulative(self, agg: Agg, reset: str | None = None):
        """From the start of the data, or of the first period that starts in the restart period
        holding P's first day (a period counts with the restart period of its first day: the
        fiscal year from April 2025 with calendar 2025, from April)."""
        last = self.days(agg.source, self.period)[1]
        first = NEVER
        if reset:
            restart = period_start(self.period, reset)
            holding = period_start(restart, self.request.grain)
            first = restart if holding == restart else shift(holding, self.request.grain, 1)
        return self.frame.value(agg, self.dims, first, last)

    def at_start(self, agg: Agg, coarser: str):
        """``at_start(x, coarser)``: x in the first period of the coarser one holding P, read as
        previous() reads a period (whole, up to --to and today)."""
        first_period = period_start(period_start(self.period, coarser), self.request.grain)
        return self.previous(agg, 0, first_period)

    def year_before(self, agg: Agg):
        """``previous(x, '1 year')``: the period holding the same day a year earlier (February
        29 reads February 28)."""
        start = self.period
        day = start.replace(year=start.year - 1, day=min(start.day, 28 if start.month == 2 else start.day))
        return self.previous(agg, 0, period_start(day, self.request.grain))

    def running(self, agg: Agg):
        """``cumulative(x)`` of a value that is not a sum over days (rows active during a period):
        the periods' own values added up, from the first period of the data to P."""
        if self.period is None:
            return self.current(agg)  # no grain (and so no --from): the whole data once
        first_period = period_start(self.frame.reference.first_day[agg.source], self.request.grain)
        total, period = 0, first_period
        while period <= self.period:
            total += self.frame.value(agg, self.dims, *self.days(agg.source, period, cut_start=False))
            period = shift(period, self.request.grain, 1)
        return total

    def total(self, agg: Agg):
        return self.frame.value(agg, None, *self.days(agg.source, self.period))

    def days_back(self, agg: Agg, days: int, day_by_day: bool = False):
        """The ``days`` days ending on P's last day, or on the day before --to (not at today: a
        subscription is still active only up to today): counted over the window's rows, or
        ``day_by_day``, each day's value added up (a sum of day totals)."""
        last = period_days(self.period, self.request.grain)[1]
        if self.request.end is not None:
            last = min(last, self.request.end - ONE_DAY)
        first = last - dt.timedelta(days=days - 1)
        if day_by_day:
            return sum(self.frame.value(agg, self.dims, first + dt.timedelta(days=k), first + dt.timedelta(days=k))
                       for k in range(days))
        return self.frame.value(agg, self.dims, first, last)

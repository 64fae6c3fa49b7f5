"""Time grains: bucketing in SQL, period arithmetic in Python, period indexes for windows.

One ``Calendar`` per project (from kpi_engine.yaml): the time zone timestamps are
converted to before they are cut into periods, the first day of the week and the
first month of the fiscal year. The SQL side and the Python side (used to widen a
range for ``previous``/``rolling`` and to list the periods of a dense series) follow
the same rules, and tests hold them to each other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlglot is imported where SQL is built, to keep start-up fast
    from sqlglot import exp

DAY_GRAINS = ("day", "week", "month", "quarter", "year", "fiscal_quarter", "fiscal_year")
# Grains finer than a day, for TIMESTAMP time columns: local wall-clock hours (minutes, seconds).
SUBDAILY = ("hour", "minute", "second")
GRAINS = DAY_GRAINS + SUBDAILY
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
# Finest to coarsest, for "is this grain coarser than that one" (fiscal ones rank as the calendar's).
_RANK = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Grain -> (unit of the period index, periods of that unit per grain). Months and
# days are the two index units, so that RANGE window frames count periods exactly.
_INDEX = {"day": ("day", 1), "week": ("day", 7), "month": ("month", 1), "quarter": ("month", 3),
          "year": ("month", 12), "fiscal_quarter": ("month", 3), "fiscal_year": ("month", 12),
          "hour": ("hour", 1), "minute": ("minute", 1), "second": ("second", 1)}
_EPOCH = dt.date(1970, 1, 5)  # a Monday
# Date parts a request may slice by (--by day_of_week) on any source with a time column: the
# local day's ISO weekday (1 = Monday), day of the month, month, calendar quarter and year; on a
# TIMESTAMP time column also the local hour of the day (0-23) and minute of the hour (0-59).
DATE_PARTS = ("day_of_week", "day_of_month", "month_of_year", "quarter_of_year", "year")
TIME_PARTS = ("hour_of_day", "minute_of_hour")
PARTS = DATE_PARTS + TIME_PARTS
_PART_UNIT = {"minute_of_hour": "minute", "hour_of_day": "hour", "day_of_week": "day", "day_of_month": "day",
              "month_of_year": "month", "quarter_of_year": "quarter", "year": "year"}
_ORDINAL_MONDAY = dt.date(1, 1, 1)  # year 1 starts on a Monday: days since it, mod 7, never negative
_ORACLE_FORMATS = {"day": "DD", "week": "IW", "month": "MM", "quarter": "Q", "year": "YYYY"}


_TYPES: dict = {}  # type name -> (Cast, DataType, its DataType.Type): at most one entry per member of that enumeration


def cast(expression: "exp.Expression", kind: str) -> "exp.Expression":
    """CAST(expression AS kind) without sqlglot parsing the type name each time (nor importing
    sqlglot's module, or looking the name up in its enumeration, on each of a query's casts)."""
    found = _TYPES.get(kind)
    if found is None:
        from sqlglot import exp

        found = _TYPES[kind] = (exp.Cast, exp.DataType, exp.DataType.Type[kind])
    cast_class, type_class, member = found
    return cast_class(this=expression, to=type_class(this=member))


@dataclass(frozen=True)
class Calendar:
    timezone: str | None = None  # IANA name; None keeps timestamps as stored
    week_start: str = "monday"
    fiscal_year_start: int = 1  # month 1..12

    @property
    def grains(self) -> tuple[str, ...]:
        """Every grain a request may use (a project's named granularities add theirs: custom_calendars.py)."""
        return GRAINS

    def is_custom(self, grain: str | None) -> bool:
        return False

    # --- SQL -------------------------------------------------------------------------

    def local_time(self, column: exp.Expression, is_timestamp: bool) -> exp.Expression:
        """Timestamps are stored in UTC; convert them to the project's zone. Dates stay as they are."""
        if not self.timezone or not is_timestamp:
            return column
        from sqlglot import exp

        return exp.ConvertTimezone(source_tz=exp.Literal.string("UTC"), target_tz=exp.Literal.string(self.timezone),
                                   timestamp=cast(column, "TIMESTAMP"))

    def bucket(self, column: exp.Expression, grain: str, dialect: str, is_date: bool = False) -> exp.Expression:
        """The first day (a DATE) of the ``grain`` period that contains ``column``.

        A DATE column is truncated as a date: casting every row to a timestamp first
        costs a measurable share of the query on large tables."""
        from sqlglot import exp

        if grain in SUBDAILY:
            return self._clock_bucket(column, grain, dialect)
        shift_unit, shift = self._shift(grain)
        if is_date and grain == "day":  # the cast is a no-op, but tells typeless engines (SQLite) it is a date
            return cast(column, "DATE")
        value = column if is_date else cast(column, "TIMESTAMP")
        if shift:
            value = exp.DateAdd(this=value, expression=exp.Literal.number(shift), unit=exp.var(shift_unit))
        unit = grain.replace("fiscal_", "")
        unit_node = exp.var(unit.upper())
        if dialect == "bigquery" and unit == "week":
            unit_node = exp.var("WEEK(MONDAY)")
        if dialect == "oracle":  # Oracle truncates dates with TRUNC(date, format); sqlglot has no node for it
            start = exp.Anonymous(this="TRUNC", expressions=[value, exp.Literal.string(_ORACLE_FORMATS[unit])])
        elif is_date and dialect != "tsql":  # T-SQL's DATETRUNC is sqlglot's TimestampTrunc, for dates too
            start = exp.DateTrunc(this=value, unit=unit_node)
        else:
            start = exp.TimestampTrunc(this=value, unit=unit_node)
        if shift:
            start = exp.DateAdd(this=start, expression=exp.Literal.number(-shift), unit=exp.var(shift_unit))
        return cast(start, "DATE")

    @staticmethod
    def _clock_bucket(column: exp.Expression, grain: str, dialect: str) -> exp.Expression:
        """The start (a TIMESTAMP, local wall-clock time) of the hour, minute or second of ``column``."""
        from sqlglot import exp

        value = cast(column, "TIMESTAMP")
        if dialect == "oracle":  # TRUNC(ts, 'HH24'); Oracle's DATE keeps whole seconds
            if grain == "second":
                return cast(cast(value, "DATE"), "TIMESTAMP")
            unit = exp.Literal.string("HH24" if grain == "hour" else "MI")
            trunc = exp.Anonymous(this="TRUNC", expressions=[value, unit])
            return cast(trunc, "TIMESTAMP")
        return exp.TimestampTrunc(this=value, unit=exp.var(grain.upper()))

    def _shift(self, grain: str) -> tuple[str, int]:
        """Truncating (t + shift) and subtracting the shift moves the period boundaries."""
        if grain == "week":
            return "DAY", (7 - WEEKDAYS.index(self.week_start)) % 7
        if grain.startswith("fiscal_"):
            return "MONTH", -(self.fiscal_year_start - 1)
        return "DAY", 0

    @staticmethod
    def date_part(day: exp.Expression, part: str) -> exp.Expression:
        """``part`` (one of PARTS) of a DATE (of a local TIMESTAMP for TIME_PARTS), as an integer,
        the same on every engine (the weekday is counted from a Monday, since engines number
        weekdays differently)."""
        from sqlglot import exp

        if part in TIME_PARTS:  # ``day`` is the local timestamp here
            unit = {"hour_of_day": "HOUR", "minute_of_hour": "MINUTE"}[part]
            return cast(exp.Extract(this=exp.var(unit), expression=cast(day, "TIMESTAMP")), "INT")
        if part == "day_of_week":
            days = exp.DateDiff(this=day, expression=cast(exp.Literal.string(_ORDINAL_MONDAY.isoformat()), "DATE"),
                                unit=exp.var("DAY"))
            return exp.Add(this=exp.Paren(this=exp.Mod(this=days, expression=exp.Literal.number(7))),
                           expression=exp.Literal.number(1))
        func = {"day_of_month": exp.Day, "month_of_year": exp.Month, "quarter_of_year": exp.Quarter,
                "year": exp.Year}[part]
        return func(this=day)

    def constant_within(self, part: str, grain: str) -> bool:
        """True when ``part`` has one value in each period of ``grain`` (month_of_year by month):
        then consecutive periods never share a value, so previous() and rolling() across them
        cannot be read per value. Checked over four years of periods (by rank below a day: a
        part of an hour or longer is constant within each hour, minute and second)."""
        if part in TIME_PARTS or grain in SUBDAILY:
            return grain_rank(grain) <= grain_rank(_PART_UNIT[part])
        for start in self.periods(dt.date(2000, 1, 1), dt.date(2004, 1, 1), grain):
            end = self.shift(start, grain, 1)
            values = {part_of(start + dt.timedelta(days=k), part) for k in range((end - start).days)}
            if len(values) > 1:
                return False
        return True

    @staticmethod
    def period_index(period: exp.Expression, grain: str) -> exp.Expression:
        """An integer that grows by ``index_step(grain)`` from one period to the next."""
        from sqlglot import exp

        unit, _ = _INDEX[grain]
        if grain in SUBDAILY:  # wall-clock units since the epoch: local days * 24 + the hour, ...
            index = cast(exp.DateDiff(this=cast(period.copy(), "DATE"),
                                      expression=cast(exp.Literal.string(_EPOCH.isoformat()), "DATE"),
                                      unit=exp.var("DAY")), "BIGINT")
            for part, per in (("HOUR", 24), ("MINUTE", 60), ("SECOND", 60))[:SUBDAILY.index(grain) + 1]:
                within = cast(exp.Extract(this=exp.var(part), expression=cast(period.copy(), "TIMESTAMP")), "BIGINT")
                index = exp.Add(this=exp.Mul(this=exp.Paren(this=index), expression=exp.Literal.number(per)),
                                expression=within)
            return index
        if unit == "month":
            return exp.Add(this=exp.Mul(this=exp.Year(this=period.copy()), expression=exp.Literal.number(12)),
                           expression=exp.Month(this=period.copy()))
        return exp.DateDiff(this=period.copy(), expression=cast(exp.Literal.string(_EPOCH.isoformat()), "DATE"),
                            unit=exp.var("DAY"))

    @staticmethod
    def index_step(grain: str) -> int:
        return _INDEX[grain][1]

    @staticmethod
    def span_in_periods(span: tuple[int, str], grain: str, func: str) -> tuple[int | None, int | None, int | None]:
        """A length of time ('1 year') at ``grain``: (periods, None, None) when it is a whole number
        of periods; (None, months, None) for previous() at a day or week grain over months, quarters
        or years, which have no fixed number of days (the period that holds the same day that many
        months earlier); (None, None, days) for rolling() over days that are not a whole number of
        periods (the days up to each period's last day). Anything else is a QueryError saying why."""
        from .errors import QueryError

        amount, unit = span
        text = f"'{amount} {unit}{'s' if amount != 1 else ''}'"
        months = amount * {"month": 1, "quarter": 3, "year": 12}.get(unit, 0)
        seconds = amount * _SECONDS.get(unit, 0)
        days = seconds // _SECONDS["day"]
        index_unit, step = _INDEX[grain]
        plural = {"day": "days", "week": "weeks", "month": "months", "quarter": "quarters", "year": "years",
                  "fiscal_quarter": "fiscal quarters", "fiscal_year": "fiscal years", "hour": "hours",
                  "minute": "minutes", "second": "seconds"}[grain]
        if grain in SUBDAILY:  # windows count wall-clock units: '1 day' is 24 hours back on the clock
            if months:
                raise QueryError(f"{text} cannot be counted in {plural}: months have no fixed number of {plural}.",
                                 None, "Use a length in weeks, days or hours ('4 weeks', '1 day'), or --grain day.")
            if seconds % _SECONDS[grain]:
                raise QueryError(f"{text} is not a whole number of {plural}.", None, f"Use a multiple of one {grain}.")
            return seconds // _SECONDS[grain], None, None
        if seconds % _SECONDS["day"]:
            raise QueryError(f"{text} is not a whole number of {plural}.", None,
                             f"Use a length in days or longer, or --grain {unit}.")
        if days and func == "rolling" and (index_unit == "month" or days % step):
            return None, None, days
        if index_unit == "month":
            if days:
                raise QueryError(f"{text} cannot be counted in {plural}: periods of --grain {grain} have no fixed "
                                 "number of days.", None,
                                 "Use a length in months, quarters or years, or a day or week grain.")
            if months % step:
                raise QueryError(f"{text} is not a whole number of {plural}.", None,
                                 f"Use a multiple of one {grain.replace('_', ' ')}, or a finer grain.")
            return months // step, None, None
        if days:
            if days % step:
                raise QueryError(f"{text} is not a whole number of {plural}.", None,
                                 "Use a multiple of 7 days, or --grain day.")
            return days // step, None, None
        return None, months, None  # previous: that day months back; rolling: the months up to the period's end

    @staticmethod
    def months_back(day: dt.date, months: int) -> dt.date:
        """The same day ``months`` months earlier, or that month's last day if it is shorter (as
        the warehouses' date arithmetic does)."""
        start = _month_start(day.year * 12 + day.month - 1 - months)
        if start is None:
            raise _outside(f"{months} months before {day.isoformat()} is before year 1")
        following = _month_start(start.year * 12 + start.month)
        last = (following - dt.timedelta(days=1)).day if following else 31
        return start.replace(day=min(day.day, last))

    # --- Python ----------------------------------------------------------------------

    def today(self) -> dt.date:
        """Today's date in the project's time zone (the machine's when it has none)."""
        if not self.timezone:
            return dt.date.today()
        from zoneinfo import ZoneInfo

        return dt.datetime.now(ZoneInfo(self.timezone)).date()

    def now(self) -> dt.datetime:
        """The local wall-clock time now in the project's time zone (naive), to the second."""
        if not self.timezone:
            return dt.datetime.now().replace(microsecond=0)
        from zoneinfo import ZoneInfo

        return dt.datetime.now(ZoneInfo(self.timezone)).replace(tzinfo=None, microsecond=0)

    def exists(self, period: dt.datetime, grain: str) -> bool:
        """Whether some local time of the sub-daily period starting at ``period`` is a real one:
        the hour the clocks skip when daylight saving time starts has none, so no row ever falls
        in it and a dense series leaves it out. (A gap is one stretch of time: the period lies
        inside it when its first and last instants both do.)"""
        if not self.timezone:
            return True
        last = period + dt.timedelta(seconds=_SECONDS[grain]) - dt.timedelta(microseconds=1)
        return _is_real(period, self.timezone) or _is_real(last, self.timezone)

    # Python's dates run from year 1 to year 9999: period arithmetic near either end can leave
    # them. period_start and shift say so with a QueryError; the try_ methods return None.

    def period_start(self, day: dt.date, grain: str) -> dt.date:
        start = self.try_period_start(day, grain)
        if start is None:
            raise _outside(f"the {grain.replace('_', ' ')} that contains {day.isoformat()} starts before year 1")
        return start

    def shift(self, period: dt.date, grain: str, periods: int) -> dt.date:
        """The start of the period ``periods`` periods after the one starting at ``period``."""
        shifted = self.try_shift(period, grain, periods)
        if shifted is None:
            where = f"{abs(periods)} {grain.replace('_', ' ')}{'s' if abs(periods) != 1 else ''} " \
                    f"{'before' if periods < 0 else 'after'} the one starting {period.isoformat()}"
            raise _outside(f"the period {where} is {'before year 1' if periods < 0 else 'after year 9999'}")
        return shifted

    def periods(self, start: dt.date, end: dt.date, grain: str) -> list[dt.date]:
        """Starts of every period that overlaps [start, end) (local hours the clocks skip are no
        period). Either end may be a date or a local datetime."""
        end = at_grain(end, grain, ceiling=True)
        result, current = [], self.period_start(start, grain)
        while current is not None and current < end:
            if grain not in SUBDAILY or self.exists(current, grain):
                result.append(current)
            current = self.try_shift(current, grain, 1)  # None after the last period of year 9999
        return result

    @staticmethod
    def count_periods(start: dt.date, end: dt.date, grain: str) -> int:
        """How many sub-daily periods overlap [start, end) on the clock, without listing them (the
        hours the clocks skip included: at most one or two more than ``periods`` lists)."""
        span = at_grain(end, "second") - _truncate(at_grain(start, "second"), grain)
        return max(0, -(-int(span.total_seconds()) // _SECONDS[grain]))

    def try_period_start(self, day: dt.date, grain: str) -> dt.date | None:
        """The start of the period of ``grain`` holding ``day``: a date, or at a sub-daily grain a
        local datetime (a date there is its midnight, a datetime elsewhere its day)."""
        day = at_grain(day, grain)
        if grain in SUBDAILY:
            return _truncate(day, grain)
        if grain == "day":
            return day
        if grain == "week":
            back = (day.weekday() - WEEKDAYS.index(self.week_start)) % 7
            return day - dt.timedelta(days=back) if day.toordinal() > back else None
        months = {"month": 1, "quarter": 3, "year": 12, "fiscal_quarter": 3, "fiscal_year": 12}[grain]
        first = self.fiscal_year_start if grain.startswith("fiscal_") else 1
        offset = (day.year * 12 + day.month - first) // months * months + first
        return _month_start(offset - 1)

    def try_shift(self, period: dt.date, grain: str, periods: int) -> dt.date | None:
        unit, step = _INDEX[grain]
        if grain in SUBDAILY:  # wall-clock arithmetic, as the SQL period index counts
            try:
                return at_grain(period, grain) + dt.timedelta(seconds=_SECONDS[grain] * periods)
            except OverflowError:
                return None
        if unit == "day":
            ordinal = period.toordinal() + step * periods
            return dt.date.fromordinal(ordinal) if 1 <= ordinal <= dt.date.max.toordinal() else None
        return _month_start(period.year * 12 + period.month - 1 + step * periods)


def grain_rank(grain: str) -> int:
    """Finest (second) to coarsest (year); a fiscal grain ranks as the calendar one."""
    return _RANK.index(grain.replace("fiscal_", ""))


def at_grain(value: dt.date, grain: str, ceiling: bool = False) -> dt.date:
    """A date or local datetime as the periods of ``grain`` are: a datetime at a sub-daily grain
    (a date is its midnight), a date otherwise (the datetime's day, or with ``ceiling`` the first
    day from it on, for an exclusive end)."""
    if grain in SUBDAILY:
        return value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        return value
    if ceiling and value.time() != dt.time() and value.date() < dt.date.max:
        return value.date() + dt.timedelta(days=1)
    return value.date()


def _truncate(moment: dt.datetime, grain: str) -> dt.datetime:
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if grain == "minute":
        return moment.replace(second=0, microsecond=0)
    return moment.replace(microsecond=0)


def _is_real(local: dt.datetime, timezone: str) -> bool:
    """A naive local time that the clocks of ``timezone`` show (not one they skip)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    try:
        back = local.replace(tzinfo=zone).astimezone(dt.timezone.utc).astimezone(zone)
    except OverflowError:  # the first or last hours of the calendar
        return True
    return back.replace(tzinfo=None) == local


def part_of(day: dt.date, part: str) -> int:
    """``part`` (one of PARTS) of a day (a local datetime for TIME_PARTS), in Python: what
    Calendar.date_part computes in SQL."""
    if part in TIME_PARTS:
        return day.hour if part == "hour_of_day" else day.minute
    return {"day_of_week": day.isoweekday(), "day_of_month": day.day, "month_of_year": day.month,
            "quarter_of_year": (day.month - 1) // 3 + 1, "year": day.year}[part]


def _month_start(months: int) -> dt.date | None:
    """The first day of month number ``months`` (year * 12 + month - 1), None outside years 1..9999."""
    year = months // 12
    return dt.date(year, months % 12 + 1, 1) if dt.MINYEAR <= year <= dt.MAXYEAR else None


def _outside(what: str):
    from .errors import QueryError

    return QueryError(f"{what}: outside the calendar, which runs from year 1 to year 9999.", None,
                      "Use dates further from year 1 and year 9999 (--from, --to, --as-of).")

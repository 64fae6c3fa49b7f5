"""Days written relative to today: --from 'start of quarter', --to today, --last 6 months.

A day is a date (``2025-01-31``) or one of

- ``today``, ``yesterday``, ``tomorrow``;
- ``N days|weeks|months|quarters|years ago`` (the same day N units back; the 31st of a month
  that has fewer days becomes its last day);
- ``start of UNIT`` or ``this UNIT`` (the first day of the current week, month, quarter, year,
  fiscal quarter or fiscal year), ``last UNIT`` and ``next UNIT`` (the first day of the one
  before or after: ``--from 'last month' --to 'this month'`` is the previous month).

``--last N UNITS`` is the N complete periods before the current one, as Looker's "last N
complete months": from the start of the period N periods back to the start of the current
period (exclusive), so ``--last 6 months`` on 15 July is January to June, and ``--last 7 days``
is the seven days before today. What Looker calls "in the past 6 months" (up to today
included) is ``--from '6 months ago' --to tomorrow``.

A moment within a day is a local timestamp in the project's time zone, ``2025-03-30T06:30``
or ``2025-03-30 06:30:00`` (its midnight is the date), or, for ranges by the hour or minute,
``N hours|minutes ago`` and ``this hour``/``last hour``/``next hour`` (the start of the current
hour, of the one before, after), counted from the local time now (from the start of the
``--as-of`` day when it is given); ``--last 6 hours`` is the six whole hours before the current
one.

"Today" is the day in the project's time zone (``Calendar.today``), or the day given by
``--as-of`` (``as_of=`` in Python) so a run can be repeated later with the same range. Weeks
start on the project's ``week_start`` and fiscal periods on its ``fiscal_year_start``.
"""

from __future__ import annotations

import datetime as dt
import re
from calendar import monthrange
from dataclasses import dataclass

from .calendar import Calendar
from .errors import UsageError

# Unit as written (singular, with a space or '_' in the fiscal ones) -> calendar grain.
_UNIT = r"(?P<unit>minute|hour|day|week|month|quarter|year|fiscal[ _]quarter|fiscal[ _]year)s?"
_PATTERNS = [
    ("date", re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})(?:[t ](?P<time>\d{2}:\d{2}(?::\d{2})?))?")),
    ("named", re.compile(r"(?P<named>today|yesterday|tomorrow)")),
    ("ago", re.compile(rf"(?P<amount>\d{{1,7}}) {_UNIT} ago")),
    ("start", re.compile(rf"(?:start of |(?P<which>this|last|next) |start of (?P<which2>last|next) ){_UNIT}")),
]
_NAMED = {"today": 0, "yesterday": 1, "tomorrow": -1}  # days ago
_OFFSET = {None: 0, "this": 0, "last": -1, "next": 1}
_MONTHS = {"month": 1, "quarter": 3, "year": 12, "fiscal_quarter": 3, "fiscal_year": 12}
_CLOCK = ("hour", "minute")  # units counted from the local time now, not from today
FORMS = ("YYYY-MM-DD, today, yesterday, tomorrow, 'N days|weeks|months|quarters|years ago', "
         "'start of week|month|quarter|year|fiscal quarter|fiscal year' (or 'this month'), 'last month', "
         "'next month'; a local time YYYY-MM-DDTHH:MM, 'N hours|minutes ago', 'this hour', 'last hour'")


@dataclass(frozen=True)
class Day:
    """A day as written, understood but not yet placed: ``on(today, calendar)`` places it."""

    text: str
    kind: str  # "date", "ago" or "start"
    date: dt.date | None = None  # a datetime for a moment within a day
    amount: int = 0  # ago: units back; start: periods from the current one
    unit: str = "day"

    @property
    def relative(self) -> bool:
        return self.kind != "date"

    def on(self, today: dt.date, calendar: Calendar, now: dt.datetime | None = None) -> dt.date:
        """The day (a local datetime for the hour and minute forms, counted from ``now``)."""
        if self.kind == "date":
            return self.date
        if self.unit in _CLOCK:
            now = now or dt.datetime.combine(today, dt.time())
            if self.kind == "ago":
                return _clock_shift(now, self.unit, -self.amount, self.text)
            return _clock_shift(calendar.period_start(now, self.unit), self.unit, self.amount, self.text)
        if self.kind == "ago":
            if self.unit in ("day", "week"):
                ordinal = today.toordinal() - self.amount * (7 if self.unit == "week" else 1)
                if not 1 <= ordinal <= dt.date.max.toordinal():  # tomorrow of 9999-12-31 too
                    raise _outside(self.text, today)
                return dt.date.fromordinal(ordinal)
            return _months_back(today, self.amount * _MONTHS[self.unit], self.text)
        start = calendar.try_period_start(today, self.unit)
        day = calendar.try_shift(start, self.unit, self.amount) if start is not None else None
        if day is None:
            raise _outside(self.text, today)
        return day


def parse_day(text: str, what: str = "date") -> Day:
    """A day as written; a form it cannot read is a UsageError naming ``what`` and the forms."""
    words = " ".join(str(text).lower().split())
    for kind, pattern in _PATTERNS:
        match = pattern.fullmatch(words)
        if match is None:
            continue
        if kind == "date":
            try:
                day = dt.date.fromisoformat(match["date"])
                clock = dt.time.fromisoformat(match["time"]) if match["time"] else dt.time()
            except ValueError:
                break  # 2025-02-30 or 25:00: shaped like a date, but none
            # A local time of day; its midnight is the date itself.
            return Day(text, "date", date=dt.datetime.combine(day, clock) if clock != dt.time() else day)
        if kind == "named":
            return Day(text, "ago", amount=_NAMED[match["named"]])
        unit = match["unit"].replace(" ", "_")
        if kind == "ago":
            return Day(text, "ago", amount=int(match["amount"]), unit=unit)
        if unit == "day":
            break  # 'this day': write today, yesterday or tomorrow
        return Day(text, "start", amount=_OFFSET[match["which"] or match["which2"]], unit=unit)
    raise UsageError(f"{str(text)[:60]!r} is not a date ({what}).", None, f"Write {FORMS}.")


def resolve_day(value: str | dt.date | None, what: str, calendar: Calendar, today: dt.date | None = None,
                clock: bool = True) -> dt.date | None:
    """``value`` (a date, a datetime, or text parse_day reads) as a date, or as a local datetime
    when it has a time of day (a datetime with a zone is converted to the project's zone);
    ``today`` defaults to the calendar's, and "now" to the local time now (the start of
    ``today`` when it is given). ``clock=False``: only days are accepted."""
    if value is None or isinstance(value, dt.date):
        if isinstance(value, dt.datetime) and value.tzinfo is not None:  # an instant: its local time
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(calendar.timezone) if calendar.timezone else dt.timezone.utc
            value = value.astimezone(zone).replace(tzinfo=None)
        if isinstance(value, dt.datetime) and (value.time() == dt.time() or not clock):
            if value.time() != dt.time():
                raise UsageError(f"{value.isoformat()} is a time of day; {what} is a day.", None,
                                 "Give a date (YYYY-MM-DD).")
            return value.date()
        return value
    day = parse_day(value, what)
    if not day.relative:
        result = day.date
    else:
        now = None if today is not None or day.unit not in _CLOCK else calendar.now()
        result = day.on(today or calendar.today(), calendar, now)
    if isinstance(result, dt.datetime) and result.time() == dt.time():
        return result.date()  # 'this hour' at midnight: the day itself
    if not clock and isinstance(result, dt.datetime):
        raise UsageError(f"{str(value)[:60]!r} is a time of day; {what} is a day.", None, "Give a date (YYYY-MM-DD).")
    return result


def parse_last(value, what: str = "last") -> tuple[int, str]:
    """--last 6 months (two words, or one text '6 months') -> (6, 'month')."""
    words = value.split() if isinstance(value, str) else [str(part) for part in value]
    match = re.fullmatch(rf"(?P<amount>\d{{1,7}}) {_UNIT}", " ".join(words).lower()) if words else None
    if match is None or int(match["amount"]) < 1:
        raise UsageError(f"{' '.join(words)[:60]!r} is not a number of periods ({what}).", None,
                         "Write a whole number of 1 or more and a unit: '6 months', '7 days', '2 weeks', "
                         "'4 quarters', '1 year', '2 fiscal quarters'.")
    return int(match["amount"]), match["unit"].replace(" ", "_")


def last_periods(amount: int, unit: str, today: dt.date, calendar: Calendar,
                 now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
    """[start, end) of the ``amount`` complete ``unit`` periods before the one holding ``today``
    (hours and minutes: before the one holding ``now``, by default the start of ``today``)."""
    if unit in _CLOCK:  # a midnight is the day itself, as --from/--to read it
        end = calendar.period_start(now or dt.datetime.combine(today, dt.time()), unit)
        start = _clock_shift(end, unit, -amount, f"{amount} {unit}s")
        return tuple(t.date() if t.time() == dt.time() else t for t in (start, end))
    end = calendar.period_start(today, unit)
    return calendar.shift(end, unit, -amount), end


def _clock_shift(moment: dt.datetime, unit: str, amount: int, text: str) -> dt.datetime:
    """``amount`` hours (minutes) later on the local clock."""
    try:
        return moment + dt.timedelta(**{f"{unit}s": amount})
    except OverflowError:
        raise _outside(text, moment.date()) from None


def _months_back(day: dt.date, months: int, text: str) -> dt.date:
    """The same day ``months`` months earlier, or the last day of that month when it is shorter."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    if year < dt.MINYEAR:
        raise _outside(text, day)
    return dt.date(year, month + 1, min(day.day, monthrange(year, month + 1)[1]))


def _outside(text: str, today: dt.date):
    from .errors import QueryError

    return QueryError(f"'{text}' from {today.isoformat()} falls outside the calendar, which runs from year 1 to "
                      "year 9999.", None, "Use a smaller number, or a date (YYYY-MM-DD).")

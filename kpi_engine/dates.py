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
_UNIT = r"(?P<unit>day|week|month|quarter|year|fiscal[ _]quarter|fiscal[ _]year)s?"
_PATTERNS = [
    ("date", re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})")),
    ("named", re.compile(r"(?P<named>today|yesterday|tomorrow)")),
    ("ago", re.compile(rf"(?P<amount>\d{{1,7}}) {_UNIT} ago")),
    ("start", re.compile(rf"(?:start of |(?P<which>this|last|next) |start of (?P<which2>last|next) ){_UNIT}")),
]
_NAMED = {"today": 0, "yesterday": 1, "tomorrow": -1}  # days ago
_OFFSET = {None: 0, "this": 0, "last": -1, "next": 1}
_MONTHS = {"month": 1, "quarter": 3, "year": 12, "fiscal_quarter": 3, "fiscal_year": 12}
FORMS = ("YYYY-MM-DD, today, yesterday, tomorrow, 'N days|weeks|months|quarters|years ago', "
         "'start of week|month|quarter|year|fiscal quarter|fiscal year' (or 'this month'), 'last month', "
         "'next month'")


@dataclass(frozen=True)
class Day:
    """A day as written, understood but not yet placed: ``on(today, calendar)`` places it."""

    text: str
    kind: str  # "date", "ago" or "start"
    date: dt.date | None = None
    amount: int = 0  # ago: units back; start: periods from the current one
    unit: str = "day"

    @property
    def relative(self) -> bool:
        return self.kind != "date"

    def on(self, today: dt.date, calendar: Calendar) -> dt.date:
        if self.kind == "date":
            return self.date
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
                return Day(text, "date", date=dt.date.fromisoformat(match["date"]))
            except ValueError:
                break  # 2025-02-30: shaped like a date, but none
        if kind == "named":
            return Day(text, "ago", amount=_NAMED[match["named"]])
        unit = match["unit"].replace(" ", "_")
        if kind == "ago":
            return Day(text, "ago", amount=int(match["amount"]), unit=unit)
        if unit == "day":
            break  # 'this day': write today, yesterday or tomorrow
        return Day(text, "start", amount=_OFFSET[match["which"] or match["which2"]], unit=unit)
    raise UsageError(f"{str(text)[:60]!r} is not a date ({what}).", None, f"Write {FORMS}.")


def resolve_day(value: str | dt.date | None, what: str, calendar: Calendar, today: dt.date | None = None) -> dt.date | None:
    """``value`` (a date, or text parse_day reads) as a date; ``today`` defaults to the calendar's."""
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    day = parse_day(value, what)
    return day.on(today or calendar.today(), calendar) if day.relative else day.date


def parse_last(value, what: str = "last") -> tuple[int, str]:
    """--last 6 months (two words, or one text '6 months') -> (6, 'month')."""
    words = value.split() if isinstance(value, str) else [str(part) for part in value]
    match = re.fullmatch(rf"(?P<amount>\d{{1,7}}) {_UNIT}", " ".join(words).lower()) if words else None
    if match is None or int(match["amount"]) < 1:
        raise UsageError(f"{' '.join(words)[:60]!r} is not a number of periods ({what}).", None,
                         "Write a whole number of 1 or more and a unit: '6 months', '7 days', '2 weeks', "
                         "'4 quarters', '1 year', '2 fiscal quarters'.")
    return int(match["amount"]), match["unit"].replace(" ", "_")


def last_periods(amount: int, unit: str, today: dt.date, calendar: Calendar) -> tuple[dt.date, dt.date]:
    """[start, end) of the ``amount`` complete ``unit`` periods before the one holding ``today``."""
    end = calendar.period_start(today, unit)
    return calendar.shift(end, unit, -amount), end


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

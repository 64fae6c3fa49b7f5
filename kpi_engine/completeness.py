"""Whether a result row's period is complete, and how fresh each source is.

A period is complete when it lies wholly inside the requested range and inside the data of
every source the request reads: from the first day any row of the source has to the last
one, inclusive. A month cut by --to, a week that starts before the data does, the month
still being loaded: incomplete. The data's extent is read by one small query (the earliest
and latest time of each source, ignoring --where: compiler.extent_query), so the numbers'
own query is unchanged. At a sub-daily grain it is read as local times and runs from the first
hour (minute, second) with a row to the last one, inclusive, as days do at --grain day. Ranges
may start or end within a day (--from '2025-03-30 06:30'): comparisons are made on local times.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping

from .calendar import SUBDAILY, Calendar, at_grain


@dataclass(frozen=True)
class Extent:
    """The first and last local day a source has rows for (both None when it has none); at a
    sub-daily ``grain``, the starts of its first and last period (local datetimes)."""

    first: dt.date | None
    last: dt.date | None
    grain: str = "day"

    @property
    def end(self) -> dt.date | None:
        """The day (period) after the last one: the exclusive end of the data (the last day of
        year 9999 stands for the end of time)."""
        if not self.last:
            return None
        if isinstance(self.last, dt.datetime):
            return Calendar().try_shift(self.last, self.grain, 1) or dt.datetime.max
        return _day_after(self.last)


def _day_after(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=1) if day < dt.date.max else dt.date.max


def _days_before(day: dt.date, days: int) -> dt.date:
    return day - dt.timedelta(days=days) if day.toordinal() > days else dt.date.min


def as_date(value) -> dt.date | None:
    """A period or day as the warehouse returned it (date, midnight datetime or ISO text)."""
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


def as_period(value, grain: str | None):
    """A period as the warehouse returned it: a date, or at a sub-daily grain a local datetime."""
    if grain not in SUBDAILY or value is None:
        return as_date(value)
    if isinstance(value, dt.date):
        return at_grain(value, grain)
    return dt.datetime.fromisoformat(str(value))


def _moment(value: dt.date | None) -> dt.datetime | None:
    """Dates (their midnight) and local datetimes on one line, to compare them."""
    return None if value is None else at_grain(value, "second")


def is_complete(period: dt.date | None, grain: str | None, start: dt.date | None, end: dt.date | None,
                extents: Mapping[str, Extent], calendar: Calendar,
                maturities: Iterable[tuple[int, dt.date | None]] = ()) -> bool:
    """The period starting at ``period`` (the whole range without a grain) lies inside [start, end)
    and inside every source's data; and, for each (days, end of data) in ``maturities`` (a cohort
    KPI's ``matures_after`` and the end of its sources' data), its last day is that many days old."""
    if grain is None:
        low, high = start, end  # None: from the start / to the end of the data, which is covered
    else:
        low, high = period, calendar.try_shift(period, grain, 1)
        if high is None:  # the period reaches past the last day of year 9999
            return False
    low, high, start, end = _moment(low), _moment(high), _moment(start), _moment(end)
    for days, data_end in maturities:
        data_end = _moment(data_end)
        period_end = high or data_end
        if data_end is None or period_end is None or (data_end - period_end).days < days:
            return False
    if start is not None and low is not None and low < start:
        return False
    if end is not None and high is not None and high > end:
        return False
    for extent in extents.values():
        if extent.first is None:
            return False
        if low is not None and low < _moment(extent.first):
            return False
        if high is not None and high > _moment(extent.end):
            return False
    return True


def complete_range(grain: str, start: dt.date | None, end: dt.date | None, extents: Mapping[str, Extent],
                   calendar: Calendar, maturities: Iterable[tuple[int, dt.date | None]] = ()
                   ) -> tuple[dt.date, dt.date] | None:
    """The whole periods that are complete (see is_complete), as a [start, end) range; None when
    there are none. Complete periods are contiguous, so --complete-only is this narrower range."""
    maturities = list(maturities)
    if any(extent.first is None for extent in extents.values()) or any(e is None for _, e in maturities):
        return None
    lows = [_moment(day) for day in [start, *(e.first for e in extents.values())] if day is not None]
    highs = [_moment(day) for day in [end, *(e.end for e in extents.values()),
                                      *(_days_before(data_end, days) for days, data_end in maturities)]
             if day is not None]
    if not lows or not highs:
        return None
    low, high = max(lows), min(highs)
    first = calendar.try_period_start(low, grain) or at_grain(dt.date.min, grain)
    if _moment(first) < low:
        first = calendar.try_shift(first, grain, 1)
    last = calendar.try_period_start(high, grain)  # periods end at or before ``last``
    return (first, last) if first and last and first < last else None

"""Which period `check` and `report` look at, and whether the data behind it is fresh.

By default they take the latest period that is complete *in the data*: the last whole
period that every source the KPIs read has rows through (and that has ended by today),
not the previous calendar period, which a late pipeline may not have loaded yet. A source
may declare ``freshness: N days``: when its latest row is older than that, it is stale,
and `check` says so and exits 6 rather than report old figures as healthy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterable

from .completeness import Extent, complete_range


@dataclass(frozen=True)
class Period:
    start: dt.date | None  # the period checked or reported; None when no period is complete
    end: dt.date | None  # the day after it
    basis: str  # why this period, for people: "the latest complete month of the data (...)"
    stale: tuple[str, ...] = field(default=())  # one sentence per stale source
    extents: dict[str, Extent] = field(default_factory=dict, compare=False)  # of the sources looked at


def stale_sources(project, sources: Iterable[str], extents: dict[str, Extent], today: dt.date) -> list[str]:
    messages = []
    for name in sorted(set(sources)):
        limit = project.project.sources[name].freshness_days
        if limit is None:
            continue
        last = extents.get(name, Extent(None, None)).last
        if last is None:
            messages.append(f"source '{name}' has no rows (freshness: {limit} days).")
        elif (today - last).days > limit:
            messages.append(f"source '{name}' is stale: its latest row is from {last.isoformat()}, "
                            f"{(today - last).days} days ago (freshness: {limit} days).")
    return messages


def latest_complete(project, sources: Iterable[str], grain: str, as_of: dt.date | None,
                    today: dt.date | None = None) -> Period:
    """The period to check or report: the last one complete before ``as_of`` when given, else
    the latest complete one of the data (see the module's docstring). ``project`` is a KpiProject."""
    calendar = project.project.config.calendar
    today = today or dt.date.today()
    sources = list(dict.fromkeys(sources))
    extents = project.extents(sources)
    stale = tuple(stale_sources(project, sources, extents, today))
    if as_of is not None:
        end = calendar.period_start(as_of, grain)
        return Period(calendar.shift(end, grain, -1), end, f"complete before {as_of.isoformat()}", stale, extents)
    current = calendar.period_start(today, grain)  # still running today
    if not extents:  # no source has a time column: the calendar is all there is
        return Period(calendar.shift(current, grain, -1), current, f"complete before {today.isoformat()}", stale,
                      extents)
    whole = complete_range(grain, None, current, extents, calendar)
    lasts = [e.last for e in extents.values() if e.last is not None]
    through = f"data through {min(lasts).isoformat()}" if lasts else "no data"
    if whole is None:
        return Period(None, None, f"no complete {grain.replace('_', ' ')} in the data ({through})", stale, extents)
    end = whole[1]
    return Period(calendar.shift(end, grain, -1), end,
                  f"the latest complete {grain.replace('_', ' ')} of the data ({through})", stale, extents)

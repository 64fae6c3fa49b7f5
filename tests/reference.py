"""Plain-Python reference values for the example KPIs: the yardstick the engine is tested against.

Written without the engine, SQL or any data library: CSV files are read with the ``csv`` module and
every KPI is computed by counting and summing rows in dictionaries, with exact arithmetic
(``Decimal`` sums, ``Fraction`` ratios) converted to ``float`` only at the end.

Grouping and keys
-----------------
Every KPI function takes ``by_month`` and ``by_channel`` and returns a dict whose keys are tuples
holding, in this order, the parts asked for:

=========  ==========  =============================================================
by_month   by_channel  key
=========  ==========  =============================================================
True       True        ``(month, channel)``
True       False       ``(month,)``      all rows of the month, NULL channel included
False      True        ``(channel,)``    the whole period (or range)
False      False       ``()``            one total
=========  ==========  =============================================================

``month`` is a ``datetime.date``, the first day of the calendar month of the row's own time
column, read as written (no time-zone conversion). ``channel`` is the channel as written, and
``None`` for rows whose channel is NULL (empty in the CSV): NULL is a group of its own. "All
channels" is never written as a channel value; it is expressed by the shape of the key (leaving
the channel out), so it cannot be confused with the NULL group.

A key is present when at least one row of one of the tables the KPI reads falls into it; the
total key ``()`` is always present.

Date range
----------
``start`` and ``end`` (``datetime.date`` or ``'YYYY-MM-DD'``, each optional) restrict every
table, on its own time column, to the half-open range ``[start, end)``: a row is kept when
``start <= date(time) < end``.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "examples" / "marketing" / "data"

# The time column of each table used here.
TIME_COLUMN = {"ad_spend": "spend_date", "leads": "created_at", "nps_responses": "responded_at"}

Row = dict[str, "str | None"]
Data = dict[str, list[Row]]


def load(data_dir: str | Path = DEFAULT_DATA_DIR) -> Data:
    """Read every ``<table>.csv`` of ``data_dir``: ``{table: [row, ...]}``.

    Each row maps column names to the text as written, with empty fields as ``None``. A table
    without a file reads as empty; a folder without any CSV file is an error.
    """
    folder = Path(data_dir)
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise FileNotFoundError(f"no CSV files in {folder}")
    data: Data = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            data[path.stem] = [{column: (value if value != "" else None)
                                for column, value in row.items()}
                               for row in csv.DictReader(handle)]
    return data


def _as_date(value: dt.date | str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def _groups(data: Data, table: str, by_month: bool, by_channel: bool,
            start: dt.date | str | None, end: dt.date | str | None):
    """Yield ``(key, row)`` for the rows of ``table`` inside ``[start, end)``."""
    start, end = _as_date(start), _as_date(end)
    time_column = TIME_COLUMN[table]
    for row in data.get(table, []):
        day = dt.date.fromisoformat(row[time_column][:10])
        if (start is not None and day < start) or (end is not None and day >= end):
            continue
        key = ()
        if by_month:
            key += (day.replace(day=1),)
        if by_channel:
            key += (row["channel"],)
        yield key, row


def _as_float(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def _is_lead(row: Row) -> bool:
    """A contact is a lead when it meets the qualification criteria: ``is_qualified`` true."""
    return (row["is_qualified"] or "").lower() == "true"


def contact_count(data: Data, by_channel: bool = True, by_month: bool = True,
                  start: dt.date | str | None = None, end: dt.date | str | None = None,
                  ) -> dict[tuple, int]:
    """Number of contacts created (every row of the leads table), bucketed by ``created_at``."""
    counts: dict[tuple, int] = defaultdict(int)
    for key, _ in _groups(data, "leads", by_month, by_channel, start, end):
        counts[key] += 1
    if not by_month and not by_channel:
        counts[()] += 0
    return dict(counts)


def lead_count(data: Data, by_channel: bool = True, by_month: bool = True,
               start: dt.date | str | None = None, end: dt.date | str | None = None,
               ) -> dict[tuple, int]:
    """Number of leads (qualified contacts), bucketed by ``created_at``: ``count(leads)``."""
    counts: dict[tuple, int] = defaultdict(int)
    for key, row in _groups(data, "leads", by_month, by_channel, start, end):
        if _is_lead(row):
            counts[key] += 1
    if not by_month and not by_channel:
        counts[()] += 0
    return dict(counts)


def total_spend(data: Data, by_channel: bool = True, by_month: bool = True,
                start: dt.date | str | None = None, end: dt.date | str | None = None,
                ) -> dict[tuple, float]:
    """Advertising spend, bucketed by ``spend_date``: ``sum(ad_spend.spend)``."""
    return {key: float(value) for key, value in
            _spend(data, by_channel, by_month, start, end).items()}


def _spend(data, by_channel, by_month, start, end) -> dict[tuple, Decimal]:
    sums: dict[tuple, Decimal] = defaultdict(Decimal)
    for key, row in _groups(data, "ad_spend", by_month, by_channel, start, end):
        sums[key] += Decimal(row["spend"])
    if not by_month and not by_channel:
        sums[()] += 0
    return dict(sums)


def cost_per_lead(data: Data, by_channel: bool = True, by_month: bool = True,
                  start: dt.date | str | None = None, end: dt.date | str | None = None,
                  ) -> dict[tuple, float | None]:
    """Cost per lead: CPL = total ad spend / number of leads, each in the same period.

    ``sum(ad_spend.spend)`` by ``spend_date`` over the leads (qualified contacts) by ``created_at``. A group
    without spend rows has spent 0 (a free channel with leads has a CPL of 0.0); a group without
    leads has no CPL (``None``).
    """
    spend = _spend(data, by_channel, by_month, start, end)
    leads = lead_count(data, by_channel, by_month, start, end)
    result = {}
    for key in spend.keys() | leads.keys():
        n = leads.get(key, 0)
        result[key] = _as_float(Fraction(spend.get(key, Decimal(0))) / n if n else None)
    return result


def close_rate(data: Data, by_channel: bool = True, by_month: bool = True,
               start: dt.date | str | None = None, end: dt.date | str | None = None,
               ) -> dict[tuple, float | None]:
    """Close rate (lead cohort): 100 * customers / leads.

    Of the leads (qualified contacts) created in the period (by ``created_at``), the percentage
    whose ``customer_at`` is not NULL, whenever they converted. ``None`` for a group without leads
    (never happens for a key other than ``()``, as keys come from lead rows).
    """
    leads: dict[tuple, int] = defaultdict(int)
    won: dict[tuple, int] = defaultdict(int)
    for key, row in _groups(data, "leads", by_month, by_channel, start, end):
        if not _is_lead(row):
            continue
        leads[key] += 1
        won[key] += row["customer_at"] is not None
    if not by_month and not by_channel:
        leads[()] += 0
    return {key: _as_float(Fraction(100 * won[key], n) if n else None)
            for key, n in leads.items()}


def nps(data: Data, by_channel: bool = True, by_month: bool = True,
        start: dt.date | str | None = None, end: dt.date | str | None = None,
        ) -> dict[tuple, float | None]:
    """Net Promoter Score: 100 * (promoters - detractors) / responses.

    Promoters answered 9 or 10, detractors 0 to 6, over all responses of the period (by
    ``responded_at``); from -100 to 100. ``None`` for a group without responses.
    """
    total: dict[tuple, int] = defaultdict(int)
    net: dict[tuple, int] = defaultdict(int)
    for key, row in _groups(data, "nps_responses", by_month, by_channel, start, end):
        score = int(row["score"])
        total[key] += 1
        net[key] += 1 if score >= 9 else -1 if score <= 6 else 0
    if not by_month and not by_channel:
        total[()] += 0
    return {key: _as_float(Fraction(100 * net[key], n) if n else None)
            for key, n in total.items()}

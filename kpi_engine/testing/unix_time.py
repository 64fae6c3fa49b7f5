"""The conformance kit's Unix-time check: ``from_unixtime(x)`` reads seconds since 1970-01-01
00:00 UTC (and milliseconds divided by 1000, with their fraction) as UTC times, whatever the
session's time zone. An adapter plugin creates the ``events`` table in its warehouse with its own
types for ``COLUMNS``, inserts ``ROWS`` (or ``ROWS_SINCE_1970`` where dates start in 1970), and
checks::

    from kpi_engine.testing.unix_time import COLUMNS, ROWS, unix_time_mismatches, write_unix_time_project

    with open_project(write_unix_time_project(tmp_path / "p", warehouse)) as project:
        assert unix_time_mismatches(project) == []

The months were worked by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Mapping

from . import write_specs_project

TABLE = "events"
COLUMNS = {"created": "integer", "sent_ms": "double"}  # Unix seconds; Unix milliseconds
ROWS_SINCE_1970 = [(1735689599, 1735689599999.0),   # 2024-12-31 23:59:59 UTC; 23:59:59.999
                   (1735689600, 1735689600000.0),   # 2025-01-01 00:00:00
                   (1738367999, 1738368000500.0)]   # 2025-01-31 23:59:59; 2025-02-01 00:00:00.5
ROWS = ROWS_SINCE_1970 + [(-86400, -86400000.0)]   # 1969-12-31 00:00:00
SPECS = {"sources": {TABLE: {"table": TABLE, "time": "created_at",
                             "map": {"created_at": "from_unixtime(created)", "sent_at": "from_unixtime(sent_ms / 1000)"}}},
         "kpis": {"n": {"formula": "count(events)"},
                  "sent_next_day": {"formula": "count(events where days_between(created_at, sent_at) = 1)"}}}
#: month -> (events, events sent the calendar day after they were created)
EXPECTED = {dt.date(1969, 12, 1): (1, 0), dt.date(2024, 12, 1): (1, 0), dt.date(2025, 1, 1): (2, 1)}


def write_unix_time_project(folder: Path, warehouse: str | Mapping[str, Any]) -> Path:
    """A project in ``folder`` over ``warehouse``'s ``events`` table, with the check's KPIs."""
    return write_specs_project(folder, warehouse, SPECS, name="unix_time")


def unix_time_mismatches(project, since_1970: bool = False) -> list[str]:
    """How the months read differ from the hand-worked ones (empty when they agree)."""
    rows = {row["period"]: (row["n"], row["sent_next_day"])
            for row in project.evaluate(list(SPECS["kpis"]), grain="month").to_dicts()}
    expected = {month: values for month, values in EXPECTED.items() if not since_1970 or month.year >= 1970}
    return [f"{month}: {rows.get(month)}, expected {values}" for month, values in expected.items()
            if rows.get(month) != values] + [f"{month}: unexpected {values}" for month, values in rows.items()
                                             if month not in expected]

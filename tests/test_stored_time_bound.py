"""--from/--to in a project with a time zone: the rows are chosen by their local time, and also
bounded on the stored time two days wider (so a scan can skip row groups by it) without changing
which rows count. Checked against zoneinfo at both ends of the world's offsets (UTC+14, UTC-11)."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from kpi_engine.engine import open_project

SPEC = """
sources:
  visits: {table: visits, time: seen_at, dimensions: [page]}
kpis:
  n: {formula: count(visits)}
"""
START = dt.datetime(2025, 3, 1)


def visits() -> list[dict]:
    """One visit every 37 minutes over twelve days (UTC), on two pages."""
    return [{"seen_at": (START + dt.timedelta(minutes=37 * i)).isoformat(sep=" "), "page": "ab"[i % 2]}
            for i in range(12 * 24 * 60 // 37)]


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Berlin"])
@pytest.mark.parametrize("start,end", [(dt.date(2025, 3, 4), dt.date(2025, 3, 8)),
                                       (dt.datetime(2025, 3, 5, 6, 30), dt.datetime(2025, 3, 9, 22, 0))])
def test_counts_by_local_day_with_a_range(make_project, zone, start, end):
    rows = visits()
    root = make_project({"s.yaml": SPEC}, {"visits": rows},
                        config=f"name: t\ntimezone: {zone}\nwarehouse: {{adapter: duckdb, data: data}}\n")
    tz = ZoneInfo(zone)
    lower = start if isinstance(start, dt.datetime) else dt.datetime.combine(start, dt.time())
    upper = end if isinstance(end, dt.datetime) else dt.datetime.combine(end, dt.time())
    want: dict[tuple, int] = {}
    for row in rows:
        local = dt.datetime.fromisoformat(row["seen_at"]).replace(tzinfo=dt.timezone.utc).astimezone(tz)
        wall = local.replace(tzinfo=None)
        if lower <= wall < upper:
            key = (wall.date(), row["page"])
            want[key] = want.get(key, 0) + 1
    with open_project(root) as project:
        got = {(r["period"], r["page"]): r["n"]
               for r in project.evaluate(["n"], grain="day", by=["page"], start=start, end=end).to_dicts()}
        sql = project.compile(["n"], grain="day", by=["page"], start=start, end=end).sql()
    assert got == want
    first, last = (lower - dt.timedelta(days=2)).date(), (upper + dt.timedelta(days=2)).date()
    assert f"\"visits\".\"seen_at\" AS TIMESTAMP) >= CAST('{first.isoformat()}" in sql  # the stored-time bounds
    assert f"\"visits\".\"seen_at\" AS TIMESTAMP) < CAST('{last.isoformat()}" in sql


def test_no_stored_bound_without_a_time_zone(make_project):
    root = make_project({"s.yaml": SPEC}, {"visits": visits()})
    with open_project(root) as project:
        sql = project.compile(["n"], grain="day", start=dt.date(2025, 3, 4), end=dt.date(2025, 3, 8)).sql()
    assert "2025-03-02" not in sql and "2025-03-10" not in sql

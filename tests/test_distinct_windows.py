"""Running and rolling distinct counts (issue 16, item 2): contacts ever active, monthly active
contacts over a trailing 30 days. Distinct counts of separate periods do not add up (a contact
active in two months is one contact), so they are counted from each window's rows; checked here
against plain Python over generated activity rows, and PostgreSQL and SQLite against DuckDB."""

from __future__ import annotations

import csv
import datetime as dt
import random

import pytest

from kpi_engine.engine import open_project
from kpi_engine.errors import KpiEngineError
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg"]

SPECS = """\
sources:
  activity:
    table: activity
    time: occurred_at
    dimensions: [channel, kind]
kpis:
  contacts_ever_active: {formula: "cumulative(count_distinct(activity.contact_id))"}
  active_contacts_30d: {formula: "rolling(count_distinct(activity.contact_id), '30 days')"}
  openers_this_year: {formula: "cumulative(count_distinct(activity.contact_id where kind = 'open'), 'year')"}
"""
TABLES = {"activity": {"contact_id": "integer", "occurred_at": "timestamp", "channel": "text", "kind": "text"}}
CHANNELS, KINDS = ("email", "web", "social"), ("open", "click", "visit")
FIRST = dt.date(2023, 10, 5)


def generate(seed: int = 16) -> list[dict]:
    """Contacts who come back now and then, some in several channels; no activity at all in the
    first half of March 2024, and none in the social channel in August 2024."""
    rng = random.Random(seed)
    rows = []
    for contact in range(1, 301):
        day = FIRST + dt.timedelta(days=rng.randrange(500))
        while day < dt.date(2025, 6, 1):
            channel = rng.choice(CHANNELS)
            if not (dt.date(2024, 3, 1) <= day < dt.date(2024, 3, 16)) and not (channel == "social" and day.month == 8):
                at = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)))
                rows.append({"contact_id": contact, "occurred_at": at, "channel": channel, "kind": rng.choice(KINDS)})
            day += dt.timedelta(days=rng.choice([1, 3, 10, 30, 75]))
    return rows


@pytest.fixture(scope="module")
def rows():
    return generate()


@pytest.fixture(scope="module")
def folder(rows, tmp_path_factory):
    root = tmp_path_factory.mktemp("activity")
    (root / "kpi_engine.yaml").write_text("name: activity\nwarehouse: {adapter: duckdb, data: data}\n")
    (root / "specs.yaml").write_text(SPECS)
    (root / "data").mkdir()
    with open(root / "data" / "activity.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLES["activity"]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


# -- plain Python ----------------------------------------------------------------------------

def period_of(day: dt.date, grain: str) -> dt.date:
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    months = {"month": 1, "quarter": 3, "year": 12}[grain]
    return dt.date(day.year, (day.month - 1) // months * months + 1, 1)


def shift(period: dt.date, grain: str, n: int) -> dt.date:
    if grain in ("day", "week"):
        return period + dt.timedelta(days=n * (1 if grain == "day" else 7))
    index = period.year * 12 + period.month - 1 + n * {"month": 1, "quarter": 3, "year": 12}[grain]
    return dt.date(index // 12, index % 12 + 1, 1)


def reference(rows, grain, start, end, by=None, window=("cumulative", None), where=None, row_filter=None):
    """{(period, group): distinct contacts in the period's window}, over the keys with rows in
    [start, end). window: ('cumulative', restart grain or None), ('rolling', periods) or
    ('days', n); a window ends on the period's last day, or the day before ``end``."""
    rows = [r for r in rows if r["occurred_at"].date() < end and (row_filter is None or row_filter(r))]
    keys = {(period_of(r["occurred_at"].date(), grain), r[by] if by else None)
            for r in rows if r["occurred_at"].date() >= start}
    result = {}
    for period, group in keys:
        last = min(shift(period, grain, 1), end) - dt.timedelta(days=1)
        kind, size = window
        if kind == "cumulative" and size:  # a period counts with the restart period of its first day:
            restart = period_of(period, size)  # from the first period that starts in that restart period
            first = restart if period_of(restart, grain) == restart else shift(period_of(restart, grain), grain, 1)
        elif kind == "cumulative":
            first = dt.date.min
        elif kind == "rolling":
            first = shift(period, grain, -(size - 1))
        else:
            first = last - dt.timedelta(days=size - 1)
        result[(period, group)] = len({r["contact_id"] for r in rows
                                       if first <= r["occurred_at"].date() <= last and (by is None or r[by] == group)
                                       and (where is None or where(r))})
    return result


def evaluate(project, formula, grain, start, end, by=None, **options):
    got = project.evaluate(formulas=[f"x={formula}"], grain=grain, start=start, end=end, by=[by] if by else [],
                           **options).to_dicts()
    return {(row["period"], row.get(by) if by else None): row["x"] for row in got}


CASES = [  # formula, window, grain, start, end, by
    ("cumulative(count_distinct(activity.contact_id))", ("cumulative", None), "month", dt.date(2024, 2, 10),
     dt.date(2024, 11, 1), None),
    ("cumulative(count_distinct(activity.contact_id))", ("cumulative", None), "month", dt.date(2024, 2, 1),
     dt.date(2024, 11, 1), "channel"),
    ("cumulative(count_distinct(activity.contact_id), 'year')", ("cumulative", "year"), "week", dt.date(2024, 11, 20),
     dt.date(2025, 2, 12), None),
    ("rolling(count_distinct(activity.contact_id), 3)", ("rolling", 3), "month", dt.date(2024, 1, 1),
     dt.date(2024, 12, 1), "channel"),
    ("rolling(count_distinct(activity.contact_id), '30 days')", ("days", 30), "month", dt.date(2024, 1, 1),
     dt.date(2024, 10, 17), None),
    ("rolling(count_distinct(activity.contact_id), '30 days')", ("days", 30), "day", dt.date(2024, 3, 1),
     dt.date(2024, 4, 20), "channel"),
    ("rolling(count_distinct(activity.contact_id), 2)", ("rolling", 2), "quarter", dt.date(2024, 1, 1),
     dt.date(2025, 4, 1), "kind"),
]


@pytest.mark.parametrize("formula, window, grain, start, end, by", CASES)
def test_distinct_counts_over_windows_match_plain_python(project, rows, formula, window, grain, start, end, by):
    want = reference(rows, grain, start, end, by, window)
    assert evaluate(project, formula, grain, start, end, by) == want


def test_a_filtered_distinct_count_and_a_where(project, rows):
    start, end = dt.date(2024, 6, 1), dt.date(2025, 3, 1)
    want = reference(rows, "month", start, end, "channel", ("cumulative", "year"), where=lambda r: r["kind"] == "open")
    assert evaluate(project, "cumulative(count_distinct(activity.contact_id where kind = 'open'), 'year')", "month",
                    start, end, "channel") == want
    want = reference(rows, "month", start, end, None, ("days", 30), row_filter=lambda r: r["channel"] != "social")
    assert evaluate(project, "rolling(count_distinct(activity.contact_id), '30 days')", "month", start, end,
                    where="channel != 'social'") == want


def test_previous_of_a_running_distinct_count_and_new_contacts(project, rows):
    """New contacts of the month = contacts ever active now - contacts ever active last month."""
    start, end = dt.date(2024, 1, 1), dt.date(2024, 10, 1)
    ever = reference(rows, "month", dt.date(2000, 1, 1), end)
    want = {key: ever[key] - ever.get((shift(key[0], "month", -1), None), 0)
            for key in reference(rows, "month", start, end)}
    got = evaluate(project, "cumulative(count_distinct(activity.contact_id)) - "
                            "previous(cumulative(count_distinct(activity.contact_id)))", "month", start, end)
    assert got == want
    first_seen = {}
    for row in rows:
        first_seen.setdefault(row["contact_id"], row["occurred_at"].date())
        first_seen[row["contact_id"]] = min(first_seen[row["contact_id"]], row["occurred_at"].date())
    for (period, _), value in got.items():  # the same as counting first appearances
        assert value == sum(1 for day in first_seen.values() if period_of(day, "month") == period)


def test_what_cannot_be_added_up_is_refused(project):
    for formula, words in (("share(count_distinct(activity.contact_id))", "across dimension values"),
                           ("cumulative(previous(count_distinct(activity.contact_id)))", "across periods")):
        with pytest.raises(KpiEngineError) as error:
            project.compile(formulas=[f"x={formula}"], grain="month", by=["channel"], start="2024-01-01",
                            end="2024-06-01")
        assert "count_distinct cannot be added up" in error.value.message and words in error.value.message


# -- other warehouses equal DuckDB --------------------------------------------------------------

@pytest.fixture(scope="module")
def on_postgres(request, folder):
    url = postgres_warehouse(request.getfixturevalue("pg_server"), "kpi_distinct_windows", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.fixture(scope="module")
def on_sqlite(folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "activity", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.mark.parametrize("warehouse", ["on_postgres", "on_sqlite"])
def test_other_warehouses_equal_duckdb(request, project, warehouse):
    other = request.getfixturevalue(warehouse)
    options = dict(grain="month", start="2024-02-10", end="2024-09-20", by=["channel"])
    kpis = ["contacts_ever_active", "active_contacts_30d", "openers_this_year"]
    assert other.evaluate(kpis, **options).to_dicts() == project.evaluate(kpis, **options).to_dicts()
